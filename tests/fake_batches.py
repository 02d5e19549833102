"""A real HTTP fake of the OpenAI Files and Batches endpoints, for the batch transport's tests.

A batch advances one step per poll (``GET /v1/batches/{id}``), never by time: ``validating`` →
``in_progress`` → the outcome queued for it (``push``; ``completed`` when none is queued):

- ``completed``: every line answered (``answer(body)`` gives the reply text) in the output file;
- ``partial``: the lines at ``fail_lines`` go to the error file with HTTP 400, the rest answered;
- ``expired`` / ``cancelled``: only the first ``done`` lines ran; the rest are in the error file
  with code ``batch_expired`` / ``batch_cancelled``;
- ``failed``: the input file is rejected (``errors``), nothing ran;
- ``hold``: stays ``in_progress`` until ``release()`` (a driver killed while it waits).

``poll_faults`` answers the next polls with those HTTP statuses (``Retry-After: 0``). Everything
received is recorded: uploads, batch creations (with metadata), polls, lines answered.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from fake_openai import completion_object


@dataclass(frozen=True)
class Outcome:
    kind: str = "completed"
    done: int = 0
    fail_lines: tuple[int, ...] = ()


class FakeBatchAPI:
    """The fake server; ``with FakeBatchAPI(answer) as api:`` serves on 127.0.0.1 (``api.base_url``)."""

    def __init__(self, answer: Callable[[dict[str, Any]], str]) -> None:
        self.answer = answer
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.outcomes: list[Outcome] = []
        self.poll_faults: list[int] = []
        self.uploads = self.creates = self.polls = 0
        self.answered: list[str] = []
        """custom_id of every line that ran (a request paid for), in order."""
        self.held = True
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._plans: dict[str, Outcome] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    def __enter__(self) -> FakeBatchAPI:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def push(self, *outcomes: Outcome) -> None:
        with self._lock:
            self.outcomes += outcomes

    def release(self) -> None:
        with self._lock:
            self.held = False

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.creates += 1
            batch_id = self._new_id("batch")
            self._plans[batch_id] = self.outcomes.pop(0) if self.outcomes else Outcome()
            batch = {"id": batch_id, "object": "batch", "status": "validating", "endpoint": body["endpoint"],
                     "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                     "metadata": body.get("metadata") or {}, "output_file_id": None, "error_file_id": None,
                     "errors": None, "request_counts": {"total": 0, "completed": 0, "failed": 0}}  # fmt: skip
            self.batches[batch_id] = batch
            return batch

    def _poll(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.polls += 1
            if self.poll_faults:
                return self.poll_faults.pop(0), {"error": {"message": "try again"}}
            batch = self.batches[batch_id]
            plan = self._plans[batch_id]
            if batch["status"] == "validating":
                batch["status"] = "in_progress"
            elif batch["status"] == "in_progress" and not (plan.kind == "hold" and self.held):
                self._finish(batch, plan)
            return 200, batch

    def _finish(self, batch: dict[str, Any], plan: Outcome) -> None:
        if plan.kind == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"data": [{"code": "invalid_request", "message": "line 1: model not found", "line": 1}]}
            return
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].splitlines()]
        out, err = [], []
        for k, line in enumerate(lines):
            rid = line["custom_id"]
            if plan.kind in ("expired", "cancelled") and k >= plan.done:
                code = f"batch_{plan.kind}"
                err.append({"id": f"r{k}", "custom_id": rid, "response": None,
                            "error": {"code": code, "message": "not run before the batch ended"}})  # fmt: skip
            elif k in plan.fail_lines:
                self.answered.append(rid)
                body = {"error": {"message": "bad request line", "type": "invalid_request_error"}}
                err.append({"id": f"r{k}", "custom_id": rid, "response": {"status_code": 400, "body": body},
                            "error": None})  # fmt: skip
            else:
                self.answered.append(rid)
                body = completion_object(self.answer(line["body"]), model=line["body"]["model"])
                out.append({"id": f"r{k}", "custom_id": rid, "response": {"status_code": 200, "body": body},
                            "error": None})  # fmt: skip
        batch["status"] = "completed" if plan.kind in ("completed", "partial", "hold") else plan.kind
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        for field, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = self._new_id("file")
                self.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                batch[field] = file_id

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        with self._lock:
            newest_first = list(reversed(self.batches.values()))
        after = query.get("after", [""])[0]
        if after:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(query.get("limit", ["20"])[0])
        return {"object": "list", "data": newest_first[:limit], "has_more": len(newest_first) > limit}

    def _upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                  for part in message.iter_parts()}  # fmt: skip
        assert fields.get("purpose") == b"batch", fields.keys()
        with self._lock:
            self.uploads += 1
            file_id = self._new_id("file")
            self.files[file_id] = fields["file"]
        return {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(fields["file"])}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: dict[str, Any] | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429 or code >= 500:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/files":
                    self._send(200, api._upload(self.headers["Content-Type"], raw))
                elif self.path == "/v1/batches":
                    self._send(200, api._create(json.loads(raw)))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.split("/")
                if url.path == "/v1/batches":
                    self._send(200, api._list(parse_qs(url.query)))
                elif url.path.startswith("/v1/batches/") and parts[3] in api.batches:
                    self._send(*api._poll(parts[3]))
                elif url.path.startswith("/v1/files/") and url.path.endswith("/content") and parts[3] in api.files:
                    self._send(200, api.files[parts[3]])
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

        return Handler


if __name__ == "__main__":  # `python tests/fake_batches.py`: serve both fakes (benchmarks/scale.py) until stdin closes
    import sys

    from fake_openai import FakeOpenAI, responder
    from llm_replies import valid_reply_for

    with FakeBatchAPI(valid_reply_for) as batch_api, FakeOpenAI(responder(valid_reply_for)) as chat:
        print(batch_api.base_url, chat.base_url, flush=True)
        sys.stdin.read()
        print(batch_api.polls, flush=True)
