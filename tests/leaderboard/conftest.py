"""Fixtures of the leaderboard tests: fake results (the runs and submissions they share with
``tests/security`` live in ``tests/conftest.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ENV = "lbf-8x8-2p-2f"


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
