"""The LLM client against a real local HTTP server that injects faults."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from fake_openai import FakeOpenAI, drop, hang, reply, responder, status

from llmca_data.annotation.llm.client import (
    ClientConfig,
    Completion,
    LLMClient,
    LLMRequestError,
    parse_retry_after,
)
from llmca_data.annotation.llm.config import TransportConfig

MESSAGES = [{"role": "system", "content": "You are a critic."}, {"role": "user", "content": "Rate the team."}]


def config(server: FakeOpenAI, **overrides: Any) -> ClientConfig:
    """A config with fast retries aimed at the fake server."""
    settings: dict[str, Any] = {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "total_retry_s": 20.0}
    settings.update(overrides)
    key_env = settings.pop("api_key_env", "OPENAI_API_KEY")
    return ClientConfig(server.base_url, "fake-model", key_env, TransportConfig(**settings))


def run(cfg: ClientConfig, make: Any) -> Any:
    """Run ``make(client)`` in a fresh event loop with a client that is always closed."""

    async def main() -> Any:
        async with LLMClient(cfg) as client:
            return await make(client)

    return asyncio.run(main())


def complete(cfg: ClientConfig, **kwargs: Any) -> Completion:
    kwargs.setdefault("max_tokens", 32)
    result: Completion = run(cfg, lambda c: c.complete(MESSAGES, **kwargs))
    return result


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_success_with_usage_cost_and_request_fields(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake_openai.push(reply('{"agents": []}', tokens_in=1000, tokens_out=500))
    cfg = config(fake_openai, price_in=1.0, price_out=2.0)
    out = complete(
        cfg,
        max_tokens=77,
        temperature=0.3,
        seed=5,
        response_format={"type": "json_object"},
        extra_body={"grammar": "root ::= [a]"},
    )
    assert out.text == '{"agents": []}'
    assert (out.tokens_in, out.tokens_out, out.attempts, out.finish_reason) == (1000, 500, 1, "stop")
    assert out.cost_usd == pytest.approx(0.002)
    assert 0 < out.latency_s <= out.seconds
    [req] = fake_openai.requests
    assert req.body["model"] == "fake-model"
    assert req.body["messages"] == MESSAGES
    assert req.body["max_tokens"] == 77 and req.body["temperature"] == 0.3 and req.body["seed"] == 5
    assert req.body["response_format"] == {"type": "json_object"}
    assert req.body["grammar"] == "root ::= [a]"
    assert req.headers["authorization"] == "Bearer not-needed"


def test_optional_fields_absent_and_usage_missing(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(reply("cut", finish_reason="length", include_usage=False))
    out = complete(config(fake_openai, price_in=5.0))
    assert (out.finish_reason, out.tokens_in, out.tokens_out, out.cost_usd) == ("length", 0, 0, 0.0)
    body = fake_openai.requests[0].body
    assert "seed" not in body and "response_format" not in body and "grammar" not in body


def test_responder_sees_the_request(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = responder(lambda body: f"n={len(body['messages'])}")
    assert complete(config(fake_openai)).text == "n=2"


def test_429_without_retry_after_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(status(429), reply("ok"))
    out = complete(config(fake_openai))
    assert (out.text, out.attempts, fake_openai.request_count) == ("ok", 2, 2)


def test_429_retry_after_is_honoured(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(status(429, retry_after="1"), reply("ok"))
    out, elapsed = timed(lambda: complete(config(fake_openai, max_backoff_s=5.0)))
    assert out.attempts == 2 and fake_openai.request_count == 2
    first, second = fake_openai.requests
    assert second.time - first.time >= 0.95
    assert elapsed >= 0.95 and out.seconds >= 0.95
    assert out.latency_s < out.seconds


def test_retry_after_is_capped_by_max_backoff(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(status(503, retry_after="60"), reply("ok"))
    out, elapsed = timed(lambda: complete(config(fake_openai, max_backoff_s=0.1)))
    assert out.attempts == 2 and elapsed < 5.0


def test_parse_retry_after_forms() -> None:
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert 25.0 <= (parse_retry_after({"retry-after": soon}) or 0.0) <= 31.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_http_date_retry_after_over_http(fake_openai: FakeOpenAI) -> None:
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=5), usegmt=True)
    fake_openai.push(status(429, retry_after=past), reply("ok"))
    assert complete(config(fake_openai)).attempts == 2


def test_500_twice_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(status(500), status(502), reply("ok"))
    out = complete(config(fake_openai))
    assert (out.text, out.attempts, fake_openai.request_count) == ("ok", 3, 3)


def test_hang_past_timeout_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(hang(3.0), reply("ok"))
    out, elapsed = timed(lambda: complete(config(fake_openai, timeout_s=0.3)))
    assert (out.text, out.attempts, fake_openai.request_count) == ("ok", 2, 2)
    assert 0.3 <= elapsed < 2.5
    assert out.latency_s < 0.3 <= out.seconds


def test_dropped_connection_then_success(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(drop(), reply("ok"))
    out = complete(config(fake_openai))
    assert (out.text, out.attempts, fake_openai.request_count) == ("ok", 2, 2)


def test_retries_exhausted(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(503)
    with pytest.raises(LLMRequestError, match=r"after 3 attempts.*HTTP 503.*--base-url"):
        complete(config(fake_openai, max_retries=2))
    assert fake_openai.request_count == 3
    bodies = [json.dumps(r.body, sort_keys=True) for r in fake_openai.requests]
    assert len(set(bodies)) == 1  # the same request, resent only by our retries


def test_total_retry_cap_stops_early(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(500)
    cfg = config(fake_openai, max_retries=1000, backoff_s=0.1, max_backoff_s=0.1, total_retry_s=0.6)
    t0 = time.monotonic()
    # the last attempt gets only what is left of the cap, so on a loaded machine it may time out instead
    with pytest.raises(LLMRequestError, match=r"total_retry_s=0.6.*last error: (HTTP 500|timed out after)"):
        complete(cfg)
    assert time.monotonic() - t0 < 0.6 + 0.5
    assert 2 <= fake_openai.request_count < 10


def test_total_retry_cap_never_sleeps_past_it(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(429, retry_after="20")
    cfg = config(fake_openai, max_backoff_s=30.0, total_retry_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(LLMRequestError, match="gave up after 1 attempts"):
        complete(cfg)
    assert time.monotonic() - t0 < 1.5
    assert fake_openai.request_count == 1


@pytest.mark.parametrize(
    ("code", "hint"),
    [(401, "OPENAI_API_KEY"), (403, "OPENAI_API_KEY"), (404, "--model"), (400, "server log"), (422, "server log")],
)
def test_non_retryable_fails_at_once(fake_openai: FakeOpenAI, code: int, hint: str) -> None:
    fake_openai.push(status(code, body={"error": {"message": "the server says no"}}), reply("never"))
    with pytest.raises(LLMRequestError, match=f"HTTP {code}: the server says no") as info:
        complete(config(fake_openai))
    assert hint in str(info.value)
    assert fake_openai.request_count == 1


def test_unreachable_server_names_base_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = ClientConfig(f"http://127.0.0.1:{port}/v1", "m", transport=TransportConfig(max_retries=1, backoff_s=0.01,
                                                                                     timeout_s=2.0))  # fmt: skip
    with pytest.raises(LLMRequestError, match=r"after 2 attempts.*connection error.*--base-url"):
        complete(cfg)


def test_concurrency_is_bounded(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = reply("ok", delay_s=0.2)
    cfg = config(fake_openai, concurrency=2)

    async def many(client: LLMClient) -> list[Completion]:
        return await asyncio.gather(*(client.complete(MESSAGES, max_tokens=8) for _ in range(6)))

    outs = run(cfg, many)
    assert [o.text for o in outs] == ["ok"] * 6
    assert fake_openai.request_count == 6
    assert fake_openai.max_in_flight == 2


def test_list_models(fake_openai: FakeOpenAI) -> None:
    assert run(config(fake_openai), lambda c: c.list_models()) == ["fake-model"]
    assert fake_openai.model_requests == 1 and fake_openai.request_count == 0


def test_api_key_read_from_env_never_serialised(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-very-secret-123"
    monkeypatch.setenv("LLMCA_TEST_KEY", secret)
    cfg = config(fake_openai, api_key_env="LLMCA_TEST_KEY")
    complete(cfg)
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {secret}"
    dumped = json.dumps(cfg.to_dict())
    assert secret not in dumped and secret not in repr(cfg)
    assert cfg.to_dict()["api_key_env"] == "LLMCA_TEST_KEY"
    assert ClientConfig.from_dict(cfg.to_dict()) == cfg


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ClientConfig("http://x/v1", "m", transport=TransportConfig(concurrency=0))
    with pytest.raises(ValueError, match="timeout_s"):
        ClientConfig("http://x/v1", "m", transport=TransportConfig(timeout_s=0))


def test_server_stops_promptly_with_a_hanging_request() -> None:
    server = FakeOpenAI(default=hang(25.0)).start()
    cfg = config(server, timeout_s=5.0, max_retries=0)

    async def fire(client: LLMClient) -> None:
        task = asyncio.create_task(client.complete(MESSAGES, max_tokens=8))
        deadline = time.monotonic() + 5.0
        while server.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.in_flight == 1
        _, took = timed(server.stop)
        assert took < 2.0
        with pytest.raises(LLMRequestError):
            await task

    run(cfg, fire)
    assert server.alive_threads() == 0
