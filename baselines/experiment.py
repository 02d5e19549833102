"""A grid of baseline runs: arms (algorithm + reward source) × seeds, each trained and evaluated.

Input: a dataset (directory or Hub repo id), an env id, its tiers and a ``GridConfig``. Output:
one run directory per arm and seed under ``out_dir/<arm>/seed-<k>`` (``config.json``,
``model.safetensors``, ``metrics.jsonl``, ``eval.json``) and one result row per run. A run whose
``eval.json`` already exists with the same settings is reused, so an interrupted grid resumes
where it stopped; one trained with the same settings but evaluated with other episodes, act
mode or protocol is evaluated again, not retrained. ``llmca pipeline`` and
``benchmarks/offline_credit.py`` drive it; the leaderboard turns its run directories into a
submission.

Example::

    from llmca_data.baselines.experiment import Arm, GridConfig, run_grid, summarize

    rows = run_grid("data/llmca", "lbf-8x8-2p-2f", ("medium",), Path("runs"),
                    GridConfig(arms=(Arm("iql-cql"), Arm("iql-cql", "credit_shapley")), steps=1000))
    summarize(rows)   # one row per arm: mean ± std of the normalised score over seeds
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .evaluate import PROTOCOL_VERSION, EvalConfig, evaluate_run
from .policy import RUN_CONFIG, RUN_EVAL, RUN_METRICS, RUN_WEIGHTS
from .registry import Act, get_algorithm
from .train import make_config, train

if TYPE_CHECKING:
    from llmca_data.recipe import Recipe

GridProgress = Callable[[int, int, str], None]
"""``progress(runs_done, runs_total, status)``; status names the run in progress."""


@dataclass(frozen=True)
class Arm:
    """One training configuration of the grid."""

    algo: str
    reward: str = "team"
    """Reward source of the independent learners (``team``, ``env``, ``credit_<critic>``)."""
    task_input: str | None = None
    """LLM-TACA task critic for ``iql-cql`` (``llm-taca``), or None."""
    act: Act = "greedy"
    """Act mode of the final evaluation (``sample``: BC family only; protocol v2 reports BC both ways,
    as two arms)."""
    config: tuple[tuple[str, Any], ...] = ()
    """Config fields of this arm's algorithm (over the grid's ``overrides``)."""

    @property
    def name(self) -> str:
        """``bc``, ``bc@sample``, ``iql-cql+credit_shapley``, ``iql-cql+credit_llm_taca+task`` …"""
        reward = "" if self.reward == "team" else f"+{self.reward}"
        return self.algo + reward + ("+task" if self.task_input else "") + ("@sample" if self.act == "sample" else "")


@dataclass(frozen=True)
class GridConfig:
    """Arms, seeds and the (shared) training and evaluation budget of a grid."""

    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 1000
    """Gradient steps of every run."""
    eval_episodes: int = 20
    """Final evaluation episodes per run (evaluation seeds disjoint from data seeds)."""
    device: str = "auto"
    overrides: tuple[tuple[str, Any], ...] = field(default=(("eval_episodes", 0),))
    """Config fields set on every run (default: no periodic evaluation, only the final one)."""
    workers: int = 1
    """Processes that train and evaluate runs at once (each torch on one thread)."""


def run_grid(
    dataset: str | Path,
    env_id: str,
    tiers: Sequence[str] | None,
    out_dir: Path,
    config: GridConfig,
    progress: GridProgress | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every arm × seed; returns one row per run (see ``_row``), arms × seeds in order.

    Every arm's settings are checked first (``make_config``), so a bad arm fails before any run.
    Arms that differ only in ``act`` train once: the later arm's run directory gets a copy of
    the trained files (same seed, same settings, same weights) and is evaluated its own way.
    With ``config.workers`` > 1 the runs go to that many processes (one torch thread each).
    """
    for arm in config.arms:
        check_arm(arm, config)
    cells = [(arm, seed) for arm in config.arms for seed in config.seeds]
    first: dict[tuple[Arm, int], Path] = {}  # training identity → the run directory that trains it
    jobs: list[tuple[Arm, int, Path | None]] = []
    twins: list[tuple[Arm, int, Path | None]] = []
    for arm, seed in cells:
        key, run_dir = (replace(arm, act="greedy"), seed), out_dir / arm.name / f"seed-{seed}"
        if key in first:
            twins.append((arm, seed, first[key]))
        else:
            first[key] = run_dir
            jobs.append((arm, seed, None))
    results: dict[tuple[Arm, int], dict[str, Any]] = {}
    for batch in (jobs, twins):  # twins copy what the first batch trained
        for (arm, seed, _), result in _run_cells(dataset, env_id, tiers, out_dir, config, batch, len(results),
                                                  len(cells), progress):  # fmt: skip
            results[arm, seed] = result
    if progress is not None:
        progress(len(cells), len(cells), "")
    return [_row(env_id, arm, seed, out_dir / arm.name / f"seed-{seed}", results[arm, seed]) for arm, seed in cells]


