"""`llmca critic-bench`: the versioned bench set (deterministic, cached, resumable, a valid dataset),
scoring critics in the plain and delayed settings, the critic leaderboard, and an LLM critic
against the fault-injecting fake server. Small sets built in tmp; real envs, real Parquet."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_openai import Behaviour, FakeOpenAI, responder
from llm_replies import parse_request, valid_reply_for
from typer.testing import CliRunner

from llmca_data.annotation.bench import ALL, BenchRun, score_bench, write_results
from llmca_data.annotation.bench_set import (
    BENCH_VERSION,
    Bench,
    BenchConfig,
    BenchEnv,
    BenchError,
    ensure_bench,
    open_bench,
)
from llmca_data.annotation.llm.config import LLMConfig, TransportConfig
from llmca_data.annotation.registry import CriticOptions
from llmca_data.cli import app
from llmca_data.dataset import Dataset
from llmca_data.errors import UnknownCriticError
from llmca_data.info import load_info
from llmca_data.leaderboard.critics import CRITICS_FILE, CriticResultsError, load_critic_results, render_critics
from llmca_data.schema import from_fsl
from llmca_data.validate import validate

TINY = replace(BenchConfig().small(1), envs=(BenchEnv("lbf-8x8-2p-2f", 2), BenchEnv("spaceworld-10x10-3a", 1)))
"""Two envs, a few episodes: for the build tests."""
REFS = ("shapley", "counterfactual", "counterfactual-h5")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """The default set's four envs, two episodes per env and tier (built once for the module)."""
    return ensure_bench(tmp_path_factory.mktemp("bench") / "v1", BenchConfig().small(2))


def overall(results: dict[str, Any], setting: str) -> dict[str, Any]:
    entry = next(s for s in results["settings"] if s["setting"] == setting)
    row: dict[str, Any] = next(r for r in entry["rows"] if r["env_id"] == ALL)
    return row


def snapshot(root: Path) -> dict[str, pa.Table]:
    ds = Dataset.open(root)
    return {str(n): ds.read(n) for n in ds.shards(kind="steps")}


