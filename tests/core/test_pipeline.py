"""`llmca pipeline` on its embedded defaults (the ``quick`` recipe): the main job of the README."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmca_data.recipe import load_recipe
from llmca_data.validate import validate


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_reruns_for_free(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from llmca_data.cli import main; main()", "pipeline", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert f"dataset: {out / 'dataset'} (valid)" in proc.stdout
    record = json.loads((out / "pipeline.json").read_text())
    assert record["validate"]["ok"] and validate(out / "dataset").ok
    recipe, _ = load_recipe("quick")
    assert record["recipe"] == json.loads(json.dumps(recipe.to_dict()))  # the resolved recipe is recorded
    assert json.loads((out / "dataset" / "meta" / "info.json").read_text())["recipe"] == record["recipe"]
    assert record["schema_version"] == 1 and "lbforaging" in record["versions"]
    stats = {(r["env_id"], r["tier"]): r for r in record["stats"]}
    assert len(stats) == 9
    for env_id in ("lbf-8x8-2p-2f", "spaceworld-10x10-3a", "rware-tiny-2ag"):
        expert, medium, random = (stats[env_id, t]["return_mean"] for t in ("expert", "medium", "random"))
        assert expert > medium > random, env_id
    assert stats["rware-tiny-2ag", "expert"]["return_mean"] > 10  # the RWARE expert delivers
    assert stats["spaceworld-10x10-3a", "random"]["cost_mean"] > stats["spaceworld-10x10-3a", "expert"]["cost_mean"]
    critics = ["uniform", "shapley", "counterfactual", "counterfactual-h5"]
    assert [a["critic_id"] for a in record["annotate"]] == critics
    assert all(a["failed"] == 0 for a in record["annotate"])
    if importlib.util.find_spec("llama_cpp") is not None:  # the local LLM stage ran (CI installs the extra)
        llm = record["annotate_llm"]
        assert [(a["critic_id"], a["env_id"]) for a in llm] == [
            (c, e) for c in ("llm-mca-shares", "llm-taca-shares") for e in ("lbf-8x8-2p-2f", "spaceworld-10x10-3a")
        ]
        assert recipe.annotate.llm_episodes == 1
        assert all(a["episodes"] == 1 and a["tokens_in"] > 0 and a["seconds_per_episode"] > 0 for a in llm)
        assert "llm-mca-shares vs shapley" in record["critic_eval"]
    overall = record["critic_eval"]["counterfactual vs shapley"][-1]
    assert (overall["env_id"], overall["tier"], overall["coverage"]) == ("all", "all", 1.0)
    assert overall["sign_agreement"] > record["critic_eval"]["uniform vs shapley"][-1]["sign_agreement"]
    assert "counterfactual vs shapley" in proc.stdout
    runs = record["train"]
    arms = ("bc", "bc@sample", "iql-cql", "iql-cql+credit_shapley")  # protocol v2: BC both greedy and sampled
    assert sorted({(r["arm"], r["seed"]) for r in runs}) == [(arm, seed) for arm in arms for seed in range(5)]
    assert all((Path(r["run_dir"]) / "eval.json").is_file() and r["normalized_score"] is not None for r in runs)
    results = [json.loads((Path(r["run_dir"]) / "eval.json").read_text()) for r in runs]
    assert all(e["protocol"] == 2 and e["episodes"] == 100 and "frozen_episodes" in e for e in results)
    assert {e["act"] for e in results} == {"greedy", "sample"}
    assert "iql-cql+credit_shapley" in proc.stdout and "norm. score" in proc.stdout
    board = Path(record["leaderboard"]["markdown"]).read_text()
    assert "# Leaderboard" in proc.stdout and "IQM [95% CI]" in proc.stdout
    for arm in arms:  # every arm verified over its 5 seeds, in its act mode
        algorithm, _, act = arm.partition("@")
        assert f"| {algorithm} | {act or 'greedy'} | 5 |" in board
    assert all(Path(p).is_file() for p in record["leaderboard"]["plots"])

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr
    rerun = json.loads((out / "pipeline.json").read_text())
    assert all(c["new_episodes"] == 0 for c in rerun["collect"])
    assert all(a["episodes"] == 0 for a in rerun["annotate"])  # nothing recomputed
    # The LLM stage redoes exactly the episodes that failed before (a rerun retries failures; a slow,
    # busy machine can time a request out); everything else comes from the cache.
    failed_before = sum(int(a["failed"]) for a in record["annotate_llm"])
    assert sum(int(a["episodes"]) for a in rerun["annotate_llm"]) == failed_before
    assert rerun["train"] == runs  # every run was reused, none retrained