def _run_cells(
    dataset: str | Path,
    env_id: str,
    tiers: Sequence[str] | None,
    out_dir: Path,
    config: GridConfig,
    cells: list[tuple[Arm, int, Path | None]],
    done: int,
    total: int,
    progress: GridProgress | None,
) -> Iterator[tuple[tuple[Arm, int, Path | None], dict[str, Any]]]:
    """Run ``cells`` (serially, or in ``config.workers`` processes), yielding each with its result."""
    args = [(dataset, env_id, tiers, out_dir / arm.name / f"seed-{seed}", arm, seed, config, twin)
            for arm, seed, twin in cells]  # fmt: skip
    if config.workers == 1 or len(cells) < 2:
        for cell, a in zip(cells, args, strict=True):
            if progress is not None:
                progress(done, total, f"{cell[0].name} seed {cell[1]}")
            yield cell, _run_cell(*a)
            done += 1
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(config.workers, len(cells)), mp_context=ctx) as pool:
        futures = {pool.submit(_run_cell, *a): cell for cell, a in zip(cells, args, strict=True)}
        for future in as_completed(futures):
            cell = futures[future]
            yield cell, future.result()
            done += 1
            if progress is not None:
                progress(done, total, f"{cell[0].name} seed {cell[1]} done")


def _run_cell(
    dataset: str | Path,
    env_id: str,
    tiers: Sequence[str] | None,
    run_dir: Path,
    arm: Arm,
    seed: int,
    config: GridConfig,
    twin: Path | None,
) -> dict[str, Any]:
    """One run's result: reused, re-evaluated, copied from its ``twin`` and evaluated, or trained."""
    previous = _reuse(run_dir, env_id, arm, config, seed)
    if previous is not None:
        return previous if _same_evaluation(previous, arm, config) else _evaluate(run_dir, arm, config)
    if twin is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (RUN_CONFIG, RUN_WEIGHTS, RUN_METRICS):
            shutil.copy2(twin / name, run_dir / name)
        return _evaluate(run_dir, arm, config)
    train(arm.algo, dataset, env_id, tiers, run_dir, reward=arm.reward, task_input=arm.task_input,
          overrides=_settings(arm, config, seed))  # fmt: skip
    return _evaluate(run_dir, arm, config)


def check_arm(arm: Arm, config: GridConfig) -> None:
    """Refuse now what training ``arm`` in this grid would refuse later.

    Raises:
        UnknownAlgorithmError: an algorithm that is not an offline one.
        ConfigError: a reward source or task input the algorithm does not take, or a bad config field.
    """
    make_config(arm.algo, reward=arm.reward, task_input=arm.task_input, settings=_settings(arm, config, 0))


def grid_from_recipe(recipe: Recipe, owner: str) -> GridConfig:
    """The recipe's training grid, every critic id and arm checked as the stages that use them will
    (before anything runs): each arm once per act mode its algorithm reports (protocol v2: the BC
    family greedy and sampled, the value-based learners greedy).

    Raises:
        RecipeError: naming the recipe key of the bad critic or arm (``owner`` names the recipe).
    """
    from llmca_data.annotation.registry import check_critic, critic_ids
    from llmca_data.recipe import RecipeError

    critics = [(f"annotate.critics[{i}]", c, False) for i, c in enumerate(recipe.annotate.critics)]
    critics += [(f"annotate.llm_critics[{i}]", c, True) for i, c in enumerate(recipe.annotate.llm_critics)]
    for key, critic_id, llm in critics:
        try:
            check_critic(critic_id)
        except ValueError as exc:
            raise RecipeError(f"{owner}: {key}: {exc}") from None
        if llm and critic_id not in critic_ids("llm"):
            raise RecipeError(f"{owner}: {key}: {critic_id!r} is not an LLM critic ({', '.join(critic_ids('llm'))})")
    arms: list[tuple[int, Arm]] = []
    for i, spec in enumerate(recipe.train.arms):
        try:
            acts = get_algorithm(spec.algo, offline=True).acts
        except ValueError as exc:
            raise RecipeError(f"{owner}: train.arms[{i}]: {exc}") from None
        arms += [(i, Arm(spec.algo, spec.reward, spec.task_input, act, tuple(spec.config.items()))) for act in acts]
    train = recipe.train
    grid = GridConfig(arms=tuple(arm for _, arm in arms), seeds=tuple(range(train.seeds)), steps=train.steps,
                      eval_episodes=recipe.evaluate.episodes, workers=recipe.workers)  # fmt: skip
    for i, arm in arms:
        try:
            check_arm(arm, grid)
        except ValueError as exc:
            raise RecipeError(f"{owner}: train.arms[{i}]: {exc}") from None
    return grid


