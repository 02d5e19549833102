"""What comes off the wire: a size cap on every HTTP response, and a validator of chat-completion bodies.

Input: the ``httpx2`` responses of the OpenAI SDK's HTTP client (through :func:`response_cap`,
a response event hook) and the raw body of a successful ``POST /chat/completions``. Output:
responses whose body can never grow past ``max_bytes`` while it is read, and a
:class:`ChatBody` (reply text, finish reason, token counts) from a body that is checked field
by field.

A server the client cannot trust is the threat model: any body that is not a chat completion
raises :class:`LLMResponseError` (never ``KeyError``, ``ValueError`` or ``TypeError``), so the
caller fails that one request. The cap refuses a body as soon as its declared
``Content-Length`` or the bytes read so far pass it, and closes the connection. Compressed
bodies could expand past any cap, so the client asks for ``Accept-Encoding: identity``
(:data:`IDENTITY_HEADERS`) and the cap refuses a body with another ``Content-Encoding``.

Token counts must be whole numbers in ``0..MAX_USAGE_TOKENS``; anything else (``"abc"``, NaN,
``1e308``, ``10**30``, a negative count) makes the response malformed rather than a guess,
because the counts drive the recorded cost and the ``--max-cost`` budget. A missing ``usage``
(or a missing or null count) is 0, as many local servers send none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from llmca_data.errors import LlmcaError

MAX_USAGE_TOKENS = 100_000_000
"""Largest token count accepted in ``usage`` (far above any context window)."""
IDENTITY_HEADERS = {"Accept-Encoding": "identity"}
"""Sent with every request: an uncompressed body is one the size cap measures exactly."""
EXCERPT_CHARS = 200
"""How much of a malformed body an error message quotes."""
FIX_BASE_URL = "check that --base-url points at an OpenAI-compatible /v1 endpoint (see the server's log)"


class LLMRequestError(LlmcaError, RuntimeError):
    """A request failed: a non-retryable status, a malformed response, or retries exhausted or out of time."""


class LLMResponseError(LLMRequestError):
    """The server answered, but with a response that cannot be used (too large, compressed, not a
    chat completion). Not retried: the same server would answer the same way."""


def too_large(where: str, max_bytes: int, detail: str) -> LLMResponseError:
    """The error of a body over the cap (``detail`` says how it was noticed)."""
    return LLMResponseError(
        f"{where} sent a reply larger than {max_bytes} bytes ({detail}); a critic's reply is a few kB, "
        f"so {FIX_BASE_URL}, or raise TransportConfig.max_response_bytes if such replies are expected"
    )


class _CappedStream(httpx2.AsyncByteStream):
    """Passes a response body through, raising once more than ``max_bytes`` have been read."""

    def __init__(self, inner: httpx2.AsyncByteStream, max_bytes: int, where: str) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._where = where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise too_large(self._where, self._max_bytes, f"stopped reading after {seen} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def response_cap(max_bytes: int, where: str) -> Callable[[httpx2.Response], Awaitable[None]]:
    """An ``httpx2`` response event hook that caps the body of every response at ``max_bytes``.

    The hook runs before the body is read: it refuses a compressed body or a declared
    ``Content-Length`` over the cap at once, and otherwise wraps the body stream so reading
    stops as soon as the cap is passed (the client then closes the connection).

    Args:
        max_bytes: The most body bytes read from one response.
        where: Names the server in error messages (e.g. ``LLM server at http://...``).
    """

    async def hook(response: httpx2.Response) -> None:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise LLMResponseError(
                f"{where} sent a body with Content-Encoding {encoding!r} although the client asked for "
                f"'identity' (a compressed body can expand past the {max_bytes}-byte cap); {FIX_BASE_URL}, "
                "or put a proxy that honours Accept-Encoding in front of it"
            )
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large(where, max_bytes, f"Content-Length {declared}; nothing read")
        if not isinstance(response.stream, httpx2.AsyncByteStream):
            raise TypeError("response_cap is an AsyncClient hook; the response has a sync stream")
        response.stream = _CappedStream(response.stream, max_bytes, where)

    return hook


@dataclass(frozen=True)
class ChatBody:
    """The parts of a chat completion the critic uses."""

    text: str
    """The reply content ("" when the server sent null)."""
    finish_reason: str
    tokens_in: int
    tokens_out: int


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return repr(text[:EXCERPT_CHARS] + ("…" if len(raw) > EXCERPT_CHARS else ""))


def _tokens(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )
    if not whole or not 0 <= value <= MAX_USAGE_TOKENS:  # float.is_integer() is False for NaN and ±inf
        shown = json.dumps(value) if isinstance(value, str) else repr(value)
        raise ValueError(f"usage.{key} must be a whole number in 0..{MAX_USAGE_TOKENS}, got {shown[:40]}")
    return int(value)


def _fields(obj: Any) -> ChatBody:
    """The checked fields of a decoded body; ``ValueError`` names the first bad one."""
    if not isinstance(obj, dict):
        raise ValueError(f"the body is {_kind(obj)}, not a JSON object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        error = obj.get("error")
        said = f" (it says: {str(error)[:EXCERPT_CHARS]!r})" if error else ""
        got = "missing" if "choices" not in obj else "an empty list" if choices == [] else _kind(choices)
        raise ValueError(f"'choices' must be a non-empty list, got {got}{said}")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError(f"choices[0] must be an object, got {_kind(choice)}")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError(f"choices[0].message must be an object, got {_kind(message)}")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"choices[0].message.content must be a string, got {_kind(text)}")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise ValueError(f"choices[0].finish_reason must be a string, got {_kind(finish)}")
    usage = obj.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise ValueError(f"'usage' must be an object, got {_kind(usage)}")
    usage = usage or {}
    return ChatBody(text or "", finish or "", _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"))


def parse_chat_body(raw: bytes, content_type: str, where: str) -> ChatBody:
    """Validate the body of a successful chat-completions response.

    Args:
        raw: The body as read (already capped in size).
        content_type: The response's ``Content-Type`` (quoted when the body is not JSON).
        where: Names the server in error messages.

    Raises:
        LLMResponseError: The body is not JSON, not a chat completion, or has bad token counts.
    """
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        problem = f"the body is not JSON (Content-Type {content_type or 'missing'!r}, {len(raw)} bytes)"
    else:
        try:
            body = _fields(obj)
        except ValueError as exc:
            problem = str(exc)
        else:
            return body
    raise LLMResponseError(
        f"{where} answered HTTP 200 with a malformed chat completion: {problem}; {FIX_BASE_URL}. "
        f"The body starts {_excerpt(raw)}"
    )
