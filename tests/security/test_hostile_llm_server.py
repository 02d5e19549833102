"""The LLM critic path against a hostile or broken OpenAI-compatible server (issue 17).

Every attack is built with the real HTTP fake (``tests/fake_openai.py``): a 200 whose body is
not a chat completion or carries absurd token counts, a body that drips one byte at a time, a
body far too large, a reply whose rationale runs to megabytes, credits that float32 turns into
infinity. The outcome asserted is always the same: the bad exchange fails its own episode
(status ``failed``, NaN credits, the reason in ``error``) and the run goes on with the others.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_openai import Behaviour, FakeOpenAI, completion_object, drip, huge_completion, raw, reply, responder
from llm_replies import expected_credits, parse_request, valid_reply_for, valid_reply_object

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.client import ClientConfig, LLMClient, LLMResponseError
from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
from llmca_data.annotation.llm.critic import LLMCritic
from llmca_data.annotation.llm.reply import QUOTE_MAX_CHARS, ReplyError, parse_reply
from llmca_data.cli import main
from llmca_data.schema import from_fsl
from llmca_data.shards import read_shard
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f"
AGENTS = ("agent_0", "agent_1")
EXPERT = tuple(range(12, 20))
"""The fixture's expert episodes (one request each)."""
ONE_EPISODE = [{"role": "user", "content": "EPISODE 12 (3 timesteps, t=0..2)\nagents agent_0, agent_1 in this order"}]
"""A request that ``llm_replies`` reads as one 3-step episode, for tests below the critic."""
MAX_WALL_S = 20.0
"""A generous bound on a run that a hostile server must not be able to stretch."""

Attack = Callable[[dict[str, Any]], Behaviour]
"""Builds the fake's answer from the critic's request body."""


@pytest.fixture(autouse=True)
def private_reply_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh reply cache per test: a cached good reply must never hide an attack."""
    monkeypatch.setenv("LLMCA_CACHE_DIR", str(tmp_path / "reply-cache"))


def episode_of(body: dict[str, Any]) -> int:
    return parse_request(body).episodes[0].episode_id


def serve(fake: FakeOpenAI, attacks: dict[int, list[Attack]]) -> None:
    """Answer each episode's requests with its attacks in turn, then (and for every other episode) validly."""
    queues = {episode: deque(steps) for episode, steps in attacks.items()}

    def answer(body: dict[str, Any]) -> Behaviour:
        queue = queues.get(episode_of(body))
        return queue.popleft()(body) if queue else reply(valid_reply_for(body))

    fake.default = responder(answer)


def envelope(**overrides: Any) -> Attack:
    """A 200 whose body is the valid reply wrapped in a completion with ``overrides`` (e.g. a bad ``usage``)."""
    return lambda body: raw(json.dumps(completion_object(valid_reply_for(body), **overrides)))


def content(make: Callable[[dict[str, Any]], str]) -> Attack:
    """A well-formed completion whose reply text is ``make(request)``."""
    return lambda body: reply(make(body))


def oversized(fill_count: int, *, declare_length: bool = False) -> Attack:
    """The valid reply with every rationale made of ``fill_count`` characters, streamed in chunks."""

    def build(body: dict[str, Any]) -> Behaviour:
        obj = valid_reply_object(body)
        for agent in obj["agents"]:
            agent["rationale"] = "FILL"
        return huge_completion(json.dumps(obj), "x", fill_count, declare_length=declare_length)

    return build


def with_credit(value: Any) -> Callable[[dict[str, Any]], str]:
    def make(body: dict[str, Any]) -> str:
        obj = valid_reply_object(body)
        obj["agents"][0]["credits"][0] = value
        return json.dumps(obj)

    return make


def llm_critic(fake: FakeOpenAI, tmp_path: Path, **transport: Any) -> LLMCritic:
    settings: dict[str, Any] = {"timeout_s": 10.0, "max_retries": 1, "backoff_s": 0.01, "total_retry_s": 30.0}
    config = LLMConfig(base_url=fake.base_url, model="fake-model", response_format="json_object",
                       transport=TransportConfig(**{**settings, **transport}))  # fmt: skip
    return LLMCritic(config, cache=ReplyCache(tmp_path / "critic-cache.sqlite"))


