"""Aggregate statistics of verified leaderboard results, with rliable's stratified bootstrap.

Input: a results directory holding ``<submission>/results.json`` files (``evaluate.py``).
Output: per env and tier, for each submission: its per-seed scores (the verified
``normalized_score``, or ``mean_return`` when an env has no reference returns), mean ± std
(sample std, ddof 1), IQM and mean with 95% stratified-bootstrap confidence intervals
(``rliable.library.get_interval_estimates`` with ``rliable.metrics.aggregate_iqm`` /
``aggregate_mean``), the probability of improvement over the ``bc`` entry
(``rliable.metrics.probability_of_improvement``, with its interval), and the performance
profile (``rliable.library.create_performance_profile``). Nothing is bootstrapped by hand.
Each entry also carries its act mode, the oldest evaluation protocol among its seeds and how
many seeds self-report diverged training; results from before protocol v2 read as greedy,
protocol 1, not diverged.

rliable draws its resamples from numpy's *global* generator; each call here is seeded with
``StatsConfig.seed`` and the previous global state is restored afterwards, so a result does
not depend on which other submissions are in the directory or on the caller's state.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmca_data.errors import LlmcaError

from .evaluate import RESULTS_FILE, ResultsError, read_results


class NoResultsError(LlmcaError, FileNotFoundError):
    """A results directory without any ``<submission>/results.json``."""


@dataclass(frozen=True)
class StatsConfig:
    """How the aggregates are computed."""

    reps: int = 2000
    """Bootstrap replications per interval (rliable's default is 50000: raise it for publication)."""
    confidence: float = 0.95
    """Coverage of every confidence interval."""
    seed: int = 0
    """Seed of numpy's global generator for each bootstrap call."""
    baseline: str = "bc"
    """Algorithm name of the entry others are compared with (probability of improvement); its
    greedy submission when it has both a greedy and a sampled one."""
    profile_points: int = 41
    """Thresholds on the performance profile's x axis."""


@dataclass(frozen=True)
class EntryStats:
    """One submission on one env and tier."""

    name: str
    team: str
    algorithm: str
    scores: list[float]
    """Verified score per seed, in seed order."""
    mean: float
    std: float
    iqm: float
    iqm_ci: tuple[float, float]
    mean_ci: tuple[float, float]
    flags: int
    """Self-reported numbers flagged as far from the verified ones."""
    poi: float | None = None
    """P(this entry > the baseline); None for the baseline itself or without one."""
    poi_ci: tuple[float, float] | None = None
    act: str = "greedy"
    """How the policies acted when verified (``greedy`` | ``sample``)."""
    protocol: int = 1
    """Evaluation protocol of the verified results (the oldest among the seeds)."""
    diverged: int = 0
    """Seeds whose training self-reports Q divergence."""


@dataclass(frozen=True)
class TaskStats:
    """Every submission on one env and tier, with the performance profile."""

    env_id: str
    tier: str
    metric: str
    entries: list[EntryStats]
    taus: list[float] = field(default_factory=list)
    profiles: dict[str, list[float]] = field(default_factory=dict)
    profile_cis: dict[str, list[list[float]]] = field(default_factory=dict)
    """name → [lower bounds, upper bounds] at each tau."""


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (rliable's source of resamples), restoring it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    """``[IQM, mean]`` of a ``[runs, tasks]`` score matrix (rliable's aggregates)."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


def interval_estimates(
    scores: np.ndarray | list[np.ndarray], func: Callable[..., Any], config: StatsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and ``[2, ...]`` (lower, upper) interval of ``func`` by rliable's stratified bootstrap."""
    from rliable import library

    with seeded(config.seed):
        points, intervals = library.get_interval_estimates(
            {"x": scores}, func, reps=config.reps, confidence_interval_size=config.confidence
        )
    return np.asarray(points["x"]), np.asarray(intervals["x"])


def improvement(x: np.ndarray, base: np.ndarray, config: StatsConfig) -> tuple[float, tuple[float, float]]:
    """Probability that a run of ``x`` scores above a run of ``base`` (``[runs, tasks]`` each), with
    its interval (``rliable.metrics.probability_of_improvement``, stratified bootstrap)."""
    from rliable import metrics

    p, p_ci = interval_estimates([x, base], metrics.probability_of_improvement, config)
    return float(p), _pair(p_ci)


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every ``<submission>/results.json`` under ``results_dir``, sorted by submission name.

    Raises:
        NoResultsError: there is none.
        ResultsError: one is not strict JSON, or two carry the same submission name (one would
            silently hide the other).
    """
    paths = sorted(Path(results_dir).glob(f"*/{RESULTS_FILE}"))
    if not paths:
        raise NoResultsError(f"no */{RESULTS_FILE} under {results_dir}: run `llmca leaderboard evaluate` first")
    results = [read_results(p) for p in paths]
    names = Counter(str(r["submission"].get("name")) for r in results)
    if twice := sorted(name for name, count in names.items() if count > 1):
        folders = [p.parent.name for p, r in zip(paths, results, strict=True)
                   if str(r["submission"].get("name")) in twice]  # fmt: skip
        raise ResultsError(f"{results_dir}: the results in {', '.join(folders)} share the submission name "
                           f"{twice[0]!r}; keep one folder per submission (remove the copies)")  # fmt: skip
    return results


def task_scores(results: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, dict[str, np.ndarray]]]:
    """(env, tier) → (metric, submission name → verified scores ``[seeds, 1]``)."""
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for result in results:
        for env_id, tiers in result["entries"].items():
            for tier, seeds in tiers.items():
                runs = [seeds[k]["verified"] for k in sorted(seeds, key=int)]
                grouped.setdefault((env_id, tier), {})[result["submission"]["name"]] = runs
    out: dict[tuple[str, str], tuple[str, dict[str, np.ndarray]]] = {}
    for key, by_name in sorted(grouped.items()):
        normalised = all(r.get("normalized_score") is not None for runs in by_name.values() for r in runs)
        metric = "normalized_score" if normalised else "mean_return"
        out[key] = (metric, {n: np.array([[float(r[metric])] for r in runs]) for n, runs in by_name.items()})
    return out


def _pair(lo_hi: np.ndarray) -> tuple[float, float]:
    flat = np.asarray(lo_hi, dtype=float).reshape(2)
    return float(flat[0]), float(flat[1])


def task_stats(
    env_id: str, tier: str, metric: str, scores: dict[str, np.ndarray], info: dict[str, dict[str, Any]],
    config: StatsConfig,
) -> TaskStats:  # fmt: skip
    """Aggregates of every submission on one env and tier.

    ``info``: name → ``{"team", "algorithm", "act", "flags", "protocol", "diverged"}`` (the last three:
    (env, tier) → value).
    """
    from rliable import library

    baselines = sorted((n for n in scores if info[n]["algorithm"].lower() == config.baseline.lower()),
                       key=lambda n: (info[n]["act"] != "greedy", n))  # fmt: skip
    base = scores[baselines[0]] if baselines else None
    entries = []
    for name, x in scores.items():
        point, ci = interval_estimates(x, iqm_and_mean, config)
        poi: float | None = None
        poi_ci: tuple[float, float] | None = None
        if base is not None and name != baselines[0]:
            poi, poi_ci = improvement(x, base, config)
        flat = x[:, 0]
        std = float(np.std(flat, ddof=1)) if flat.size > 1 else 0.0
        mine, key = info[name], (env_id, tier)
        entries.append(EntryStats(name, mine["team"], mine["algorithm"], [float(v) for v in flat],
                                  float(np.mean(flat)), std, float(point[0]), _pair(ci[:, 0]), _pair(ci[:, 1]),
                                  mine["flags"].get(key, 0), poi, poi_ci, act=mine["act"],
                                  protocol=mine["protocol"].get(key, 1),
                                  diverged=mine["diverged"].get(key, 0)))  # fmt: skip
    entries.sort(key=lambda e: -e.iqm)
    every = np.concatenate([x[:, 0] for x in scores.values()])
    taus = np.linspace(float(every.min()), float(every.max()) + 1e-9, config.profile_points)
    with seeded(config.seed):
        profiles, profile_cis = library.create_performance_profile(scores, taus, reps=config.reps)
    return TaskStats(env_id, tier, metric, entries, [float(t) for t in taus],
                     {n: [float(v) for v in p] for n, p in profiles.items()},
                     {n: np.asarray(c).tolist() for n, c in profile_cis.items()})  # fmt: skip


def aggregate(results: list[dict[str, Any]], config: StatsConfig | None = None) -> list[TaskStats]:
    """Per env and tier, every submission's aggregates (see the module docstring)."""
    cfg = config or StatsConfig()
    info: dict[str, dict[str, Any]] = {}
    for r in results:
        tasks = [((env_id, tier), seeds) for env_id, tiers in r["entries"].items() for tier, seeds in tiers.items()]
        info[r["submission"]["name"]] = {
            **r["submission"],
            "act": r["submission"].get("act", "greedy"),
            "flags": {task: sum(len(s["flags"]) for s in seeds.values()) for task, seeds in tasks},
            "protocol": {
                task: min(int(s["verified"].get("protocol", 1)) for s in seeds.values()) for task, seeds in tasks
            },
            "diverged": {task: sum(s.get("diverged") is True for s in seeds.values()) for task, seeds in tasks},
        }
    return [task_stats(env_id, tier, metric, scores, info, cfg)
            for (env_id, tier), (metric, scores) in task_scores(results).items()]  # fmt: skip


def stats_to_json(tasks: list[TaskStats], config: StatsConfig) -> dict[str, Any]:
    """A JSON-ready record of the aggregates and how they were computed."""
    return {"stats_config": asdict(config), "tasks": [asdict(t) for t in tasks]}
