"""The leaderboard of a grid of baseline runs, as the trusted evaluator builds it.

Input: a dataset directory and the result rows of ``baselines.experiment.run_grid`` (env id,
arm, act, run directory per seed). Output: under ``out``: ``submissions/<env>/<arm>/`` (one
submission per arm, all its seeds), ``results/`` (each re-evaluated from package code) and
the rendered ``leaderboard.md``, ``index.html`` and plots. Everything under ``out`` is
derived from the runs, so it is rebuilt from scratch.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .assemble import make_submission
from .evaluate import LeaderboardEvalConfig, evaluate_submission
from .identity import dataset_identity
from .render import RenderResult, render

CODE_URL = "https://github.com/llmca/llmca-data"
TEAM = "llmca-data baselines"


def board_from_runs(
    dataset: Path,
    out: Path,
    runs: Sequence[dict[str, Any]],
    episodes: int,
    progress: Callable[[int, int, str], None] | None = None,
) -> RenderResult:
    """Submit each arm (all its seeds), evaluate every submission and render the leaderboard."""
    identity = dataset_identity(dataset)
    shutil.rmtree(out, ignore_errors=True)
    entries = dict.fromkeys((str(r["env_id"]), str(r["arm"]), str(r["act"])) for r in runs)
    for done, (env_id, arm, act) in enumerate(entries):
        if progress is not None:
            progress(done, len(entries), arm)
        submission = make_submission(
            [Path(str(r["run_dir"])) for r in runs if (r["env_id"], r["arm"]) == (env_id, arm)],
            out / "submissions" / env_id / arm,
            team=TEAM, algorithm=arm.removesuffix("@sample"), code_url=CODE_URL, dataset=identity, act=act,
        )  # fmt: skip
        evaluate_submission(submission, out / "results", LeaderboardEvalConfig(episodes=episodes), identity)
    return render(out / "results", out)
