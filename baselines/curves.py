"""Learning curves of online training runs (``baselines/online.py``), aggregated over seeds with rliable.

Input: run directories of ``llmca train-online`` (``config.json`` + ``curve.jsonl``). Output:
per (env, critic) group the IQM over seeds with a 95% stratified-bootstrap band at every
evaluation point (``rliable.library.get_interval_estimates`` with ``rliable.metrics.aggregate_iqm``),
and a PNG with one panel per env, x-axis in episodes.

Runs of one group are aligned on the evaluation points they all share (a shorter run cuts
the group's curve); a group of one seed is drawn without a band. A directory that is not an
online run, a metric the curves lack, or runs with no shared evaluation point raise ``RunError``
(an ``LlmcaError``: ``llmca plot`` prints its message, no traceback). Needs the ``leaderboard``
extra (rliable) to aggregate and matplotlib to draw; neither is imported before use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmca_data.extras import require

from .policy import RUN_CONFIG, RunError

CURVE_FILE = "curve.jsonl"
"""An online run's per-evaluation rows (``online.CURVE``, named here to keep torch out of plotting)."""
CONFIG_FILE = RUN_CONFIG


@dataclass(frozen=True)
class CurveGroup:
    """The aggregated curve of one (env, critic) pair."""

    env_id: str
    critic: str
    seeds: int
    episodes: np.ndarray  # [X] evaluation points
    iqm: np.ndarray  # [X]
    low: np.ndarray  # [X] lower end of the 95% interval
    high: np.ndarray  # [X]


def read_curve(run_dir: Path, metric: str = "eval_score") -> tuple[str, str, dict[int, float]]:
    """``(env_id, critic, {episodes: value})`` of one run; ``metric`` is a ``curve.jsonl`` field.

    The critic label gets ``+step`` or ``+episode`` when the run rescaled credits to the team
    reward (``credit_scale``; a run written with the older ``normalize_credits: true`` is ``+step``).

    Raises:
        RunError: ``run_dir`` is not an online run (no ``config.json`` naming an env and a critic, or
            no ``curve.jsonl``), a file is not valid JSON, or the metric is missing (e.g.
            ``eval_score`` of an env without reference returns).
    """
    config_path, curve_path = run_dir / CONFIG_FILE, run_dir / CURVE_FILE
    hint = "pass run directories written by `llmca train-online` (offline runs of `llmca train` have no curve)"
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; {hint}")
    for path in (config_path, curve_path):
        if not path.is_file():
            raise RunError(f"{run_dir} is not an online run: it has no {path.name}; {hint}")
    try:
        config = json.loads(config_path.read_text())
        rows = [json.loads(line) for line in curve_path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{run_dir}: unreadable {config_path.name} or {curve_path.name} ({exc}); {hint}") from None
    if not isinstance(config, dict) or "env_id" not in config or "critic" not in config:
        raise RunError(f"{config_path} names no env_id and critic, so it is not an online run; {hint}")
    points: dict[int, float] = {}
    for row in rows:
        if row.get(metric) is None:
            raise RunError(f"{curve_path}: no {metric!r} at {row.get('episodes')} episodes; try --metric eval_return")
        points[int(row["episodes"])] = float(row[metric])
    scale = config.get("credit_scale") or ("step" if config.get("normalize_credits") is True else "none")
    label = str(config["critic"]) + ("" if scale == "none" else f"+{scale}")
    return str(config["env_id"]), label, points


def aggregate(run_dirs: list[Path], metric: str = "eval_score", reps: int = 2000) -> list[CurveGroup]:
    """IQM and 95% bootstrap interval per (env, critic) group at every shared evaluation point."""
    from rliable import library, metrics

    groups: dict[tuple[str, str], list[dict[int, float]]] = {}
    for run in run_dirs:
        env_id, critic, points = read_curve(Path(run), metric)
        groups.setdefault((env_id, critic), []).append(points)
    out = []
    for (env_id, critic), runs in sorted(groups.items()):
        xs = sorted(set.intersection(*(set(r) for r in runs)))
        if not xs:
            continue
        scores = np.array([[r[x] for x in xs] for r in runs], np.float64)[:, None, :]  # [seeds, 1 task, X]

        def iqm_per_point(s: np.ndarray) -> np.ndarray:
            return np.array([metrics.aggregate_iqm(s[..., k]) for k in range(s.shape[-1])])  # [X]

        if len(runs) > 1:
            point, interval = library.get_interval_estimates({critic: scores}, iqm_per_point, reps=reps)
            iqm, low, high = point[critic], interval[critic][0], interval[critic][1]
        else:
            iqm = low = high = scores[0, 0]
        out.append(CurveGroup(env_id, critic, len(runs), np.array(xs), iqm, low, high))
    return out


def plot_curves(groups: list[CurveGroup], out: Path, metric: str = "eval_score") -> Path:
    """One panel per env, one line (IQM) and band (95% CI) per critic; writes ``out`` (PNG)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({g.env_id for g in groups})
    if not envs:
        raise RunError(
            "no curves to plot: no group of runs shares an evaluation point "
            "(a run stopped before its first evaluation has none); train longer or pass other runs"
        )
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    label = {"eval_score": "normalised score (IQM)", "eval_return": "team return (IQM)"}.get(metric, metric)
    for ax, env_id in zip(axes[0], envs, strict=True):
        for g in (g for g in groups if g.env_id == env_id):
            (line,) = ax.plot(g.episodes, g.iqm, label=f"{g.critic} ({g.seeds} seeds)")
            if g.seeds > 1:
                ax.fill_between(g.episodes, g.low, g.high, color=line.get_color(), alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("episodes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out
