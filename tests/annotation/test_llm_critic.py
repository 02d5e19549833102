"""The LLM critic end to end: ``annotate`` on a real LBF dataset against the fault-injecting server.

Every test runs the real path: episodes replayed and rendered, requests sent over HTTP to
``FakeOpenAI`` (which answers from the request itself, see ``llm_replies``), replies validated,
cached in a private sqlite file, and credits plus annotations rows committed to the dataset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_openai import Behaviour, FakeOpenAI, drop, hang, reply, responder, status
from llm_replies import (
    AskedEpisode,
    cut_mid_string,
    expected_credits,
    expected_tasks,
    first_user_message,
    last_user_message,
    non_json,
    parse_request,
    rationale_text,
    summary_text,
    task_out_of_range,
    valid_reply_for,
    wrong_agent_id,
    wrong_credit_count,
)
from llm_replies import nan_credit as nan_credit_reply

from llmca_data.annotation.annotate import AnnotateResult, annotate
from llmca_data.annotation.annotate import llm_dry_run as dry_run
from llmca_data.annotation.critic import STATUSES
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.config import TransportConfig
from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic
from llmca_data.annotation.llm.prompt import estimate_tokens, prompt_version
from llmca_data.annotation.llm.reply import ReplyError, parse_reply
from llmca_data.config import ConfigError
from llmca_data.schema import from_fsl, fsl
from llmca_data.shards import Manifest, read_shard
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f"
N_AGENTS = 2
AGENTS = ("agent_0", "agent_1")
EXPERT = tuple(range(12, 20))
"""Episode ids of the fixture's expert tier (6–16 steps: one request each)."""
RANDOM = tuple(range(12))
"""Episode ids of the fixture's random tier (37–50 steps: two windows, so two requests each)."""
CLI = [sys.executable, "-c", "from llmca_data.cli import main; main()"]

Step = Behaviour | Callable[[str], str]
"""A scripted answer: a fake-server behaviour, or a mutator of the valid reply text."""


def steps_rel(tier: str) -> str:
    return f"data/{ENV}/steps/{tier}-00000.parquet"


def annotations_rel(tier: str) -> str:
    return f"data/{ENV}/annotations/{tier}-00000.parquet"


class Script:
    """The fake server's responder: valid replies, except the steps queued for an episode.

    Each request consumes the next step queued for the first episode it shows (a corrective
    retry shows the same episode again, so it consumes the following step).
    """

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self._queues: dict[int, deque[Step]] = {}
        self._lock = threading.Lock()

    def on(self, episode_id: int, *steps: Step) -> Script:
        with self._lock:
            self._queues.setdefault(episode_id, deque()).extend(steps)
        return self

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def __call__(self, body: dict[str, Any]) -> str | Behaviour:
        episode_id = parse_request(body).episodes[0].episode_id
        with self._lock:
            queue = self._queues.get(episode_id)
            step = queue.popleft() if queue else None
        valid = valid_reply_for(body)
        if step is None:
            return reply(valid, delay_s=self.delay_s)
        if callable(step):
            return step(valid)
        return step


def serve(fake: FakeOpenAI, script: Script | None = None) -> Script:
    script = script or Script()
    fake.default = responder(script)
    return script


def llm_critic(fake: FakeOpenAI, cache: Path, **overrides: Any) -> LLMCritic:
    """An LLM critic aimed at ``fake`` with its own cache file and short timeouts."""
    settings: dict[str, Any] = {"base_url": fake.base_url, "model": "fake-model", "response_format": "json_object"}
    transport: dict[str, Any] = {"max_retries": 1, "timeout_s": 5.0, "backoff_s": 0.01, "total_retry_s": 30.0}
    for key, value in overrides.items():
        (transport if key in TransportConfig.field_names() else settings)[key] = value
    return LLMCritic(LLMConfig(**settings, transport=TransportConfig(**transport)), cache=ReplyCache(cache))


def run(root: Path, critic: LLMCritic, tiers: tuple[str, ...] = ("expert",), **kwargs: Any) -> AnnotateResult:
    return annotate(root, critic, envs=(ENV,), tiers=tiers, **kwargs)


@pytest.fixture(autouse=True)
def private_default_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever falls back to the default cache writes under tmp_path, never the user's cache."""
    monkeypatch.setenv("LLMCA_CACHE_DIR", str(tmp_path / "default-cache"))


