"""A real HTTP server speaking the OpenAI chat-completions protocol, with fault injection.

Input: scripted behaviours (a reply, an HTTP status, a hang, a dropped connection, or a
callable that builds the reply from the request), and hostile ones: raw body bytes with any
status, content type and headers; a drip of one body byte per interval; a huge body streamed
in chunks. Output: answers to ``POST /v1/chat/completions`` and ``GET /v1/models`` on
127.0.0.1, a record of every chat request (parsed JSON body, headers, arrival time) so tests
can count requests exactly, and a record of every answer's transfer (body bytes sent, whether
the client closed the connection first).

Each chat request consumes the next scripted behaviour; when the script is empty the
default behaviour answers. The server runs in a daemon thread; :meth:`FakeOpenAI.stop`
wakes hanging handlers, closes open connections and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_HANG_S = 30.0
"""Upper bound of any hang, so a forgotten server never blocks a test run for long."""


@dataclass(frozen=True)
class Reply:
    """Answer 200 with a chat completion whose content is ``text``."""

    text: str
    finish_reason: str = "stop"
    tokens_in: int | None = None
    tokens_out: int | None = None
    include_usage: bool = True
    delay_s: float = 0.0


@dataclass(frozen=True)
class Status:
    """Answer with HTTP ``code``, an OpenAI-style error body and an optional Retry-After."""

    code: int
    body: str | dict[str, Any] | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Send nothing for ``seconds`` (bounded by :data:`MAX_HANG_S`), then close the connection."""

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending any response."""


@dataclass(frozen=True)
class Responder:
    """Build the answer from the request: ``fn(request_json)`` returns a text or a behaviour."""

    fn: Callable[[dict[str, Any]], str | Behaviour]


@dataclass(frozen=True)
class Raw:
    """Answer ``code`` with exactly ``body`` as the body, under ``content_type`` and extra ``headers``."""

    body: bytes
    content_type: str = "application/json"
    code: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Drip:
    """Answer 200 at once, then send one body byte (chunked) every ``interval_s`` until the client
    closes the connection or the server stops (bounded by :data:`MAX_HANG_S`)."""

    interval_s: float
    byte: bytes = b" "


@dataclass(frozen=True)
class Stream:
    """Answer 200 with a body streamed in ``chunk_size`` pieces: each ``(bytes, count)`` segment
    repeated ``count`` times, in order. With ``declare_length`` the size goes in Content-Length,
    else the body is chunked. Sending stops when the client closes the connection."""

    segments: tuple[tuple[bytes, int], ...]
    content_type: str = "application/json"
    declare_length: bool = False
    chunk_size: int = 1 << 16

    @property
    def size(self) -> int:
        """The full body size in bytes."""
        return sum(len(part) * count for part, count in self.segments)


Behaviour = Reply | Status | Hang | Drop | Responder | Raw | Drip | Stream


def reply(
    text: str,
    finish_reason: str = "stop",
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    *,
    include_usage: bool = True,
    delay_s: float = 0.0,
) -> Reply:
    """A successful completion (token counts default to a chars/4 estimate)."""
    return Reply(text, finish_reason, tokens_in, tokens_out, include_usage, delay_s)


def status(code: int, body: str | dict[str, Any] | None = None, retry_after: str | None = None) -> Status:
    """An HTTP error status, optionally with a ``Retry-After`` header (seconds or HTTP date)."""
    return Status(code, body, retry_after)


def hang(seconds: float) -> Hang:
    """Hold the request open without answering (use it to exceed the client timeout)."""
    return Hang(seconds)


def drop() -> Drop:
    """Close the connection without a response."""
    return Drop()


def responder(fn: Callable[[dict[str, Any]], str | Behaviour]) -> Responder:
    """A dynamic behaviour: ``fn`` receives the parsed request body."""
    return Responder(fn)


def raw(
    body: bytes | str, content_type: str = "application/json", code: int = 200, headers: dict[str, str] | None = None
) -> Raw:
    """Exactly these body bytes (a str is UTF-8 encoded), e.g. HTML with a 200 or a body that is not a completion."""
    data = body.encode() if isinstance(body, str) else body
    return Raw(data, content_type, code, tuple((headers or {}).items()))


def drip(interval_s: float, byte: bytes = b" ") -> Drip:
    """A 200 whose body never ends: one byte per ``interval_s`` until the client gives up."""
    return Drip(interval_s, byte)


def huge_completion(content: str, fill: str, count: int, *, declare_length: bool = False) -> Stream:
    """A chat completion whose content is ``content`` with each ``FILL`` marker replaced by ``fill * count``,
    streamed without ever holding the whole body in memory.

    Example: ``huge_completion('{"agents": [... "rationale": "FILL" ...]}', "x", 25_000_000)``.
    """
    envelope = json.dumps(completion_object(content.replace("FILL", "\x00")))
    parts = envelope.split(json.dumps("\x00")[1:-1])
    filler = json.dumps(fill)[1:-1].encode()
    segments: list[tuple[bytes, int]] = []
    for k, part in enumerate(parts):
        segments.append((part.encode(), 1))
        if k < len(parts) - 1:
            segments.append((filler, count))
    return Stream(tuple(segments), declare_length=declare_length)


def completion_object(text: str, *, model: str = "fake-model", **overrides: Any) -> dict[str, Any]:
    """A chat-completion body with content ``text``; ``overrides`` replace top-level fields (e.g. ``usage``,
    ``choices``), so a test can build bodies that are subtly not completions."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
    out: dict[str, Any] = {"id": f"chatcmpl-fake-{time.monotonic_ns()}", "object": "chat.completion",
                           "created": int(time.time()), "model": model, "choices": [choice],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}  # fmt: skip
    out.update(overrides)
    return out