def test_build_is_deterministic_cached_versioned_and_a_valid_dataset(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    first = ensure_bench(tmp_path / "a", TINY, progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls and calls[-1][0] == calls[-1][1] and any("annotate counterfactual-h5" in c[2] for c in calls)
    assert validate(first.root).ok
    recipe = load_info(first.root)["recipe"]
    assert recipe["bench_version"] == BENCH_VERSION and recipe["config"] == TINY.to_dict()
    columns = next(iter(snapshot(first.root).values())).column_names
    assert {f"credit_{r.replace('-', '_')}" for r in REFS} <= set(columns)

    second = ensure_bench(tmp_path / "b", TINY)
    a, b = snapshot(first.root), snapshot(second.root)
    assert list(a) == list(b) and all(a[k].equals(b[k]) for k in a), "two builds differ"

    manifest = first.root / "meta" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = ensure_bench(first.root, TINY, progress=lambda d, t, s: calls.append((-1, -1, s)))
    assert again == first and manifest.stat().st_mtime_ns == stamp and calls[-1][0] != -1, "a cached set was rebuilt"
    assert open_bench(first.root).config == TINY
    with pytest.raises(BenchError, match="another config"):
        ensure_bench(first.root, BenchConfig().small(3))


def test_a_killed_build_resumes_and_is_never_used_half_built(tmp_path: Path) -> None:
    root = tmp_path / "set"

    def kill(done: int, total: int, status: str) -> None:
        if status.startswith("annotate counterfactual"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_bench(root, TINY, progress=kill)
    assert not root.exists() and (tmp_path / ".set.partial").is_dir()
    resumed = ensure_bench(root, TINY)
    assert not (tmp_path / ".set.partial").exists() and validate(resumed.root).ok
    fresh = ensure_bench(tmp_path / "fresh", TINY)
    a, b = snapshot(resumed.root), snapshot(fresh.root)
    assert all(a[k].equals(b[k]) for k in b)


def test_scores_in_both_settings_and_the_critic_leaderboard(bench: Bench, tmp_path: Path) -> None:
    critics = ("uniform", "env", "evidence-split", "random-share", "shapley")
    results = {c: score_bench(bench, BenchRun(c)) for c in critics}
    for critic, res in results.items():
        assert [s["setting"] for s in res["settings"]] == ["plain", "delayed"]
        assert res["bench_version"] == BENCH_VERSION and res["references"] == list(REFS)
        for entry in res["settings"]:
            assert entry["oracle"] == (critic == "shapley")
            assert [r["env_id"] for r in entry["rows"]] == [*bench.env_ids, ALL]
            assert all(r["validity"] == 1.0 and r["scores"]["shapley"]["coverage"] == 1.0 for r in entry["rows"])
        write_results(tmp_path / "results" / f"{critic}.json", res)
    for setting in ("plain", "delayed"):
        same = overall(results["shapley"], setting)["scores"]["shapley"]
        assert same["spearman"] == same["top_agent_accuracy"] == same["episode_total_pearson"] == 1.0
        assert overall(results["uniform"], setting)["scores"]["shapley"]["top_agent_accuracy"] == 0.0
    env_plain = overall(results["env"], "plain")["scores"]["shapley"]
    env_delayed = overall(results["env"], "delayed")["scores"]["shapley"]
    assert env_plain["top_agent_accuracy"] >= 0.9 and env_plain["sign_agreement"] >= 0.9
    assert env_delayed["top_agent_accuracy"] < env_plain["top_agent_accuracy"]
    evidence = overall(results["evidence-split"], "plain")["scores"]["shapley"]
    assert evidence["top_agent_accuracy"] >= 0.8
    rerun = score_bench(bench, BenchRun("random-share", ("plain",)))
    assert overall(rerun, "plain")["scores"] == overall(results["random-share"], "plain")["scores"]

    rows = load_critic_results(tmp_path / "results")
    assert {(r.critic, r.setting) for r in rows} == {(c, s) for c in results for s in ("plain", "delayed")}
    table = render_critics(tmp_path / "results", tmp_path / "site").read_text()
    shapley_rows = [line for line in table.splitlines() if line.startswith("| shapley |")]
    assert len(shapley_rows) == 2 and all("| yes |" in line for line in shapley_rows)
    assert "| evidence-split | — | plain | no |" in table
    assert f"| shapley | — | plain | yes | {overall(results['shapley'], 'plain')['episodes']} |" in table


def test_bad_results_files_are_refused_by_name(bench: Bench, tmp_path: Path) -> None:
    good = score_bench(bench, BenchRun("uniform", ("plain",), limit=1))
    folder = tmp_path / "results"

    def refused(body: Any, match: str, raw: str | None = None) -> None:
        path = folder / "bad.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(raw if raw is not None else json.dumps(body))
        with pytest.raises(CriticResultsError, match=match) as caught:
            load_critic_results(folder)
        assert str(path) in str(caught.value)
        assert not (tmp_path / "site" / CRITICS_FILE).exists()

    refused(None, "not JSON", raw="{")
    refused(None, "not JSON", raw=json.dumps(good).replace('"validity": 1.0', '"validity": NaN'))
    refused([1], "top level: expected an object")
    refused({**good, "format": "other"}, "format")
    refused({**good, "bench_version": BENCH_VERSION + 1}, "score the critic again")
    refused({**good, "critic": 7}, "critic: expected a string")
    bad_row = json.loads(json.dumps(good))
    bad_row["settings"][0]["rows"][-1]["validity"] = "100%"
    refused(bad_row, r"rows\[all\]\.validity: expected a finite number")
    bad_row["settings"][0]["rows"][-1]["validity"] = 1.5
    refused(bad_row, r"share in \[0, 1\]")
    bad_row["settings"][0]["setting"] = "noisy"
    refused(bad_row, "setting: expected one of plain, delayed")

    refused({**good, "limit": -1}, "limit: expected")

    (folder / "bad.json").write_text(json.dumps({**good, "critic": "[click](https://evil.example)<b>"}))
    table = render_critics(folder, tmp_path / "site").read_text()
    assert r"\[click\]\(https\:\/\/evil\.example\)&lt;b&gt;" in table and "<b>" not in table
    assert "| 4 (first 1/env) |" in table  # scored with --limit 1: the table says so

    (folder / "again.json").write_text(json.dumps({**good, "critic": "[click](https://evil.example)<b>"}))
    with pytest.raises(CriticResultsError, match="keep one of the two files") as caught:
        load_critic_results(folder)
    assert str(folder / "again.json") in str(caught.value) and str(folder / "bad.json") in str(caught.value)
    (folder / "again.json").write_text(json.dumps({**good, "critic": "[click](https://evil.example)<b>", "limit": 0}))
    assert len(load_critic_results(folder)) == 2  # the same critic on the whole set is another row


def test_cli_scores_builtin_and_imported_credits(bench: Bench, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["critic-bench", "--bench-dir", str(bench.root)]
    where = runner.invoke(app, [*base, "--where"])
    assert where.exit_code == 0 and str(bench.root) in where.output
    helped = runner.invoke(app, ["critic-bench", "--help"])
    assert helped.exit_code == 0 and "oracle" in helped.output and "delayed" in helped.output

    out = tmp_path / "env.json"
    done = runner.invoke(app, [*base, "--critic", "env", "--setting", "plain", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "env · plain" in done.output and "counterfactual-h5" in done.output and str(out) in done.output
    scored = json.loads(out.read_text())

    ds, parts = Dataset.open(bench.root), []
    for name in ds.shards(kind="steps"):
        n = ds.schema(name).field("reward_env").type.list_size
        table = ds.read(name, ["episode_id", "t", "reward_env"])
        credit = from_fsl(table.column("reward_env"), (n,)).tolist()
        parts.append(pa.table({"episode_id": table.column("episode_id"), "t": table.column("t"), "credit": credit}))
    credits = tmp_path / "credits.parquet"
    pq.write_table(pa.concat_tables(parts), credits)
    imported_out = tmp_path / "mine.json"
    args = [*base, "--credits", str(credits), "--critic", "my-env", "--out", str(imported_out)]
    assert runner.invoke(app, args).exit_code == 2, "imported credits without --setting were accepted"
    done = runner.invoke(app, [*args, "--setting", "plain"])
    assert done.exit_code == 0, done.output
    imported = json.loads(imported_out.read_text())
    assert imported["imported"] and overall(imported, "plain")["scores"] == overall(scored, "plain")["scores"]

    unknown = runner.invoke(app, [*base, "--critic", "no-such-critic"])
    assert isinstance(unknown.exception, UnknownCriticError) and "evidence" not in str(unknown.exception)


def test_llm_critic_failed_episodes_are_invalid_and_never_scored(bench: Bench, fake_openai: FakeOpenAI) -> None:
    episodes = {env_id: bench.load(env_id)[0] for env_id in bench.env_ids}
    bad = {episodes["lbf-8x8-2p-2f"][0].episode_id, episodes["rware-tiny-2ag"][0].episode_id}

    def answer(body: dict[str, Any]) -> str | Behaviour:
        return "garbage, not JSON" if parse_request(body).episodes[0].episode_id in bad else valid_reply_for(body)

    fake_openai.default = responder(answer)
    transport = TransportConfig(max_retries=0, timeout_s=10.0, backoff_s=0.01, price_in=1.0, price_out=2.0)
    llm = LLMConfig(base_url=fake_openai.base_url, model="fake-model", response_format="json_object",
                    transport=transport)  # fmt: skip
    results = score_bench(bench, BenchRun("llm-mca", limit=2, options=CriticOptions(llm=llm)))
    assert results["model"] == "fake-model" and results["base_url"] == fake_openai.base_url
    assert [s["critic_id"] for s in results["settings"]] == ["llm-mca", "llm-mca-delayed"]
    for entry in results["settings"]:
        assert not entry["oracle"]
        rows = {r["env_id"]: r for r in entry["rows"]}
        for env_id, row in rows.items():
            broken = 0 if env_id in ("lbf-10x10-3p-3f", "spaceworld-10x10-3a") else 2 if env_id == ALL else 1
            assert row["episodes"] - row["valid_episodes"] == broken, env_id
            assert row["validity"] == pytest.approx(row["valid_episodes"] / row["episodes"])
            for scores in row["scores"].values():  # failed episodes are left out, not counted as NaN steps
                assert scores["episodes"] == row["valid_episodes"] and scores["nan_steps"] == 0
            assert row["tokens_in"] > 0 and row["cost_usd"] is not None and row["cost_usd"] > 0
        assert rows[ALL]["validity"] < 1.0
    assert np.isfinite(overall(results, "plain")["scores"]["shapley"]["mae_scaled"])
