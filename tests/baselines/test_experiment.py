"""The baseline grid: arms × seeds trained and evaluated, resumed without retraining, summarised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmca_data.baselines.experiment import Arm, GridConfig, run_grid, summarize

torch.set_num_threads(1)

ENV = "lbf-8x8-2p-2f"
OVERRIDES = (("eval_episodes", 0), ("batch_size", 32), ("hidden", (32,)))


def grid(steps: int = 20) -> GridConfig:
    arms = (Arm("bc"), Arm("iql-cql", "env"))
    return GridConfig(arms=arms, seeds=(0, 1), steps=steps, eval_episodes=2, device="cpu", overrides=OVERRIDES)


def test_grid_trains_every_arm_and_seed_then_resumes(lbf_dataset: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    rows = run_grid(lbf_dataset, ENV, None, tmp_path, grid(), lambda d, t, s: calls.append((d, t, s)))

    assert [(r["arm"], r["seed"]) for r in rows] == [("bc", 0), ("bc", 1), ("iql-cql+env", 0), ("iql-cql+env", 1)]
    assert calls[0] == (0, 4, "bc seed 0") and calls[-1] == (4, 4, "")
    for r in rows:
        assert Path(r["run_dir"]) == tmp_path / r["arm"] / f"seed-{r['seed']}"
        assert (Path(r["run_dir"]) / "eval.json").is_file() and np.isfinite(r["normalized_score"])
    weights = [(Path(r["run_dir"]) / "model.safetensors").stat().st_mtime_ns for r in rows]

    again = run_grid(lbf_dataset, ENV, None, tmp_path, grid())
    assert again == rows
    assert [(Path(r["run_dir"]) / "model.safetensors").stat().st_mtime_ns for r in again] == weights

    longer = run_grid(lbf_dataset, ENV, None, tmp_path, grid(steps=25))  # other settings: retrained
    weights_25 = [(Path(r["run_dir"]) / "model.safetensors").stat().st_mtime_ns for r in longer]
    assert all(a != b for a, b in zip(weights_25, weights, strict=True))

    wider = GridConfig(**{**grid(steps=25).__dict__, "overrides": (*OVERRIDES[:2], ("hidden", (48,)))})
    retrained = run_grid(lbf_dataset, ENV, None, tmp_path, wider)  # another override: retrained too
    mtimes = [(Path(r["run_dir"]) / "model.safetensors").stat().st_mtime_ns for r in retrained]
    assert all(a != b for a, b in zip(mtimes, weights_25, strict=True))


def test_summarize_gives_mean_and_std_over_seeds() -> None:
    rows = [
        {
            "env_id": "e",
            "arm": "a",
            "normalized_score": s,
            "mean_return": s / 100,
            "mean_cost": 0.0,
            "success_rate": 1.0,
        }
        for s in (10.0, 20.0, 60.0)
    ] + [
        {"env_id": "e", "arm": "b", "normalized_score": None, "mean_return": 1.0, "mean_cost": 2.0, "success_rate": 0.5}
    ]
    a, b = summarize(rows)
    assert (a["arm"], a["seeds"]) == ("a", 3)
    assert a["normalized_score"] == pytest.approx(30.0) and a["normalized_score_std"] == pytest.approx(
        np.std([10, 20, 60], ddof=1)
    )
    assert a["mean_return"] == pytest.approx(0.3)
    assert np.isnan(b["normalized_score"]) and b["mean_cost"] == 2.0


def test_arm_names() -> None:
    assert Arm("bc").name == "bc" and Arm("d3rlpy-cql", "env").name == "d3rlpy-cql+env"
    assert Arm("vdn-cql").name == "vdn-cql"
    assert Arm("iql-cql", "credit_llm_taca", "llm-taca").name == "iql-cql+credit_llm_taca+task"


def test_grid_in_two_processes_gives_the_same_runs(lbf_dataset: Path, tmp_path: Path) -> None:
    serial = run_grid(lbf_dataset, ENV, None, tmp_path / "serial", grid())
    calls: list[tuple[int, int, str]] = []
    parallel_config = GridConfig(**{**grid().__dict__, "workers": 2})
    parallel = run_grid(lbf_dataset, ENV, None, tmp_path / "parallel", parallel_config, lambda *c: calls.append(c))
    assert [(r["arm"], r["seed"]) for r in parallel] == [(r["arm"], r["seed"]) for r in serial]  # same order
    for a, b in zip(serial, parallel, strict=True):  # deterministic training: the same weights and scores
        assert (Path(a["run_dir"]) / "model.safetensors").read_bytes() == (
            Path(b["run_dir"]) / "model.safetensors"
        ).read_bytes()
        assert a["normalized_score"] == b["normalized_score"]
    assert sorted(d for d, _, _ in calls)[-1] == 4 and calls[-1] == (4, 4, "")
