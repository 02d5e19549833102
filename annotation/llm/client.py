"""Async client of any OpenAI-compatible chat-completions endpoint, with our own retries.

Input: chat messages (``[{"role": ..., "content": ...}]``) and request options
(``max_tokens``, ``temperature``, ``response_format``, ``extra_body`` such as a llama.cpp
``grammar``, ``seed``). Output: a :class:`Completion` with the reply text, the finish
reason, token counts, latency, total seconds, attempts and cost.

The SDK's own retries are off. We retry HTTP 408, 409, 429 and ≥ 500, timeouts and
connection errors with exponential backoff plus jitter, honour ``Retry-After`` (capped by
``max_backoff_s``), and never spend more than ``total_retry_s`` on one request: when the
next wait would cross that cap we stop at once with :class:`LLMRequestError`. Other 4xx
statuses fail at once. Concurrency is bounded by a semaphore; a request holds its slot
through its retries, and its clock starts once it holds the slot. One client serves one
event loop.

The server is not trusted (``wire``): ``timeout_s`` bounds each attempt end to end, connect
to last byte, so a server that drips bytes is cut off; no response body is read past
``max_response_bytes``; a 200 whose body is not a valid chat completion (not JSON, no
``choices``, bad token counts) raises :class:`LLMResponseError` at once, without a retry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast

import openai

from llmca_data.config import ConfigError, JsonConfig

from .config import TransportConfig
from .wire import (
    FIX_BASE_URL,
    IDENTITY_HEADERS,
    ChatBody,
    LLMRequestError,
    LLMResponseError,
    parse_chat_body,
    response_cap,
)

__all__ = [
    "DEFAULT_API_KEY",
    "RETRYABLE_STATUSES",
    "ClientConfig",
    "Completion",
    "LLMClient",
    "LLMRequestError",
    "LLMResponseError",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""4xx statuses worth retrying (every status ≥ 500 is retried too)."""

DEFAULT_API_KEY = "not-needed"
"""The key sent when the key variable is unset (local servers ignore it)."""


@dataclass(frozen=True)
class ClientConfig(JsonConfig):
    """Where and how to send requests. Holds no secret: the key is read from the environment."""

    base_url: str
    """OpenAI-compatible base URL, ending in ``/v1`` (e.g. ``http://127.0.0.1:8080/v1``)."""
    model: str
    """Model id sent with every request (as listed by ``GET {base_url}/models``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key, read when the client is created."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """Timeouts, retries, concurrency and prices."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_url:
            raise ConfigError("ClientConfig.base_url is empty; pass --base-url, e.g. http://127.0.0.1:8080/v1")
        if not self.model:
            raise ConfigError("ClientConfig.model is empty; pass --model (see GET {base_url}/models)")


@dataclass(frozen=True)
class Completion:
    """One successful chat completion."""

    text: str
    """The reply content ("" when the server sent none)."""
    tokens_in: int
    """Prompt tokens reported by the server (0 when it reports no usage)."""
    tokens_out: int
    """Completion tokens reported by the server (0 when it reports no usage)."""
    latency_s: float
    """Seconds of the successful attempt."""
    seconds: float
    """Seconds of the whole request, retries and waits included."""
    attempts: int
    """HTTP requests sent (1 when the first succeeded)."""
    finish_reason: str
    """``stop``, ``length`` (cut at ``max_tokens``; the caller decides), or what the server said."""
    cost_usd: float
    """Estimated cost from the configured prices."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After-Ms`` or ``Retry-After`` (seconds or HTTP date).

    Args:
        headers: A mapping with case-insensitive ``get`` (e.g. ``httpx.Headers``) or None.

    Returns:
        Non-negative seconds, or None when absent or unparsable.
    """
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - time.time())
    return max(0.0, value) if math.isfinite(value) else None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
    elif isinstance(body, str | dict) and body:
        text = str(body)
    else:
        text = exc.message
    return text if len(text) <= 500 else text[:500] + "…"