# ------------------------------------------------------------------------------ dataset readers


def episode_lengths(root: Path, tier: str) -> dict[int, int]:
    table = read_shard(root / f"data/{ENV}/episodes/{tier}-00000.parquet", ["episode_id", "length"])
    return dict(zip(table.column("episode_id").to_pylist(), table.column("length").to_pylist(), strict=True))


def column_by_episode(root: Path, tier: str, column: str) -> dict[int, np.ndarray]:
    """``{episode_id: [T, N]}`` of a per-agent column of the steps shard."""
    table = read_shard(root / steps_rel(tier), ["episode_id", column])
    values = from_fsl(table.column(column), (N_AGENTS,))  # [M, N]
    ids = table.column("episode_id").to_numpy()
    return {int(e): values[ids == e] for e in np.unique(ids)}


def has_column(root: Path, tier: str, column: str) -> bool:
    return column in pq.read_schema(root / steps_rel(tier)).names


def annotation_rows(root: Path, tier: str, critic_id: str = "llm-mca") -> dict[int, dict[str, Any]]:
    """This critic's annotations rows by episode; asserts there is at most one per episode."""
    rows = [r for r in read_shard(root / annotations_rel(tier)).to_pylist() if r["critic"] == critic_id]
    ids = [r["episode_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate annotations rows: {sorted(ids)}"
    return {r["episode_id"]: r for r in rows}


def check_terminal(
    root: Path, tier: str, episode_ids: tuple[int, ...], critic_id: str = "llm-mca"
) -> dict[int, dict[str, Any]]:
    """Every episode has exactly one row with a terminal status; failed ⇔ error set and NaN credits."""
    rows = annotation_rows(root, tier, critic_id)
    assert set(episode_ids) <= set(rows), f"episodes without a row: {sorted(set(episode_ids) - set(rows))}"
    credits = column_by_episode(root, tier, "credit_" + critic_id.replace("-", "_"))
    for episode_id in episode_ids:
        row = rows[episode_id]
        assert row["status"] in STATUSES
        if row["status"] == "failed":
            assert row["error"], f"episode {episode_id} failed without an error"
            assert np.isnan(credits[episode_id]).all(), f"failed episode {episode_id} has non-NaN credits"
        else:
            assert row["error"] == ""
            assert np.isfinite(credits[episode_id]).all()
    return rows


def assert_expected_credits(
    root: Path, tier: str, episode_ids: tuple[int, ...], column: str = "credit_llm_mca"
) -> None:
    lengths = episode_lengths(root, tier)
    credits = column_by_episode(root, tier, column)
    for episode_id in episode_ids:
        np.testing.assert_array_equal(
            credits[episode_id], expected_credits(episode_id, lengths[episode_id], N_AGENTS), err_msg=str(episode_id)
        )


# ------------------------------------------------------------------------------ request records


def messages_key(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"], sort_keys=True)


def duplicates(bodies: list[dict[str, Any]]) -> int:
    """How many requests repeat the messages of an earlier one."""
    return sum(count - 1 for count in Counter(messages_key(b) for b in bodies).values())


def bodies(fake: FakeOpenAI, start: int = 0) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests[start:]]


def by_episode(fake: FakeOpenAI, start: int = 0) -> dict[int, list[dict[str, Any]]]:
    """Recorded request bodies grouped by the first episode they show, in arrival order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for body in bodies(fake, start):
        out.setdefault(parse_request(body).episodes[0].episode_id, []).append(body)
    return out


def requested_episodes(fake: FakeOpenAI, start: int = 0) -> set[int]:
    return {e for body in bodies(fake, start) for e in parse_request(body).episode_ids}


def completion_tokens(text: str) -> int:
    """The completion tokens ``FakeOpenAI`` reports for a reply text."""
    return max(1, len(text) // 4)


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens ``FakeOpenAI`` reports for a request."""
    return max(1, sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4)


# ---------------------------------------------------------------------------------------- tests


def test_a_fresh_cache_passed_to_the_critic_is_used(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fresh = ReplyCache(tmp_path / "fresh.sqlite")
    critic = LLMCritic(LLMConfig(base_url=fake_openai.base_url, model="fake-model"), cache=fresh)
    assert critic.cache is fresh


def test_requests_fan_out_over_several_endpoints(lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with FakeOpenAI(responder(valid_reply_for)) as second:
        serve(fake_openai)
        critic = llm_critic(fake_openai, tmp_path / "cache.sqlite")
        critic = LLMCritic(LLMConfig(**{**critic.config.to_dict(), "transport": critic.config.transport,
                                        "base_url": f"{fake_openai.base_url}, {second.base_url}"}),
                           cache=critic.cache)  # fmt: skip
        result = run(lbf_dataset, critic)
        assert (result.episodes, result.failed) == (8, 0)
        assert fake_openai.request_count == second.request_count == 4  # round-robin over the two servers
    assert_expected_credits(lbf_dataset, "expert", EXPERT)
    with pytest.raises(ConfigError, match="http\\(s\\) URLs separated by commas"):
        LLMConfig(base_url="http://a/v1,127.0.0.1:8000/v1", model="m")
    with pytest.raises(ConfigError, match="one --base-url"):
        LLMConfig(base_url="http://a/v1,http://b/v1", model="m", transport=TransportConfig(mode="batch"))


@pytest.mark.parametrize("response_format", ["json_object", "vllm", "none"])
def test_happy_path_stores_the_replies(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, response_format: str
) -> None:
    serve(fake_openai)
    critic = llm_critic(fake_openai, tmp_path / "cache.sqlite", response_format=response_format)
    result = run(lbf_dataset, critic)

    assert (result.critic_id, result.episodes, result.failed, result.skipped) == ("llm-mca", 8, 0, 0)
    sent = bodies(fake_openai)
    assert len(sent) == 8 and duplicates(sent) == 0
    assert requested_episodes(fake_openai) == set(EXPERT)
    for body in sent:
        assert body["model"] == "fake-model"
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        if response_format == "json_object":
            assert body["response_format"]["type"] == "json_object" and "schema" in body["response_format"]
        elif response_format == "vllm":  # vLLM's structured-output field, the schema the reply is checked on
            assert "response_format" not in body and body["structured_outputs"]["json"]["type"] == "object"
        else:
            assert "response_format" not in body and "grammar" not in body
    assert result.tokens_in == sum(prompt_tokens(b) for b in sent)

    assert_expected_credits(lbf_dataset, "expert", EXPERT)
    assert not has_column(lbf_dataset, "random", "credit_llm_mca")  # the tier filter held
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    assert set(rows) == set(EXPERT)
    lengths = episode_lengths(lbf_dataset, "expert")
    requests = {e: b[0] for e, b in by_episode(fake_openai).items()}
    for episode_id, row in rows.items():
        asked = AskedEpisode(episode_id, 0, lengths[episode_id])
        text = valid_reply_for(requests[episode_id])
        assert row["status"] == "ok" and row["error"] == ""
        assert row["rationale"] == [rationale_text(a, asked) for a in AGENTS]
        assert row["summary"] == summary_text(asked)
        assert row["model"] == "fake-model"
        assert row["prompt_version"] == prompt_version(ENV, "llm-mca") != ""
        assert row["tokens_in"] == prompt_tokens(requests[episode_id])
        assert row["tokens_out"] == completion_tokens(text)
        assert row["raw_response"] == text
        assert row["latency_s"] > 0 and row["cost_usd"] == 0.0
        params = json.loads(row["params"])
        assert (params["critic"], params["model"], params["response_format"]) == (
            "llm-mca",
            "fake-model",
            response_format,
        )
    info = json.loads((lbf_dataset / "meta/info.json").read_text())
    assert info["critics"]["llm-mca"]["column"] == "credit_llm_mca"
    assert pq.read_schema(lbf_dataset / steps_rel("expert")).field("credit_llm_mca").type == fsl(pa.float32(), 2)
    report = validate(lbf_dataset)
    assert report.ok, report.problems


def test_rerun_is_free(lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    serve(fake_openai)
    cache = tmp_path / "cache.sqlite"
    run(lbf_dataset, llm_critic(fake_openai, cache))
    assert fake_openai.request_count == 8
    credits = column_by_episode(lbf_dataset, "expert", "credit_llm_mca")
    rows = annotation_rows(lbf_dataset, "expert")

    forced = run(lbf_dataset, llm_critic(fake_openai, cache), force=True)
    assert (forced.episodes, forced.failed) == (8, 0)
    assert fake_openai.request_count == 8, "a forced rerun with the same cache sent requests"
    again = column_by_episode(lbf_dataset, "expert", "credit_llm_mca")
    for episode_id in EXPERT:
        np.testing.assert_array_equal(again[episode_id], credits[episode_id])
    assert annotation_rows(lbf_dataset, "expert") == rows  # replaced by identical rows, not duplicated

    manifest = Manifest.load(lbf_dataset).files
    plain = run(lbf_dataset, llm_critic(fake_openai, cache))
    assert (plain.episodes, plain.skipped, plain.shards) == (0, 8, [])
    assert fake_openai.request_count == 8
    assert Manifest.load(lbf_dataset).files == manifest
    assert validate(lbf_dataset).ok


TRANSIENT: dict[str, tuple[Behaviour, float]] = {
    "429": (status(429), 5.0),
    "429-retry-after": (status(429, retry_after="0.4"), 5.0),
    "500": (status(500), 5.0),
    "hang": (hang(10.0), 1.5),
    "drop": (drop(), 5.0),
}


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_transient_fault_then_success(lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, fault: str) -> None:
    behaviour, timeout_s = TRANSIENT[fault]
    serve(fake_openai, Script().on(12, behaviour))
    critic = llm_critic(fake_openai, tmp_path / "cache.sqlite", timeout_s=timeout_s)
    result = run(lbf_dataset, critic, limit=2)

    assert (result.episodes, result.failed) == (2, 0)
    sent = by_episode(fake_openai)
    assert [len(sent[12]), len(sent[13])] == [2, 1]
    assert messages_key(sent[12][0]) == messages_key(sent[12][1])  # the transport retry resends the same request
    assert duplicates(bodies(fake_openai)) == 1
    rows = check_terminal(lbf_dataset, "expert", (12, 13))
    assert set(rows) == {12, 13} and {r["status"] for r in rows.values()} == {"ok"}
    assert_expected_credits(lbf_dataset, "expert", (12, 13))
    if fault == "429-retry-after":
        arrivals = [r.time for r in fake_openai.requests if parse_request(r.body).episode_ids == (12,)]
        assert arrivals[1] - arrivals[0] >= 0.4, "Retry-After was not honoured"
    assert validate(lbf_dataset).ok


MUTATORS: dict[str, Callable[[str], str]] = {
    "non-json": non_json,
    "wrong-agent-id": wrong_agent_id,
    "wrong-length": wrong_credit_count,
    "cut-mid-string": cut_mid_string,
    "nan-credit": nan_credit_reply,
}


@pytest.mark.parametrize("mutator", list(MUTATORS))
def test_invalid_reply_is_repaired_by_one_corrective_retry(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, mutator: str
) -> None:
    serve(fake_openai, Script().on(12, MUTATORS[mutator]))
    result = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "cache.sqlite"), limit=2)

    assert (result.episodes, result.failed) == (2, 0)
    sent = by_episode(fake_openai)
    assert [len(sent[12]), len(sent[13])] == [2, 1]
    first, retry = sent[12]
    bad = MUTATORS[mutator](valid_reply_for(first))
    length = episode_lengths(lbf_dataset, "expert")[12]
    with pytest.raises(ReplyError) as err:
        parse_reply(bad, agent_ids=AGENTS, episodes=[(12, length)], with_tasks=False, n_tasks=None)
    assert retry["messages"][:2] == first["messages"]
    assert retry["messages"][2] == {"role": "assistant", "content": bad}
    assert str(err.value) in last_user_message(retry), "the corrective retry does not quote the validation error"
    assert duplicates(bodies(fake_openai)) == 0

    rows = check_terminal(lbf_dataset, "expert", (12, 13))
    assert (rows[12]["status"], rows[13]["status"]) == ("repaired", "ok")
    assert rows[12]["raw_response"] == valid_reply_for(retry)
    assert rows[12]["tokens_in"] == prompt_tokens(first) + prompt_tokens(retry)
    assert_expected_credits(lbf_dataset, "expert", (12, 13))
    assert validate(lbf_dataset).ok


@pytest.mark.parametrize("mutator", list(MUTATORS))
def test_two_invalid_replies_fail_with_nan_never_zeros(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path, mutator: str
) -> None:
    second = MUTATORS[mutator]
    serve(fake_openai, Script().on(12, non_json if mutator != "non-json" else wrong_agent_id, second))
    result = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "cache.sqlite"), limit=2)

    assert (result.episodes, result.failed) == (2, 1)
    sent = by_episode(fake_openai)
    assert [len(sent[12]), len(sent[13])] == [2, 1], "more than one corrective retry"
    rows = check_terminal(lbf_dataset, "expert", (12, 13))
    assert (rows[12]["status"], rows[13]["status"]) == ("failed", "ok")
    bad = second(valid_reply_for(sent[12][1]))
    length = episode_lengths(lbf_dataset, "expert")[12]
    with pytest.raises(ReplyError) as err:
        parse_reply(bad, agent_ids=AGENTS, episodes=[(12, length)], with_tasks=False, n_tasks=None)
    assert rows[12]["error"] == f"steps 0-{length - 1}: {err.value}"  # the second reply's error
    assert rows[12]["rationale"] == ["", ""] and rows[12]["summary"] == ""
    assert rows[12]["raw_response"] == bad
    credits = column_by_episode(lbf_dataset, "expert", "credit_llm_mca")
    assert np.isnan(credits[12]).all() and not (credits[12] == 0).any()
    assert_expected_credits(lbf_dataset, "expert", (13,))
    assert validate(lbf_dataset).ok


def test_exhausted_retries_fail_and_a_rerun_retries_only_them(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai, Script().on(13, status(500), status(503)))
    cache = tmp_path / "cache.sqlite"
    result = run(lbf_dataset, llm_critic(fake_openai, cache, max_retries=1))

    assert (result.episodes, result.failed) == (8, 1)
    assert len(by_episode(fake_openai)[13]) == 2
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    assert rows[13]["status"] == "failed"
    assert "failed after 2 attempts" in rows[13]["error"] and "HTTP 503" in rows[13]["error"]
    assert {rows[e]["status"] for e in EXPERT if e != 13} == {"ok"}
    assert duplicates(bodies(fake_openai)) == 1
    assert validate(lbf_dataset).ok

    before = fake_openai.request_count
    rerun = run(lbf_dataset, llm_critic(fake_openai, cache, max_retries=1))
    assert (rerun.episodes, rerun.skipped, rerun.failed) == (1, 7, 0)
    assert requested_episodes(fake_openai, before) == {13}
    assert fake_openai.request_count == before + 1
    assert duplicates(bodies(fake_openai)) == 2  # both deliberate: after a 503 and after the failed run
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert_expected_credits(lbf_dataset, "expert", EXPERT)
    assert validate(lbf_dataset).ok


def test_a_rerun_asks_again_for_episodes_whose_replies_were_invalid(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai, Script().on(12, non_json, non_json))
    cache = tmp_path / "cache.sqlite"
    first = run(lbf_dataset, llm_critic(fake_openai, cache), limit=2)
    assert first.failed == 1 and fake_openai.request_count == 3

    rerun = run(lbf_dataset, llm_critic(fake_openai, cache), limit=2)
    assert (rerun.episodes, rerun.skipped) == (1, 1)
    assert requested_episodes(fake_openai, 3) == {12}, "the rerun did not ask the server again"
    rows = check_terminal(lbf_dataset, "expert", (12, 13))
    assert rows[12]["status"] == "ok"


def test_limit_touches_the_first_episodes_in_id_order(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai)
    cache = tmp_path / "cache.sqlite"
    result = annotate(lbf_dataset, llm_critic(fake_openai, cache), envs=(ENV,), limit=3)

    assert (result.episodes, result.failed) == (3, 0)
    assert requested_episodes(fake_openai) == {0, 1, 2}
    assert fake_openai.request_count == 6  # 50-step episodes: two windows each
    rows = check_terminal(lbf_dataset, "random", (0, 1, 2))
    assert set(rows) == {0, 1, 2}
    credits = column_by_episode(lbf_dataset, "random", "credit_llm_mca")
    assert_expected_credits(lbf_dataset, "random", (0, 1, 2))
    assert all(np.isnan(credits[e]).all() for e in RANDOM[3:])
    assert not has_column(lbf_dataset, "expert", "credit_llm_mca")
    assert not (lbf_dataset / annotations_rel("expert")).exists()

    forced = annotate(lbf_dataset, llm_critic(fake_openai, cache), envs=(ENV,), limit=3, force=True)
    assert (forced.episodes, forced.skipped) == (3, 0)
    assert fake_openai.request_count == 6  # the same episodes again, all from the cache
    assert set(annotation_rows(lbf_dataset, "random")) == {0, 1, 2}

    more = annotate(lbf_dataset, llm_critic(fake_openai, cache), envs=(ENV,), limit=5)
    assert (more.episodes, more.skipped) == (2, 3)
    assert requested_episodes(fake_openai, 6) == {3, 4}
    assert set(check_terminal(lbf_dataset, "random", (0, 1, 2, 3, 4))) == {0, 1, 2, 3, 4}
    assert duplicates(bodies(fake_openai)) == 0
    assert validate(lbf_dataset).ok


def test_dry_run_counts_requests_and_tokens_without_sending(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai)
    critic = llm_critic(fake_openai, tmp_path / "cache.sqlite", price_in=2.0, price_out=8.0)
    manifest = Manifest.load(lbf_dataset).files
    totals = dry_run(lbf_dataset, critic, (ENV,), ("expert",))
    assert fake_openai.request_count == 0 and fake_openai.model_requests == 0
    assert Manifest.load(lbf_dataset).files == manifest
    assert (totals["episodes"], totals["requests"], totals["cached"]) == (8, 8, 0)
    cost = (totals["prompt_tokens"] * 2.0 + totals["max_output_tokens"] * 8.0) / 1e6
    assert totals["estimated_cost_usd"] == pytest.approx(cost)

    run(lbf_dataset, critic)
    sent = bodies(fake_openai)
    assert len(sent) == totals["requests"]
    assert totals["prompt_tokens"] == sum(estimate_tokens("".join(m["content"] for m in b["messages"])) for b in sent)
    assert sum(b["max_tokens"] for b in sent) == totals["max_output_tokens"]

    again = dry_run(lbf_dataset, critic, (ENV,), ("expert",), force=True)
    assert (again["requests"], again["cached"]) == (8, 8)
    assert dry_run(lbf_dataset, critic, (ENV,), ("expert",))["episodes"] == 0
    assert fake_openai.request_count == 8


def test_cli_dry_run_prints_json_and_sends_nothing(lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    serve(fake_openai)
    manifest = Manifest.load(lbf_dataset).files
    env = {**os.environ, "LLMCA_CACHE_DIR": str(tmp_path / "cli-cache")}
    args = ["annotate", str(lbf_dataset), "--critic", "llm-mca", "--base-url", fake_openai.base_url]
    args += ["--model", "fake-model", "--env", ENV, "--dry-run"]
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    totals = json.loads(done.stdout)
    assert (totals["episodes"], totals["requests"], totals["cached"]) == (20, 32, 0)  # random episodes: 2 windows

    same = llm_critic(fake_openai, tmp_path / "other.sqlite", response_format="grammar", timeout_s=300.0)
    assert totals == dry_run(lbf_dataset, same, (ENV,))
    assert fake_openai.request_count == 0 and fake_openai.model_requests == 0
    assert Manifest.load(lbf_dataset).files == manifest


def test_max_cost_stops_sending_and_keeps_finished_work(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai)
    cache = tmp_path / "cache.sqlite"
    prices = {"price_in": 1000.0, "price_out": 1000.0}
    estimate = dry_run(lbf_dataset, llm_critic(fake_openai, cache, **prices), (ENV,), ("expert",))
    budget = 0.45 * estimate["estimated_cost_usd"]
    result = run(lbf_dataset, llm_critic(fake_openai, cache, max_cost=budget, **prices))

    sent = fake_openai.request_count
    assert 0 < sent < 8, f"{sent} requests for 8 episodes under a budget of 45% of the estimate"
    asked = requested_episodes(fake_openai)
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    for episode_id in EXPERT:
        if episode_id in asked:
            assert rows[episode_id]["status"] == "ok"
        else:
            assert rows[episode_id]["status"] == "failed" and "--max-cost" in rows[episode_id]["error"]
    assert result.failed == 8 - sent
    assert result.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
    assert 0 < result.cost_usd <= budget
    assert result.cost_usd == pytest.approx(
        sum(prompt_tokens(b) + completion_tokens(valid_reply_for(b)) for b in bodies(fake_openai)) * 1e-3
    )
    assert_expected_credits(lbf_dataset, "expert", tuple(sorted(asked)))
    assert validate(lbf_dataset).ok

    rest = run(lbf_dataset, llm_critic(fake_openai, cache, **prices))
    assert (rest.episodes, rest.skipped, rest.failed) == (8 - sent, sent, 0)
    assert fake_openai.request_count == 8 and duplicates(bodies(fake_openai)) == 0
    assert_expected_credits(lbf_dataset, "expert", EXPERT)


def reversed_batch(body: dict[str, Any]) -> str:
    """A valid batch reply with its episodes in reverse order (tolerated: status repaired)."""
    obj = json.loads(valid_reply_for(body))
    obj["episodes"].reverse()
    return json.dumps(obj)


def test_batch_mode_splits_each_reply_back_to_its_episodes(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai)
    result = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "a.sqlite", episodes_per_prompt=3))

    assert (result.episodes, result.failed) == (8, 0)
    sent = bodies(fake_openai)
    assert [parse_request(b).episode_ids for b in sent] == [(12, 13, 14), (15, 16, 17), (18, 19)]
    assert all("episodes" in b["response_format"]["schema"]["properties"] for b in sent)
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    assert {r["status"] for r in rows.values()} == {"ok"}
    lengths = episode_lengths(lbf_dataset, "expert")
    for episode_id, row in rows.items():
        assert row["summary"] == summary_text(AskedEpisode(episode_id, 0, lengths[episode_id]))
    assert rows[12]["tokens_in"] == prompt_tokens(sent[0]) // 3
    assert_expected_credits(lbf_dataset, "expert", EXPERT)
    assert validate(lbf_dataset).ok

    fake_openai.default = responder(reversed_batch)
    again = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "b.sqlite", episodes_per_prompt=3), force=True)
    assert (again.episodes, again.failed) == (8, 0)
    assert fake_openai.request_count == 6
    rows = check_terminal(lbf_dataset, "expert", EXPERT)
    assert {r["status"] for r in rows.values()} == {"repaired"}
    assert_expected_credits(lbf_dataset, "expert", EXPERT)