def stored(root: Path) -> dict[int, tuple[dict[str, Any], np.ndarray]]:
    """``{episode_id: (annotations row, credits [T, N])}`` of ``llm-mca`` over every tier."""
    rows: dict[int, dict[str, Any]] = {}
    for path in sorted((root / f"data/{ENV}/annotations").glob("*.parquet")):
        for row in read_shard(path).to_pylist():
            if row["critic"] == "llm-mca":
                assert row["episode_id"] not in rows, f"two rows for episode {row['episode_id']}"
                rows[row["episode_id"]] = row
    credits: dict[int, np.ndarray] = {}
    for path in sorted((root / f"data/{ENV}/steps").glob("*.parquet")):
        table = read_shard(path)
        if "credit_llm_mca" not in table.column_names:  # a tier this run did not annotate
            continue
        values = from_fsl(table.column("credit_llm_mca"), (len(AGENTS),))  # [M, N]
        ids = table.column("episode_id").to_numpy()
        credits.update({int(e): values[ids == e] for e in np.unique(ids)})
    return {e: (row, credits[e]) for e, row in rows.items()}


def assert_failed(entry: tuple[dict[str, Any], np.ndarray], reason: str) -> None:
    row, credits = entry
    assert row["status"] == "failed" and reason in row["error"], row["error"]
    assert np.isnan(credits).all(), "a failed episode must have NaN credits, never numbers"
    assert math.isfinite(row["cost_usd"]) and row["cost_usd"] >= 0


def assert_ok(entry: tuple[dict[str, Any], np.ndarray], episode_id: int) -> None:
    row, credits = entry
    assert row["status"] == "ok" and row["error"] == ""
    np.testing.assert_array_equal(credits, expected_credits(episode_id, len(credits), len(AGENTS)))


