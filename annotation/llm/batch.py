"""The OpenAI Batch API as the LLM critic's transport (``--transport batch``).

Input: the critic's planned requests. Output: their replies in the reply cache (at batch prices)
and, for each request the API did not answer, the reason; then the critic's usual results.

Rounds (``run_rounds``). The critic's own exchange logic (``LLMCritic._run_all``: cache lookup,
validation, the corrective retry) runs with a ``BatchRunner`` in place of HTTP: a request the
cache cannot answer is *deferred*, not sent. A pass's deferred requests go out as batches, and
the next pass finds their replies in the cache, so an invalid reply's corrective retry goes out
as a further batch round, never as an interactive call. Passes repeat until nothing is deferred
(at most ``MAX_ROUNDS`` batch rounds); the last pass's results stand.

One round: the deferred requests, sorted by key, are written as JSONL (``custom_id`` = the
reply-cache key) and split into parts of at most ``batch_max_requests`` lines and
``batch_max_bytes`` bytes. Per part: upload (purpose ``batch``); record the input file id in the
cache's ``batches`` table *before* creating the batch (24 h window, metadata naming the part).
Every part is submitted before any is polled, so the batches run side by side; then each is
polled with growing waits (429/5xx/timeouts while polling are waited out, ``Retry-After``
honoured). A rerun after a crash finds the part's record, looks its batch up by metadata and input
file and resumes polling, so no request is paid twice. At a terminal status the output and error
files are read: a 200 line passes the interactive path's validation (``wire.parse_chat_body``) into
the cache; a line with an error fails its episode with the reason (not cached: a later run asks
again); a line an expired or cancelled batch never ran is asked again next round; a failed batch
(a rejected input file) fails all its requests with the API's reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx2

from llmca_data import __version__

from .cache import BatchRecord, CachedReply, ReplyCache
from .client import DEFAULT_API_KEY, RETRYABLE_STATUSES, parse_retry_after
from .config import LLMConfig
from .prompt import estimate_tokens
from .wire import IDENTITY_HEADERS, LLMRequestError, LLMResponseError, parse_chat_body

if TYPE_CHECKING:
    from .critic import LLMCritic, _Request

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
RETRIED_LINE_ERRORS = ("batch_expired", "batch_cancelled")
"""Line error codes of requests the batch never ran: asked again in the next round."""
MAX_ROUNDS = 4
MAX_POLL_S = 600.0
LIST_PAGES = 50
"""Most pages of ``GET /batches`` searched for a resumed part's batch (100 batches each)."""
RESULTS_MAX_BYTES = 2 * 200 * 2**20
"""Most bytes read from one output or error file (a full part's replies fit)."""


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch input file."""

    key: str
    prompt_version: str
    body: dict[str, Any]

    def jsonl(self) -> bytes:
        line = {"custom_id": self.key, "method": "POST", "url": ENDPOINT, "body": self.body}
        return json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class BatchDeferred(LLMRequestError):
    """The request waits for the next batch round (never an episode's final error)."""


def split_parts(lines: list[BatchLine], max_requests: int, max_bytes: int) -> list[list[BatchLine]]:
    """``lines`` in order, cut into parts of at most ``max_requests`` lines and ``max_bytes`` bytes."""
    parts: list[list[BatchLine]] = []
    size = 0
    for line in lines:
        n = len(line.jsonl())
        if not parts or len(parts[-1]) >= max_requests or size + n > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(line)
        size += n
    return parts


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class BatchRunner:
    """Sends deferred requests as Batch API batches and stores what comes back (module docstring)."""

    def __init__(self, config: LLMConfig, model: str, cache: ReplyCache, api_key_env: str = "OPENAI_API_KEY") -> None:
        self.config, self.model, self.cache = config, model, cache
        self.transport = config.transport
        self.deferred: dict[str, BatchLine] = {}
        self.errors: dict[str, str] = {}
        """Request key → why the API did not answer it (this run only; a rerun asks again)."""
        self.spent_usd = 0.0
        self.where = f"Batch API at {config.base_url}"
        key = os.environ.get(api_key_env) or DEFAULT_API_KEY
        self._http = httpx2.Client(
            base_url=config.base_url, timeout=self.transport.timeout_s,
            headers={"Authorization": f"Bearer {key}", **IDENTITY_HEADERS},
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def defer(self, key: str, request: _Request, messages: list[dict[str, str]]) -> LLMRequestError:
        """Queue ``messages`` for the next round; the error ``_ask`` raises meanwhile (or the final reason)."""
        if key in self.errors:
            return LLMRequestError(self.errors[key])
        cfg = self.config
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": request.max_tokens,
                                "temperature": cfg.temperature, "seed": cfg.seed}  # fmt: skip
        if "response_format" in request.options:
            body["response_format"] = request.options["response_format"]
        body.update(request.options.get("extra_body") or {})  # the SDK merges extra_body into the body too
        self.deferred[key] = BatchLine(key, request.prompt_version, body)
        return BatchDeferred(f"request {key[:12]} waits for a batch round")

    def submit_round(self) -> None:
        """Send every deferred request (one batch per part), wait for the batches, store the results."""
        lines = sorted(self.deferred.values(), key=lambda line: line.key)
        self.deferred = {}
        t = self.transport
        fits = []
        for line in lines:
            if len(line.jsonl()) > t.batch_max_bytes:
                self.errors[line.key] = (f"the request is larger than a batch input file may be "
                                         f"({t.batch_max_bytes} bytes): lower --max-window")  # fmt: skip
            else:
                fits.append(line)
        estimate = sum(t.cost_usd(estimate_tokens(json.dumps(line.body["messages"])), line.body["max_tokens"])
                       for line in fits)  # fmt: skip
        if self.config.max_cost and self.spent_usd + estimate > self.config.max_cost:
            reason = (f"not sent: --max-cost {self.config.max_cost} USD would be exceeded (this round: "
                      f"{estimate:.4f} USD at batch prices); rerun with a larger budget")  # fmt: skip
            for line in fits:
                self.errors[line.key] = reason
            return
        submitted = []
        for part in split_parts(fits, t.batch_max_requests, t.batch_max_bytes):  # all parts run at once
            try:
                submitted.append((part, *self._submit(part)))
            except LLMRequestError as exc:
                self._fail(part, exc)
        for part, record, batch in submitted:
            try:
                self._consume(self._poll(batch), {line.key: line for line in part})
                self.cache.save_batch_record(replace(record, consumed=True))
            except LLMRequestError as exc:
                self._fail(part, exc)

    def _fail(self, part: list[BatchLine], exc: LLMRequestError) -> None:
        for line in part:  # the part's record stays: a rerun resumes its batch without paying again
            self.errors[line.key] = f"{exc} (rerun to resume the batch; nothing is sent twice)"

    def _submit(self, lines: list[BatchLine]) -> tuple[BatchRecord, dict[str, Any]]:
        """The part's batch: found again (a resumed part) or uploaded and created."""
        data = b"".join(line.jsonl() for line in lines)
        part = hashlib.sha256(data).hexdigest()
        record = self.cache.batch_record(part)
        batch = None
        if record is not None and not record.consumed:
            batch = self._find(record)
            log.info("resuming part %s: batch %s", part[:12], batch["id"] if batch else "not created yet")
        else:
            attempt = record.attempt + 1 if record is not None else 0
            record = BatchRecord(part, attempt, self._upload(data, part), "", False)
            self.cache.save_batch_record(record)  # before the batch exists: a crash here costs nothing
        if batch is None:
            batch = self._create(record)
            record = replace(record, batch_id=str(batch["id"]))
            self.cache.save_batch_record(record)
        return record, batch

    def _metadata(self, record: BatchRecord) -> dict[str, str]:
        return {"llmca_part": record.part, "llmca_attempt": str(record.attempt), "llmca_version": __version__}

    def _upload(self, data: bytes, part: str) -> str:
        files = {"file": (f"llmca-{part[:16]}.jsonl", data, "application/jsonl")}
        return str(self._json("POST", "/files", files=files, data={"purpose": "batch"})["id"])

    def _create(self, record: BatchRecord) -> dict[str, Any]:
        body = {"input_file_id": record.input_file_id, "endpoint": ENDPOINT, "completion_window": WINDOW,
                "metadata": self._metadata(record)}  # fmt: skip
        try:
            return self._json("POST", "/batches", json=body, retry=False)
        except BatchRetryable:  # it may exist although the answer was lost: look before creating another
            found = self._find(record)
            return found if found is not None else self._json("POST", "/batches", json=body)

    def _find(self, record: BatchRecord) -> dict[str, Any] | None:
        """The batch of this record, by its id when known, else by metadata and input file."""
        if record.batch_id:
            return self._json("GET", f"/batches/{record.batch_id}")
        wanted, after = self._metadata(record), ""
        for _ in range(LIST_PAGES):
            page = self._json("GET", "/batches", params={"limit": 100, **({"after": after} if after else {})})
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in data:
                meta = _obj(batch.get("metadata"))
                same = all(meta.get(k) == v for k, v in wanted.items() if k != "llmca_version")
                if same and batch.get("input_file_id") == record.input_file_id:
                    return batch
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1].get("id", ""))
        return None

    def _poll(self, batch: dict[str, Any]) -> dict[str, Any]:
        wait = self.transport.batch_poll_s
        while batch.get("status") not in TERMINAL:
            counts = _obj(batch.get("request_counts"))
            log.info("batch %s: %s, %s of %s requests done", batch.get("id"), batch.get("status"),
                     counts.get("completed", "?"), counts.get("total", "?"))  # fmt: skip
            time.sleep(wait)
            wait = min(MAX_POLL_S, max(wait * 1.5, 1e-3))
            batch = self._json("GET", f"/batches/{batch['id']}")
        return batch

    def _consume(self, batch: dict[str, Any], lines: dict[str, BatchLine]) -> None:
        status, batch_id = batch["status"], batch.get("id")
        if status == "failed":
            reasons = [str(_obj(e).get("message"))[:200] for e in _obj(batch.get("errors")).get("data") or []]
            for key in lines:
                self.errors[key] = f"the Batch API failed batch {batch_id}: {'; '.join(reasons[:3]) or 'no reason'}"
            return
        seen: set[str] = set()
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                for row in self._rows(str(file_id)):
                    self._store(row, lines, seen)
        missing = [k for k in lines if k not in seen]
        if status == "completed":
            for key in missing:
                self.errors[key] = f"batch {batch_id} completed without a result for this request"
        elif missing:
            log.info("batch %s %s with %d requests not run: asked again next round", batch_id, status, len(missing))

    def _store(self, row: dict[str, Any], lines: dict[str, BatchLine], seen: set[str]) -> None:
        key = row.get("custom_id")
        if not isinstance(key, str) or key not in lines or key in seen:
            log.warning("%s returned a result line for an unknown or repeated custom_id %r", self.where, key)
            return
        response, error = _obj(row.get("response")), _obj(row.get("error"))
        code = response.get("status_code")
        if not error and code == 200:
            seen.add(key)
            try:
                body = parse_chat_body(json.dumps(response.get("body")).encode(), "application/json", self.where)
            except LLMResponseError as exc:
                self.errors[key] = str(exc)
                return
            cost = self.transport.cost_usd(body.tokens_in, body.tokens_out)
            self.spent_usd += cost
            reply = CachedReply(body.text, body.tokens_in, body.tokens_out, 0.0, cost, body.finish_reason)
            self.cache.put(key, self.model, lines[key].prompt_version, reply)
            return
        if error.get("code") in RETRIED_LINE_ERRORS:
            return  # never ran: the next round asks again
        seen.add(key)
        message = error.get("message") or _obj(_obj(response.get("body")).get("error")).get("message") or "no message"
        said = f"HTTP {code}" if code else f"error {error.get('code') or '?'}"
        self.errors[key] = f"the Batch API answered this request with {said}: {str(message)[:300]}"

    def _rows(self, file_id: str) -> list[dict[str, Any]]:
        raw = self._read("GET", f"/files/{file_id}/content", cap=RESULTS_MAX_BYTES)
        rows = []
        for n, text in enumerate(raw.splitlines(), 1):
            try:
                rows.append(_obj(json.loads(text)))
            except (ValueError, RecursionError):
                log.warning("%s: line %d of file %s is not JSON; its request counts as unanswered", self.where, n,
                            file_id)  # fmt: skip
        return rows

    def _json(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> dict[str, Any]:
        raw = self._read(method, path, retry=retry, **kwargs)
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict) or (path.startswith("/batches") and method == "POST" and "id" not in obj):
            raise LLMRequestError(f"{self.where} answered {method} {path} with {raw[:120]!r}, not the expected "
                                  "JSON object; check --base-url (an endpoint with the Batch API)")  # fmt: skip
        return obj

    def _read(self, method: str, path: str, *, retry: bool = True, cap: int = 0, **kwargs: Any) -> bytes:
        """One API call's body, retried on 408/409/429/5xx/timeouts as the interactive client does."""
        t, started, attempt = self.transport, time.monotonic(), 0
        cap = cap or t.max_response_bytes
        while True:
            retry_after = None
            try:
                with self._http.stream(method, path, **kwargs) as response:
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > cap:
                            raise LLMResponseError(f"{self.where}: {method} {path} sent more than {cap} bytes")
                    code = response.status_code
                    if code < 400:
                        return bytes(body)
                    problem, retry_after = f"HTTP {code}: {bytes(body)[:200]!r}", parse_retry_after(response.headers)
                    if code not in RETRYABLE_STATUSES and code < 500:
                        raise LLMRequestError(f"{self.where} rejected {method} {path}: {problem}; check --base-url "
                                              "and that the key in $OPENAI_API_KEY may use the Batch API")  # fmt: skip
            except httpx2.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            wait = min(t.max_backoff_s, retry_after if retry_after is not None else t.backoff_s * 2.0**attempt)
            if not retry or attempt >= t.max_retries or time.monotonic() - started + wait > t.total_retry_s:
                error = BatchRetryable if not retry else LLMRequestError
                raise error(f"{self.where}: {method} {path} failed after {attempt + 1} attempts: {problem}")
            time.sleep(wait)
            attempt += 1


class BatchRetryable(LLMRequestError):
    """A call made once (``retry=False``) failed in a way worth retrying."""


def run_rounds(critic: LLMCritic, requests: list[_Request]) -> None:
    """Run the critic's passes over ``requests``, with a batch round between passes (module docstring)."""
    if critic.batch_runner is None:
        critic.batch_runner = BatchRunner(critic.config, critic.model, critic.cache)
    runner = critic.batch_runner
    for round_ in range(MAX_ROUNDS + 1):
        runner.deferred.clear()
        asyncio.run(critic._run_all(requests))
        if not runner.deferred:
            return
        if round_ < MAX_ROUNDS:
            runner.submit_round()
    for key in runner.deferred:
        runner.errors[key] = f"no reply after {MAX_ROUNDS} batch rounds (batches expired or were cancelled)"
    runner.deferred.clear()
    asyncio.run(critic._run_all(requests))