def test_llm_taca_stores_tasks_and_minus_one_where_failed(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    def out_of_range(text: str) -> str:
        return task_out_of_range(text, 2)

    serve(fake_openai, Script().on(12, out_of_range, out_of_range).on(13, out_of_range))
    result = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "cache.sqlite", critic="llm-taca"))

    assert (result.critic_id, result.episodes, result.failed) == ("llm-taca", 8, 1)
    first = bodies(fake_openai)[0]
    asked = parse_request(first)
    assert asked.wants_tasks and asked.n_tasks == 2  # LBF: two foods, tasks 0..1
    assert "task 2 is out of range" in last_user_message(by_episode(fake_openai)[13][1])
    schema = pq.read_schema(lbf_dataset / steps_rel("expert"))
    assert schema.field("task_llm_taca").type == fsl(pa.int16(), 2)
    rows = check_terminal(lbf_dataset, "expert", EXPERT, critic_id="llm-taca")
    assert (rows[12]["status"], rows[13]["status"]) == ("failed", "repaired")
    assert {rows[e]["status"] for e in EXPERT[2:]} == {"ok"}
    tasks = column_by_episode(lbf_dataset, "expert", "task_llm_taca")
    lengths = episode_lengths(lbf_dataset, "expert")
    assert (tasks[12] == -1).all()
    for episode_id in EXPERT[1:]:
        np.testing.assert_array_equal(tasks[episode_id], expected_tasks(episode_id, lengths[episode_id], N_AGENTS, 2))
    assert_expected_credits(lbf_dataset, "expert", EXPERT[1:], column="credit_llm_taca")
    assert validate(lbf_dataset).ok


