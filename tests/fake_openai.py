"""A real HTTP server speaking the OpenAI chat-completions protocol, with fault injection.

Input: scripted behaviours (a reply, an HTTP status, a hang, a dropped connection, or a
callable that builds the reply from the request). Output: answers to ``POST
/v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1, and a record of every chat
request (parsed JSON body, headers, arrival time) so tests can count requests exactly.

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
from collections.abc import Callable
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


Behaviour = Reply | Status | Hang | Drop | Responder


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


@dataclass(frozen=True)
class RecordedRequest:
    """One chat request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]
    time: float
    """``time.monotonic()`` at arrival."""


@dataclass
class _State:
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
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

    def _begin_chat(self, body: dict[str, Any], headers: dict[str, str]) -> Behaviour:
        with self._lock:
            state = self._state
            state.requests.append(RecordedRequest(body, headers, time.monotonic()))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            return state.script.popleft() if state.script else self.default

    def _end_chat(self) -> None:
        with self._lock:
            self._state.in_flight -= 1

    def _count_models(self) -> None:
        with self._lock:
            self._state.model_requests += 1


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # an idle keep-alive connection ends after this

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
        behaviour = self.owner._begin_chat(body, headers)
        try:
            self._perform(behaviour, body)
        finally:
            self.owner._end_chat()

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
        else:  # Drop
            self.close_connection = True

    def _send_json(self, code: int, payload: str | dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": f"{message} (HTTP {code})", "type": "fake_error", "code": code}}


def _completion(behaviour: Reply, request: dict[str, Any]) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    tokens_in = behaviour.tokens_in if behaviour.tokens_in is not None else max(1, prompt_chars // 4)
    tokens_out = behaviour.tokens_out if behaviour.tokens_out is not None else max(1, len(behaviour.text) // 4)
    out: dict[str, Any] = {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": behaviour.text},
                "finish_reason": behaviour.finish_reason,
                "logprobs": None,
            }
        ],
    }
    if behaviour.include_usage:
        out["usage"] = {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
    return out
