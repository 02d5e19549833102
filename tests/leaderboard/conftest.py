"""Fixtures of the leaderboard tests: five real BC runs, submissions built from them, fake results."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llmca_data.baselines.bc import BCConfig, fit_bc
from llmca_data.baselines.qmix_cql import QMIXCQLConfig, fit_qmix_cql
from llmca_data.baselines.training import load_data
from llmca_data.leaderboard.assemble import make_submission
from llmca_data.leaderboard.identity import dataset_identity
from llmca_data.leaderboard.submission import DatasetIdentity

ENV = "lbf-8x8-2p-2f"
SEEDS = (0, 1, 2, 3, 4)
SMALL = {"steps": 20, "batch_size": 32, "hidden": (16,), "eval_every": 10, "device": "cpu"}


def _train(dataset: Path, root: Path, fit: Callable[..., Any], config_cls: type[Any]) -> list[Path]:
    torch.set_num_threads(1)
    data, info = load_data(dataset, ENV, ["expert"], "team", "cpu")
    return [fit(data, info, root / f"seed{s}", config_cls(**SMALL, seed=s))[0] for s in SEEDS]


@pytest.fixture(scope="session")
def bc_runs(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five BC run directories (seeds 0-4, 20 steps each) on the session LBF dataset's expert tier."""
    return _train(lbf_dataset_master, tmp_path_factory.mktemp("bc-runs"), fit_bc, BCConfig)


@pytest.fixture(scope="session")
def qmix_runs(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five QMIX + CQL run directories (seeds 0-4, 20 steps each)."""
    return _train(lbf_dataset_master, tmp_path_factory.mktemp("qmix-runs"), fit_qmix_cql, QMIXCQLConfig)


@pytest.fixture(scope="session")
def identity(lbf_dataset_master: Path) -> DatasetIdentity:
    """The local identity of the session LBF dataset (the leaderboard's dataset in these tests)."""
    return dataset_identity(lbf_dataset_master)


@pytest.fixture
def make_sub(bc_runs: list[Path], identity: DatasetIdentity, tmp_path: Path) -> Callable[..., Path]:
    """``make_sub(name="sub", runs=None, algorithm="bc")`` → a fresh, valid submission directory."""

    def make(name: str = "sub", runs: list[Path] | None = None, algorithm: str = "bc") -> Path:
        return make_submission(runs or bc_runs, tmp_path / name, team="llmca", algorithm=algorithm,
                               code_url="https://example.org/llmca-data", dataset=identity)  # fmt: skip

    return make


def edit_json(sub: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to ``sub/submission.json`` in place."""
    path = sub / "submission.json"
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


@pytest.fixture
def edit() -> Callable[[Path, Callable[[dict[str, Any]], None]], None]:
    """``edit(sub, change)``: rewrite ``submission.json`` with ``change(body)`` applied."""
    return edit_json


def fake_result(name: str, algorithm: str, scores: list[float], env_id: str = ENV, tier: str = "expert",
                flags: int = 0) -> dict[str, Any]:  # fmt: skip
    """A ``results.json`` body with the given verified normalised score per seed."""
    seeds = {str(i): {"verified": {"normalized_score": s, "mean_return": s / 100}, "self_reported": {},
                      "flags": ["x"] * flags if i == 0 else []} for i, s in enumerate(scores)}  # fmt: skip
    return {"results_version": 1, "submission": {"name": name, "team": "t", "algorithm": algorithm},
            "entries": {env_id: {tier: seeds}}}  # fmt: skip


@pytest.fixture
def fake_results(tmp_path: Path) -> Callable[..., Path]:
    """``fake_results({name: (algorithm, scores)}, folder="results")`` → a results directory, one folder per name."""

    def make(entries: dict[str, tuple[str, list[float]]], folder: str = "results") -> Path:
        root = tmp_path / folder
        for name, (algorithm, scores) in entries.items():
            folder = root / re.sub(r"[^\w.-]", "_", name)
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(fake_result(name, algorithm, scores)))
        return root

    return make


@pytest.fixture
def known() -> dict[str, tuple[str, list[float]]]:
    """Known per-seed scores of three fake submissions (BC is the baseline)."""
    return {
        "llmca-bc": ("bc", [10.0, 20.0, 30.0, 40.0, 50.0]),
        "team-a-iql": ("iql-cql", [35.0, 45.0, 55.0, 60.0, 90.0]),
        "team-b-vdn": ("vdn-cql", [float(v) for v in np.linspace(0.0, 70.0, 8)]),
    }