TIMESTEP_LINE = re.compile(r"^t=(\d+) r=(-?\d+\.\d\d) \|", re.MULTILINE)


def test_delayed_team_reward_shows_all_reward_at_the_last_step(
    lbf_dataset: Path, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    serve(fake_openai)
    result = run(lbf_dataset, llm_critic(fake_openai, tmp_path / "cache.sqlite", team_reward="delayed"))

    assert (result.critic_id, result.episodes, result.failed) == ("llm-mca-delayed", 8, 0)
    assert has_column(lbf_dataset, "expert", "credit_llm_mca_delayed")
    assert not has_column(lbf_dataset, "expert", "credit_llm_mca")
    table = read_shard(lbf_dataset / steps_rel("expert"), ["episode_id", "reward_team"])
    ids, reward = table.column("episode_id").to_numpy(), table.column("reward_team").to_numpy()
    rewarded_early = 0
    for episode_id, (body,) in by_episode(fake_openai).items():
        lines = TIMESTEP_LINE.findall(first_user_message(body))
        r = reward[ids == episode_id]
        assert [int(t) for t, _ in lines] == list(range(len(r)))
        shown = [float(v) for _, v in lines]
        assert shown[:-1] == [0.0] * (len(r) - 1)
        assert shown[-1] == pytest.approx(round(float(r.sum()), 2), abs=1e-9)
        rewarded_early += bool(np.abs(r[:-1]).sum() > 0)
    assert rewarded_early > 0, "no episode had reward before its last step: the check proves nothing"
    check_terminal(lbf_dataset, "expert", EXPERT, critic_id="llm-mca-delayed")
    assert_expected_credits(lbf_dataset, "expert", EXPERT, column="credit_llm_mca_delayed")
    assert validate(lbf_dataset).ok


def test_kill_and_resume_sends_nothing_twice(
    lbf_dataset: Path,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    poll: Callable[[Callable[[], bool], float], None],
) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(lbf_dataset, pristine)
    script = serve(fake_openai, Script(delay_s=0.3))
    env = {**os.environ, "LLMCA_CACHE_DIR": str(tmp_path / "cli-cache")}
    args = ["annotate", str(lbf_dataset), "--critic", "llm-mca", "--base-url", fake_openai.base_url]
    args += ["--model", "fake-model", "--limit", "6", "--env", ENV, "--timeout", "5"]
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # concurrency 1: the third request arrives only once the second was answered (and cached)
            poll(lambda: fake_openai.request_count >= 3 or proc.poll() is not None, 90.0)
            assert proc.poll() is None, f"the run ended before it was killed: {log.read_text()}"
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    killed = bodies(fake_openai)
    assert 3 <= len(killed) < 12
    report = validate(lbf_dataset)
    assert report.ok, report.problems
    assert not has_column(lbf_dataset, "random", "credit_llm_mca")  # nothing committed before all replies

    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = bodies(fake_openai, len(killed))
    assert duplicates(resumed) == 0
    resent = {messages_key(b) for b in resumed} & {messages_key(b) for b in killed}
    # only the request in flight at the kill (never answered to the client) may be sent again
    assert resent <= {messages_key(killed[-1])}
    everything = killed + resumed
    distinct = {messages_key(b) for b in everything}
    assert len(everything) == len(distinct) + len(resent)
    assert len(distinct) == 12  # 6 episodes × 2 windows
    rows = check_terminal(lbf_dataset, "random", RANDOM[:6])
    assert set(rows) == set(RANDOM[:6]) and {r["status"] for r in rows.values()} == {"ok"}
    assert validate(lbf_dataset).ok

    script.delay_s = 0.0
    before = fake_openai.request_count
    critic = llm_critic(fake_openai, tmp_path / "fresh.sqlite", response_format="grammar")
    straight = annotate(pristine, critic, envs=(ENV,), limit=6)
    assert (straight.episodes, straight.failed) == (6, 0)
    assert {messages_key(b) for b in bodies(fake_openai, before)} == distinct  # answered identically
    ours = column_by_episode(lbf_dataset, "random", "credit_llm_mca")
    theirs = column_by_episode(pristine, "random", "credit_llm_mca")
    for episode_id in RANDOM:
        np.testing.assert_array_equal(ours[episode_id], theirs[episode_id])
    plain = annotation_rows(pristine, "random")
    for episode_id, row in rows.items():
        for key in ("status", "rationale", "summary", "raw_response", "tokens_in", "tokens_out"):
            assert row[key] == plain[episode_id][key], key