def _settings(arm: Arm, config: GridConfig, seed: int) -> dict[str, Any]:
    """Config fields of one run: steps, seed and device, the grid's overrides where the algorithm has
    them, then the arm's own ``config``."""
    fields = get_algorithm(arm.algo).config_class().field_names()
    shared = {k: v for k, v in config.overrides if k in fields}
    return {"steps": config.steps, "seed": seed, "device": config.device, **shared, **dict(arm.config)}


def _evaluate(run_dir: Path, arm: Arm, config: GridConfig) -> dict[str, Any]:
    return evaluate_run(run_dir, EvalConfig(episodes=config.eval_episodes, act=arm.act))


def _same_evaluation(result: dict[str, Any], arm: Arm, config: GridConfig) -> bool:
    """Whether ``result`` (an ``eval.json``) used the grid's episodes, act mode and protocol.

    Results written before protocol v2 have no ``act`` (greedy) and no ``protocol`` (1).
    """
    done = (result.get("episodes"), result.get("act", "greedy"), result.get("protocol", 1))
    return done == (config.eval_episodes, arm.act, PROTOCOL_VERSION)


def _reuse(run_dir: Path, env_id: str, arm: Arm, config: GridConfig, seed: int) -> dict[str, Any] | None:
    """The last ``eval.json`` of ``run_dir`` when it trained with these settings, else None (train again);
    ``_same_evaluation`` decides whether that result can be reused or the run is evaluated again."""
    try:
        body = json.loads((run_dir / RUN_CONFIG).read_text())
        result: dict[str, Any] = json.loads((run_dir / RUN_EVAL).read_text())
    except (OSError, ValueError):
        return None
    wanted = {"env_id": env_id, "algo": arm.algo, "reward": arm.reward, "task_input": arm.task_input,
              **_settings(arm, config, seed)}  # fmt: skip
    del wanted["device"]  # where it trained does not change what it learned
    wanted = json.loads(json.dumps(wanted))  # tuples → lists, as config.json holds them
    if body.get("reward", "") is None:  # an algorithm that ignores rewards (bc) stores none
        del wanted["reward"]
    return result if all(body.get(key) == value for key, value in wanted.items()) else None


def _row(env_id: str, arm: Arm, seed: int, run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "env_id": env_id,
        "arm": arm.name,
        **asdict(arm),
        "seed": seed,
        "run_dir": str(run_dir),
        "normalized_score": result["normalized_score"],
        "mean_return": result["mean_return"],
        "mean_cost": result["mean_cost"],
        "success_rate": result["success_rate"],
        "act": result.get("act", "greedy"),
        "frozen_episodes": result.get("frozen_episodes"),
        "diverged": bool(result.get("diverged", False)),
    }


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (env, arm), in first-seen order: seeds and mean ± sample std (ddof 1, as the
    leaderboard) of score, return, cost and success."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["env_id"], row["arm"]), []).append(row)
    out = []
    for (env_id, arm), runs in groups.items():
        summary: dict[str, Any] = {"env_id": env_id, "arm": arm, "seeds": len(runs)}
        for key in ("normalized_score", "mean_return", "mean_cost", "success_rate"):
            values = np.array([math.nan if r[key] is None else r[key] for r in runs], np.float64)
            summary[key] = float(values.mean())
            summary[key.removeprefix("mean_") + "_std"] = float(values.std(ddof=1)) if len(runs) > 1 else 0.0
        out.append(summary)
    return out
