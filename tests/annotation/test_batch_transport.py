"""The Batch API transport (``--transport batch``) end to end against a real HTTP fake of the Files
and Batches endpoints (``fake_batches``): a real LBF dataset, real replay and prompts, real
validation; each case ends with exactly one terminal status per episode and no request paid twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_batches import FakeBatchAPI, Outcome
from llm_replies import expected_credits, parse_request, valid_reply_for

from llmca_data.annotation.annotate import AnnotateResult, annotate, llm_dry_run
from llmca_data.annotation.llm.batch import BatchLine, split_parts
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
from llmca_data.annotation.llm.critic import LLMCritic
from llmca_data.config import ConfigError
from llmca_data.schema import from_fsl
from llmca_data.shards import read_shard

ENV = "lbf-8x8-2p-2f"
EXPERT = tuple(range(12, 20))
PRICES = {"price_in": 2.0, "price_out": 8.0}


def critic_for(api: FakeBatchAPI, cache: Path, **transport: Any) -> LLMCritic:
    settings = {"max_retries": 3, "backoff_s": 0.0, "timeout_s": 5.0, "batch_poll_s": 0.0, "mode": "batch", **PRICES}
    config = LLMConfig(base_url=api.base_url, model="fake-model", response_format="json_object",
                       transport=TransportConfig(**{**settings, **transport}))  # fmt: skip
    return LLMCritic(config, cache=ReplyCache(cache))


def run(root: Path, critic: LLMCritic) -> AnnotateResult:
    try:
        return annotate(root, critic, envs=(ENV,), tiers=("expert",))
    finally:
        critic.close()


def rows(root: Path) -> dict[int, dict[str, Any]]:
    table = read_shard(root / f"data/{ENV}/annotations/expert-00000.parquet").to_pylist()
    found = [r for r in table if r["critic"] == "llm-mca"]
    assert len(found) == len({r["episode_id"] for r in found}), "an episode has two annotations rows"
    return {r["episode_id"]: r for r in found}


def credits(root: Path) -> dict[int, np.ndarray]:
    table = read_shard(root / f"data/{ENV}/steps/expert-00000.parquet", ["episode_id", "credit_llm_mca"])
    values, ids = from_fsl(table.column("credit_llm_mca"), (2,)), table.column("episode_id").to_numpy()
    return {int(e): values[ids == e] for e in np.unique(ids)}


def answer_with(broken: set[int]) -> Callable[[dict[str, Any]], str]:
    """Valid replies, except the first ask about an episode in ``broken`` (its corrective retry is answered)."""

    def answer(body: dict[str, Any]) -> str:
        first_ask = len(body["messages"]) == 2
        return (
            "not json" if first_ask and parse_request(body).episodes[0].episode_id in broken else valid_reply_for(body)
        )

    return answer


def assert_ok(root: Path, statuses: tuple[str, ...] = ("ok",)) -> None:
    found, got = rows(root), credits(root)
    assert set(found) == set(EXPERT)
    for episode_id, row in found.items():
        assert row["status"] in statuses, (episode_id, row["error"])
        np.testing.assert_array_equal(got[episode_id], expected_credits(episode_id, len(got[episode_id]), 2))


def test_one_batch_answers_every_episode_at_batch_prices(lbf_dataset: Path, tmp_path: Path) -> None:
    with FakeBatchAPI(valid_reply_for) as api:
        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"))
        assert (result.failed, api.uploads, api.creates) == (0, 1, 1)
        assert len(api.answered) == len(set(api.answered)) == len(EXPERT)
        assert_ok(lbf_dataset)
        for row in rows(lbf_dataset).values():  # half the interactive price of the tokens used
            assert row["cost_usd"] == pytest.approx(0.5 * (row["tokens_in"] * 2.0 + row["tokens_out"] * 8.0) / 1e6)
            assert json.loads(row["params"])["transport"]["mode"] == "batch"
        batch = next(iter(api.batches.values()))
        assert batch["endpoint"] == "/v1/chat/completions" and batch["completion_window"] == "24h"
        assert len(batch["metadata"]["llmca_part"]) == 64
        line = json.loads(api.files[batch["input_file_id"]].splitlines()[0])
        assert line["body"]["response_format"]["type"] == "json_object" and line["body"]["model"] == "fake-model"

        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"))  # nothing left to ask
        assert (api.uploads, api.creates) == (1, 1)


def test_an_invalid_reply_is_corrected_in_a_second_batch_round(lbf_dataset: Path, tmp_path: Path) -> None:
    with FakeBatchAPI(answer_with({13, 15})) as api:
        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"))
        assert (result.failed, api.creates) == (0, 2)  # the retries went out as a batch, never interactively
        second = api.files[list(api.batches.values())[1]["input_file_id"]].splitlines()
        assert sorted(parse_request(json.loads(x)["body"]).episodes[0].episode_id for x in second) == [13, 15]
        assert "That reply was invalid" in json.loads(second[0])["body"]["messages"][-1]["content"]
        assert_ok(lbf_dataset, ("ok", "repaired"))
        assert {e for e, r in rows(lbf_dataset).items() if r["status"] == "repaired"} == {13, 15}


def test_errors_expiry_failure_and_poll_faults_end_in_one_status_per_episode(lbf_dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeBatchAPI(valid_reply_for) as api:
        api.push(Outcome("partial", fail_lines=(2,)))
        api.poll_faults += [429, 500, 503]
        result = run(lbf_dataset, critic_for(api, cache))
        failed = {e: r for e, r in rows(lbf_dataset).items() if r["status"] == "failed"}
        assert (
            result.failed == len(failed) == 1 and "HTTP 400: bad request line" in next(iter(failed.values()))["error"]
        )
        assert np.isnan(credits(lbf_dataset)[next(iter(failed))]).all()

        api.push(Outcome("expired", done=0))  # the rerun asks only the failed episode; it expires unrun, then runs
        result = run(lbf_dataset, critic_for(api, cache))
        assert (result.failed, api.creates) == (0, 3)
        assert_ok(lbf_dataset)
        # asked twice: only the request whose line got HTTP 400 (an error line is not a paid reply)
        assert len(api.answered) == len(EXPERT) + 1 and len(set(api.answered)) == len(EXPERT)


def test_an_expired_batch_keeps_its_rows_and_the_rest_go_in_the_next_round(lbf_dataset: Path, tmp_path: Path) -> None:
    with FakeBatchAPI(valid_reply_for) as api:
        api.push(Outcome("expired", done=3))
        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite", batch_max_requests=5))
        assert result.failed == 0 and api.creates == 3  # parts of 5 + 3 requests; the 2 never run asked again
        assert len(api.answered) == len(set(api.answered)) == len(EXPERT)
        assert_ok(lbf_dataset)


def test_a_failed_batch_fails_its_episodes_with_the_reason_and_a_rerun_retries(
    lbf_dataset: Path, tmp_path: Path
) -> None:
    with FakeBatchAPI(valid_reply_for) as api:
        api.push(Outcome("failed"))
        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"))
        assert result.failed == len(EXPERT) and not api.answered
        assert all("model not found" in r["error"] for r in rows(lbf_dataset).values())
        assert all(np.isnan(c).all() for c in credits(lbf_dataset).values())
        result = run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"))
        assert result.failed == 0 and api.creates == 2 and api.uploads == 2
        assert_ok(lbf_dataset)


def test_a_driver_killed_after_submitting_resumes_the_same_batch(lbf_dataset: Path, tmp_path: Path, poll: Any) -> None:
    env = {**os.environ, "LLMCA_CACHE_DIR": str(tmp_path)}
    with FakeBatchAPI(valid_reply_for) as api:
        api.push(Outcome("hold"))
        cmd = [sys.executable, "-c", "from llmca_data.cli import main; main()", "annotate", str(lbf_dataset),
               "--critic", "llm-mca", "--env", ENV, "--tier", "expert", "--base-url", api.base_url,
               "--model", "fake-model", "--response-format", "json_object", "--transport", "batch"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            poll(lambda: api.creates == 1 or proc.poll() is not None, 120.0)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        finally:
            proc.kill()
            proc.wait()
        api.release()
        result = run(lbf_dataset, critic_for(api, tmp_path / "llm-cache.sqlite"))
        assert result.failed == 0 and (api.uploads, api.creates) == (1, 1)  # found again, not resubmitted
        assert len(api.answered) == len(set(api.answered)) == len(EXPERT)
        assert_ok(lbf_dataset)


def test_parts_respect_the_request_and_byte_limits() -> None:
    lines = [BatchLine(f"{k:064x}", "v", {"messages": [{"role": "user", "content": "x" * (10 * k)}]}) for k in range(9)]
    sizes = [len(line.jsonl()) for line in lines]
    parts = split_parts(lines, 4, max(sizes) * 2)
    assert [line for part in parts for line in part] == lines
    assert all(len(p) <= 4 and sum(len(x.jsonl()) for x in p) <= max(sizes) * 2 for p in parts)
    assert [len(p) for p in split_parts(lines, 4, 10**9)] == [4, 4, 1]


def test_dry_run_prices_batch_requests_at_half(lbf_dataset: Path, tmp_path: Path) -> None:
    with FakeBatchAPI(valid_reply_for) as api:
        batch = llm_dry_run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite"), (ENV,), ("expert",))
        live = llm_dry_run(lbf_dataset, critic_for(api, tmp_path / "c.sqlite", mode="interactive"), (ENV,), ("expert",))
        assert batch["estimated_cost_usd"] == pytest.approx(0.5 * live["estimated_cost_usd"]) and batch["requests"] == 8
        assert api.uploads == 0
    with pytest.raises(ConfigError, match=r"--transport batch .* give --base-url"):
        LLMConfig(transport=TransportConfig(mode="batch"))
    with pytest.raises(ConfigError, match="--transport must be one of interactive, batch"):
        TransportConfig(mode="carrier-pigeon")