def cli(*args: str) -> int:
    """Run ``llmca`` in this process; its exit status."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def complete(fake: FakeOpenAI, **transport: Any) -> Any:
    """One ``LLMClient.complete`` against ``fake`` (retries allowed, so a test sees whether they are used)."""
    settings: dict[str, Any] = {"timeout_s": 10.0, "max_retries": 2, "backoff_s": 0.01, **transport}
    config = ClientConfig(fake.base_url, "fake-model", transport=TransportConfig(**settings))

    async def go() -> Any:
        async with LLMClient(config) as client:
            return await client.complete([{"role": "user", "content": "hi"}], max_tokens=8)

    return asyncio.run(go())


# ------------------------------------------------------------------- finding 1: one bad 200


BAD_200: dict[str, tuple[Attack, str]] = {
    "html": (lambda body: raw("<html><h1>502 Bad Gateway</h1></html>", "text/html"),
             "the body is not JSON (Content-Type 'text/html'"),
    "usage-abc": (envelope(usage={"prompt_tokens": "abc", "completion_tokens": 5}),
                  'usage.prompt_tokens must be a whole number in 0..100000000, got "abc"'),
    "usage-nan": (envelope(usage={"prompt_tokens": math.nan, "completion_tokens": 5}), "got nan"),
    "usage-1e308": (envelope(usage={"prompt_tokens": 1e308, "completion_tokens": 5}), "got 1e+308"),
    "usage-10**30": (envelope(usage={"prompt_tokens": 5, "completion_tokens": 10**30}),
                     f"usage.completion_tokens must be a whole number in 0..100000000, got {10**30}"),
    "usage-negative": (envelope(usage={"prompt_tokens": -(10**9), "completion_tokens": 5}), "got -1000000000"),
    "choices-object": (envelope(choices={"0": {"message": {"content": "{}"}}}),
                       "'choices' must be a non-empty list, got an object"),
}  # fmt: skip
"""Each bad 200 and the reason its episode must record."""


def test_every_bad_200_fails_only_its_episode_and_the_run_goes_on(lbf_dataset: Path, fake_openai: FakeOpenAI) -> None:
    bad = dict(zip(EXPERT, BAD_200, strict=False))  # episodes 12..18 get one bad 200 each; 19 and all random are good
    serve(fake_openai, {episode: [BAD_200[name][0]] for episode, name in bad.items()})

    status = cli("annotate", str(lbf_dataset), "--critic", "llm-mca", "--base-url", fake_openai.base_url,
                 "--model", "fake-model", "--response-format", "json_object", "--price-in", "1",
                 "--price-out", "1")  # fmt: skip

    assert status == 0
    results = stored(lbf_dataset)
    assert len(results) == 20
    for episode, name in bad.items():
        assert_failed(results[episode], BAD_200[name][1])
        assert "malformed chat completion" in results[episode][0]["error"]
    good = [e for e in results if e not in bad]
    assert len(good) == 13
    for episode in good:
        assert_ok(results[episode], episode)
    sent = [episode_of(r.body) for r in fake_openai.requests]
    assert all(sent.count(e) == 1 for e in bad), "a malformed 200 was retried"
    assert validate(lbf_dataset).ok


@pytest.mark.parametrize("name", list(BAD_200))
def test_the_client_refuses_a_bad_200_at_once(fake_openai: FakeOpenAI, name: str) -> None:
    attack, reason = BAD_200[name]
    fake_openai.push(attack({"messages": ONE_EPISODE}))
    with pytest.raises(LLMResponseError, match="malformed chat completion") as err:
        complete(fake_openai)
    assert reason in str(err.value) and "--base-url" in str(err.value)
    assert fake_openai.request_count == 1


def test_a_compressed_body_is_refused_and_identity_was_asked(fake_openai: FakeOpenAI) -> None:
    body = gzip.compress(json.dumps(completion_object("x" * 10_000)).encode())
    fake_openai.push(raw(body, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(LLMResponseError, match="Content-Encoding 'gzip'"):
        complete(fake_openai)
    assert fake_openai.requests[0].headers["accept-encoding"] == "identity"


# ------------------------------------------------------------- finding 2: --timeout bounds a request


def test_a_drip_is_cut_off_at_the_timeout(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, poll: Callable[[Callable[[], bool], float], None]
) -> None:
    serve(fake_openai, {12: [lambda body: drip(0.1)]})
    t0 = time.monotonic()
    result = annotate(lbf_dataset, llm_critic(fake_openai, tmp_path, timeout_s=1.5, max_retries=0),
                      envs=(ENV,), tiers=("expert",), limit=2)  # fmt: skip

    assert time.monotonic() - t0 < MAX_WALL_S
    assert (result.episodes, result.failed) == (2, 1)
    results = stored(lbf_dataset)
    assert_failed(results[12], "timed out after 1.5 s (the limit of one attempt, connect to last byte)")
    assert "failed after 1 attempts" in results[12][0]["error"]
    assert_ok(results[13], 13)
    [index] = [i for i, r in enumerate(fake_openai.requests) if episode_of(r.body) == 12]
    poll(lambda: fake_openai.transfer(index) is not None, 10.0)
    transfer = fake_openai.transfer(index)
    assert transfer is not None and transfer.client_closed, "the client never closed the dripping connection"
    assert transfer.seconds < MAX_WALL_S and transfer.body_bytes < 100


# ------------------------------------------------------------------------- finding 3: memory


def test_a_50_mb_reply_is_refused_while_reading(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, poll: Callable[[Callable[[], bool], float], None]
) -> None:
    serve(fake_openai, {12: [oversized(25_000_000)]})  # two 25 MB rationales: a 50 MB valid-looking reply
    result = annotate(lbf_dataset, llm_critic(fake_openai, tmp_path), envs=(ENV,), tiers=("expert",), limit=2)

    assert (result.episodes, result.failed) == (2, 1)
    cap = TransportConfig().max_response_bytes
    assert cap <= 8 * 2**20
    results = stored(lbf_dataset)
    assert_failed(results[12], f"reply larger than {cap} bytes (stopped reading after")
    assert len(results[12][0]["raw_response"]) < 1000
    assert_ok(results[13], 13)
    indices = [i for i, r in enumerate(fake_openai.requests) if episode_of(r.body) == 12]
    assert len(indices) == 1, "an oversized reply was retried"
    poll(lambda: fake_openai.transfer(indices[0]) is not None, 10.0)
    transfer = fake_openai.transfer(indices[0])
    assert transfer is not None and transfer.client_closed and transfer.body_bytes < 25_000_000


def test_a_declared_oversize_is_refused_before_reading(
    fake_openai: FakeOpenAI, poll: Callable[[Callable[[], bool], float], None]
) -> None:
    fake_openai.push(oversized(32_000_000, declare_length=True)({"messages": ONE_EPISODE}))
    with pytest.raises(LLMResponseError, match=r"reply larger than 65536 bytes \(Content-Length \d+; nothing read\)"):
        complete(fake_openai, max_response_bytes=65536)
    assert fake_openai.request_count == 1
    poll(lambda: fake_openai.transfer(0) is not None, 10.0)
    transfer = fake_openai.transfer(0)
    assert transfer is not None and transfer.client_closed and transfer.body_bytes < 64_000_000 // 2


BULKY_REPLIES: dict[str, tuple[Attack, str]] = {
    "megabyte-rationale": (oversized(1_000_000), "agent_0: 'rationale' has 1000000 characters; keep it to at most 200"),
    "three-mb-of-braces": (content(lambda body: "{" * 3_000_000), "reply ends before its JSON object is complete"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BULKY_REPLIES))
def test_a_bulky_invalid_reply_is_quoted_only_as_an_excerpt(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, name: str
) -> None:
    attack, reason = BULKY_REPLIES[name]
    serve(fake_openai, {12: [attack]})
    result = annotate(lbf_dataset, llm_critic(fake_openai, tmp_path), envs=(ENV,), tiers=("expert",), limit=2)

    assert (result.episodes, result.failed) == (2, 0)
    first, retry = [r.body for r in fake_openai.requests if episode_of(r.body) == 12]
    quoted = retry["messages"][2]
    assert quoted["role"] == "assistant" and len(quoted["content"]) <= QUOTE_MAX_CHARS
    assert reason in retry["messages"][3]["content"]
    assert len(json.dumps(retry)) < len(json.dumps(first)) + QUOTE_MAX_CHARS + 1000
    results = stored(lbf_dataset)
    assert results[12][0]["status"] == "repaired" and results[13][0]["status"] == "ok"


def test_the_parser_enforces_rationale_and_summary_lengths() -> None:
    body = {"messages": ONE_EPISODE}
    for key, limit in (("rationale", 200), ("summary", 300)):
        obj = valid_reply_object(body)
        target = obj["agents"][1] if key == "rationale" else obj
        target[key] = "y" * limit
        parse_reply(json.dumps(obj), agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=False, n_tasks=None)
        target[key] += "y"
        with pytest.raises(ReplyError, match=f"'{key}' has {limit + 1} characters; keep it to at most {limit}"):
            parse_reply(json.dumps(obj), agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=False, n_tasks=None)


# ------------------------------------------------------------- finding 4: float32 overflow


@pytest.mark.parametrize("value", [1e308, "1e308", 3.5e38, -1e308, "-3.5e38", 10**39])
def test_credits_beyond_float32_are_an_invalid_reply(value: Any) -> None:
    text = with_credit(value)({"messages": ONE_EPISODE})
    with pytest.raises(ReplyError, match=r"agent_0: credits\[0\]: expected a finite number of float32 range"):
        parse_reply(text, agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=False, n_tasks=None)


def test_the_largest_float32_credit_and_int16_task_still_pass() -> None:
    text = with_credit(3.4e38)({"messages": ONE_EPISODE})
    [parsed], _ = parse_reply(text, agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=False, n_tasks=None)
    assert np.isfinite(np.float32(parsed.agents[0].credits[0]))
    obj = json.loads(text)
    for agent in obj["agents"]:
        agent["tasks"] = [32767, 0, 0]
    parse_reply(json.dumps(obj), agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=True, n_tasks=None)
    obj["agents"][0]["tasks"][0] = 32768
    with pytest.raises(ReplyError, match=r"task 32768 is out of range \(allowed: -1\.\.32767\)"):
        parse_reply(json.dumps(obj), agent_ids=AGENTS, episodes=[(12, 3)], with_tasks=True, n_tasks=None)


def test_an_overflowing_credit_fails_the_episode_with_nan_not_inf(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai, {12: [content(with_credit(1e308)), content(with_credit("3.5e38"))]})
    result = annotate(lbf_dataset, llm_critic(fake_openai, tmp_path), envs=(ENV,), tiers=("expert",), limit=2)

    assert (result.episodes, result.failed) == (2, 1)
    results = stored(lbf_dataset)
    assert_failed(results[12], 'credits[0]: expected a finite number of float32 range (|x| < 3.4e38), got "3.5e38"')
    assert_ok(results[13], 13)
    assert validate(lbf_dataset).ok
