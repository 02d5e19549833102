"""The leaderboard of a grid of baseline runs, as the trusted evaluator builds it.

Input: a dataset directory and the result rows of ``baselines.experiment.run_grid`` (env id,
arm, act, run directory per seed). Output: under ``out``: ``submissions/<arm>/`` (one
submission per arm, with its seeds of every env: the arm's results folder is named after it,
so two submissions of one arm would claim the same folder), ``results/`` (each re-evaluated
from package code) and the rendered ``leaderboard.md``, ``index.html`` and plots. Everything
under ``out`` is derived from the runs, so it is rebuilt from scratch.
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
    arms = {str(r["arm"]): str(r["act"]) for r in runs}  # an arm's act is part of it (bc@sample)
    for done, (arm, act) in enumerate(arms.items()):
        if progress is not None:
            progress(done, len(arms), arm)
        submission = make_submission(
            [Path(str(r["run_dir"])) for r in runs if str(r["arm"]) == arm],
            out / "submissions" / arm,
            team=TEAM, algorithm=arm.removesuffix("@sample"), code_url=CODE_URL, dataset=identity, act=act,
        )  # fmt: skip
        evaluate_submission(submission, out / "results", LeaderboardEvalConfig(episodes=episodes), identity)
    return render(out / "results", out)