@dataclass(frozen=True)
class RecordedRequest:
    """One chat request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]
    time: float
    """``time.monotonic()`` at arrival."""


@dataclass(frozen=True)
class Transfer:
    """How the answer to one chat request went (recorded once the handler is done with it)."""

    body_bytes: int
    """Body bytes the server managed to hand to the socket (a closed peer stops it early)."""
    client_closed: bool
    """The client closed the connection before the whole body was sent."""
    seconds: float
    """From the request's arrival to the end of the answer."""


@dataclass
class _State:
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    model_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class FakeOpenAI:
    """The fault-injection server. Use as a context manager or call start()/stop().

    Args:
        default: The behaviour used when the script is empty.
        models: The model ids listed by ``GET /v1/models``.
    """

    def __init__(self, default: Behaviour | None = None, models: tuple[str, ...] = ("fake-model",)) -> None:
        self.default: Behaviour = default if default is not None else reply("ok")
        self.models = models
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[threading.Thread, socket.socket] = {}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FakeOpenAI:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, wake hanging handlers, close connections, join all threads."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            handlers = dict(self._handlers)
        for sock in handlers.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in [*handlers, self._thread]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this server (ends in ``/v1``)."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def alive_threads(self) -> int:
        """How many threads of this server (the loop and the handlers) are still running."""
        with self._lock:
            threads = [*self._handlers, self._thread]
        return sum(1 for t in threads if t is not None and t.is_alive())

    # ---------------------------------------------------------------- scripting
    def push(self, *behaviours: Behaviour) -> None:
        """Append behaviours to the script; each chat request consumes one."""
        with self._lock:
            self._state.script.extend(behaviours)

    def pending(self) -> int:
        """Scripted behaviours not yet consumed."""
        with self._lock:
            return len(self._state.script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every chat request received, in arrival order."""
        with self._lock:
            return list(self._state.requests)

    @property
    def request_count(self) -> int:
        """Number of chat requests received."""
        with self._lock:
            return len(self._state.requests)

    def transfer(self, index: int) -> Transfer | None:
        """How the answer to chat request ``index`` (arrival order) went; None while it is still being sent."""
        with self._lock:
            return self._state.transfers.get(index)

    @property
    def model_requests(self) -> int:
        """Number of ``GET /v1/models`` requests received."""
        with self._lock:
            return self._state.model_requests

    @property
    def in_flight(self) -> int:
        """Chat requests being handled now."""
        with self._lock:
            return self._state.in_flight

    @property
    def max_in_flight(self) -> int:
        """The most chat requests ever handled at the same time."""
        with self._lock:
            return self._state.max_in_flight

    # ---------------------------------------------------------------- internals
    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._handlers[threading.current_thread()] = sock

    def _begin_chat(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Behaviour]:
        with self._lock:
            state = self._state
            state.requests.append(RecordedRequest(body, headers, time.monotonic()))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            return len(state.requests) - 1, state.script.popleft() if state.script else self.default

    def _end_chat(self, index: int, sent: int, closed: bool) -> None:
        with self._lock:
            self._state.in_flight -= 1
            seconds = time.monotonic() - self._state.requests[index].time
            self._state.transfers[index] = Transfer(sent, closed, seconds)

    def _count_models(self) -> None:
        with self._lock:
            self._state.model_requests += 1


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # an idle keep-alive connection ends after this
    _sent = 0  # body bytes of the current answer handed to the socket
    _closed = False  # the client closed the connection during the current answer

    def setup(self) -> None:
        super().setup()
        self.owner._register(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self.owner._count_models()
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.owner.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error_body(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, _error_body(404, f"no route POST {self.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send_json(400, _error_body(400, f"invalid JSON body: {exc}"))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        index, behaviour = self.owner._begin_chat(body, headers)
        self._sent, self._closed = 0, False
        try:
            self._perform(behaviour, body)
        except OSError:  # the client went away mid-answer
            self._closed, self.close_connection = True, True
        finally:
            self.owner._end_chat(index, self._sent, self._closed)

    def _write_body(self, data: bytes, chunked: bool) -> None:
        """Send ``data`` (as one chunk when ``chunked``), counting the body bytes the socket took."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        self._sent += len(data)

    def _perform(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        if isinstance(behaviour, Responder):
            produced = behaviour.fn(body)
            behaviour = reply(produced) if isinstance(produced, str) else produced
            if isinstance(behaviour, Responder):
                raise TypeError("a responder must return a text or a non-responder behaviour")
        if isinstance(behaviour, Reply):
            if behaviour.delay_s > 0:
                self.owner._stopping.wait(min(behaviour.delay_s, MAX_HANG_S))
            self._send_json(200, _completion(behaviour, body))
        elif isinstance(behaviour, Status):
            payload = behaviour.body if behaviour.body is not None else _error_body(behaviour.code, "fake error")
            extra = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
            self._send_json(behaviour.code, payload, extra)
        elif isinstance(behaviour, Hang):
            self.owner._stopping.wait(min(max(behaviour.seconds, 0.0), MAX_HANG_S))
            self.close_connection = True
        elif isinstance(behaviour, Raw):
            self._send_bytes(behaviour.code, behaviour.body, behaviour.content_type, dict(behaviour.headers))
        elif isinstance(behaviour, Drip):
            self._drip(behaviour)
        elif isinstance(behaviour, Stream):
            self._stream(behaviour)
        else:  # Drop
            self.close_connection = True

    def _drip(self, behaviour: Drip) -> None:
        self._start_body(200, "application/json", None)
        deadline = time.monotonic() + MAX_HANG_S
        self.close_connection = True  # the body never ends properly
        while time.monotonic() < deadline:
            self._write_body(behaviour.byte[:1], chunked=True)
            if self.owner._stopping.wait(behaviour.interval_s):
                return

    def _stream(self, behaviour: Stream) -> None:
        self._start_body(200, behaviour.content_type, behaviour.size if behaviour.declare_length else None)
        chunked = not behaviour.declare_length
        for piece in _pieces(behaviour):
            self._write_body(piece, chunked)
            if self.owner._stopping.is_set():
                self.close_connection = True
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _start_body(
        self, code: int, content_type: str, length: int | None, extra: dict[str, str] | None = None
    ) -> None:
        """Send the status and headers: Content-Length when ``length`` is known, else a chunked body."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send_json(self, code: int, payload: str | dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self._send_bytes(code, data, "application/json", extra or {})

    def _send_bytes(self, code: int, data: bytes, content_type: str, extra: dict[str, str]) -> None:
        self._start_body(code, content_type, len(data), extra)
        self._write_body(data, chunked=False)


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": f"{message} (HTTP {code})", "type": "fake_error", "code": code}}


def _pieces(stream: Stream) -> Iterator[bytes]:
    """The body of ``stream`` in pieces of about ``chunk_size`` bytes (never the whole body at once)."""
    for part, count in stream.segments:
        per = max(1, stream.chunk_size // max(1, len(part)))
        while count > 0:
            n = min(per, count)
            yield part * n
            count -= n


def _completion(behaviour: Reply, request: dict[str, Any]) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    tokens_in = behaviour.tokens_in if behaviour.tokens_in is not None else max(1, prompt_chars // 4)
    tokens_out = behaviour.tokens_out if behaviour.tokens_out is not None else max(1, len(behaviour.text) // 4)
    out = completion_object(behaviour.text, model=request.get("model", "fake-model"))
    out["choices"][0]["finish_reason"] = behaviour.finish_reason
    if behaviour.include_usage:
        out["usage"] = {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
    else:
        del out["usage"]
    return out