class LLMClient:
    """Sends chat completions to one endpoint with bounded concurrency and our retries.

    Args:
        config: Endpoint, model, timeouts, retry policy, concurrency and prices.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        api_key = os.environ.get(config.api_key_env) or DEFAULT_API_KEY
        self._where = f"LLM server at {config.base_url}"
        cap = response_cap(config.transport.max_response_bytes, self._where)
        http = openai.DefaultAsyncHttpxClient(event_hooks={"response": [cap]})
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url, api_key=api_key, max_retries=0, timeout=config.transport.timeout_s,
            default_headers=IDENTITY_HEADERS, http_client=http,
        )  # fmt: skip
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.config.transport.concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        t = self.config.transport
        base = retry_after if retry_after is not None else t.backoff_s * 2.0**retry
        base = min(t.max_backoff_s, base)
        return base + self._rng.uniform(0.0, 0.1 * min(t.backoff_s, t.max_backoff_s))

    def _fail_fast(self, exc: openai.APIStatusError) -> LLMRequestError:
        cfg = self.config
        code = exc.status_code
        if code in (401, 403):
            fix = (
                f"check that ${cfg.api_key_env} (OPENAI_API_KEY by default) holds a key that the server "
                f"at {cfg.base_url} accepts"
            )
        elif code == 404:
            fix = f"check --model {cfg.model!r} (GET {cfg.base_url}/models lists the served ids) and --base-url"
        else:
            fix = (
                "check the server log and the response-format mode (e.g. llama.cpp answers json_schema with "
                "an error; use json_object or grammar)"
            )
        return LLMRequestError(
            f"LLM server at {cfg.base_url} rejected the request: HTTP {code}: {_server_message(exc)}; {fix}"
        )

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        response_format: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Send one chat completion, retrying transient failures.

        Args:
            messages: Chat messages, ``[{"role": "system"|"user"|..., "content": str}]``.
            max_tokens: Cap on completion tokens.
            temperature: Sampling temperature (0 for deterministic critics).
            response_format: Sent as ``response_format`` when given (``json_object``, ``json_schema``).
            extra_body: Extra top-level JSON fields (e.g. ``{"grammar": GBNF}`` for llama.cpp).
            seed: Sampling seed, sent when given.

        Returns:
            The completion; ``finish_reason == "length"`` is returned as is.

        Raises:
            LLMRequestError: A non-retryable status, or retries exhausted or out of time.
        """
        cfg = self.config
        t = cfg.transport
        async with self._slot():
            start = time.monotonic()
            attempt = 0
            while True:
                attempt += 1
                elapsed = time.monotonic() - start
                timeout = t.timeout_s if attempt == 1 else max(0.001, min(t.timeout_s, t.total_retry_s - elapsed))
                t0 = time.monotonic()
                retry_after: float | None = None
                create = self._client.chat.completions.with_raw_response.create(
                    model=cfg.model,
                    messages=cast(Any, messages),
                    max_tokens=max_tokens,
                    temperature=temperature,
                    response_format=cast(Any, response_format) if response_format is not None else openai.omit,
                    seed=seed if seed is not None else openai.omit,
                    extra_body=extra_body,
                    timeout=timeout,
                )
                try:
                    # wait_for bounds the whole attempt (connect to last byte); httpx's timeout only bounds
                    # each read, which a server sending one byte at a time never trips.
                    raw = await asyncio.wait_for(create, timeout)
                except openai.APIStatusError as exc:
                    if exc.status_code not in RETRYABLE_STATUSES and exc.status_code < 500:
                        raise self._fail_fast(exc) from exc
                    last_error = f"HTTP {exc.status_code}: {_server_message(exc)}"
                    retry_after = parse_retry_after(exc.response.headers)
                    cause: Exception = exc
                except (asyncio.TimeoutError, openai.APITimeoutError) as exc:
                    last_error = f"timed out after {timeout:.3g} s (the limit of one attempt, connect to last byte)"
                    cause = exc
                except openai.APIConnectionError as exc:
                    detail = f" ({exc.__cause__!r})" if exc.__cause__ is not None else ""
                    last_error = f"connection error: {exc.message}{detail}"
                    cause = exc
                except openai.OpenAIError as exc:
                    unusable = f"{self._where} sent a response the client cannot use: {exc}; {FIX_BASE_URL}"
                    raise LLMResponseError(unusable) from exc
                else:
                    http = raw.http_response
                    body = parse_chat_body(http.content, http.headers.get("content-type", ""), self._where)
                    latency = time.monotonic() - t0
                    return self._completion(body, latency, time.monotonic() - start, attempt)

                where = f"LLM request to {cfg.base_url} (model {cfg.model!r})"
                fix = (
                    "check --base-url and that the server is up (see its log), or raise --timeout / lower --concurrency"
                )
                if attempt > t.max_retries:
                    raise LLMRequestError(
                        f"{where} failed after {attempt} attempts; last error: {last_error}; {fix}"
                    ) from cause
                delay = self._backoff(attempt - 1, retry_after)
                spent = time.monotonic() - start
                if spent + delay >= t.total_retry_s:
                    raise LLMRequestError(
                        f"{where} gave up after {attempt} attempts and {spent:.1f} s (total_retry_s="
                        f"{t.total_retry_s:g}; next wait {delay:.1f} s); last error: {last_error}; {fix}"
                    ) from cause
                logger.warning(
                    "%s failed (%s); retry %d/%d in %.2f s",
                    where,
                    last_error,
                    attempt,
                    t.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def _completion(self, body: ChatBody, latency: float, seconds: float, attempts: int) -> Completion:
        return Completion(
            text=body.text,
            tokens_in=body.tokens_in,
            tokens_out=body.tokens_out,
            latency_s=latency,
            seconds=seconds,
            attempts=attempts,
            finish_reason=body.finish_reason,
            cost_usd=self.config.transport.cost_usd(body.tokens_in, body.tokens_out),
        )

    async def list_models(self, timeout_s: float | None = None) -> list[str]:
        """The model ids the server lists (one attempt; a readiness check polls it).

        Args:
            timeout_s: Timeout of this call; defaults to ``min(config.transport.timeout_s, 10)``.

        Raises:
            LLMRequestError: The server is unreachable or answered with an error.
        """
        cfg = self.config
        timeout = timeout_s if timeout_s is not None else min(cfg.transport.timeout_s, 10.0)
        try:
            page = await asyncio.wait_for(self._client.models.list(timeout=timeout), timeout)
        except openai.APIStatusError as exc:
            raise self._fail_fast(exc) from exc
        except (openai.APIError, asyncio.TimeoutError) as exc:
            said = exc.message if isinstance(exc, openai.APIError) else f"timed out after {timeout:.3g} s"
            raise LLMRequestError(
                f"LLM server at {cfg.base_url} did not answer GET /models: {said}; "
                "check --base-url and that the server is up (see its log)"
            ) from exc
        return [model.id for model in page.data]
