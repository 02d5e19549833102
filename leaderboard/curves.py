"""Learning curves of online runs, aggregated over seeds with rliable.

Input: run directories of ``llmca train-online`` (``config.json`` + ``curve.jsonl``). Output:
per (env, critic) group the IQM over seeds with a 95% stratified-bootstrap band at every
evaluation point (``rliable.library.get_interval_estimates`` with ``rliable.metrics.aggregate_iqm``),
and a PNG with one panel per env, x-axis in episodes.

Runs of one group are aligned on the evaluation points they all share (a shorter run cuts
the group's curve); a group of one seed is drawn without a band.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CURVE_FILE = "curve.jsonl"
CONFIG_FILE = "config.json"


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

    The critic label gets ``+norm`` when the run rescaled credits to the team reward.

    Raises:
        FileNotFoundError: ``run_dir`` lacks ``config.json`` or ``curve.jsonl``.
        ValueError: the metric is missing (e.g. ``eval_score`` of an env without reference returns).
    """
    config_path, curve_path = run_dir / CONFIG_FILE, run_dir / CURVE_FILE
    for path in (config_path, curve_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory of `llmca train-online`?")
    config = json.loads(config_path.read_text())
    points: dict[int, float] = {}
    for line in curve_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get(metric) is None:
                raise ValueError(
                    f"{curve_path}: no {metric!r} at {row.get('episodes')} episodes; try --metric eval_return"
                )
            points[int(row["episodes"])] = float(row[metric])
    label = str(config["critic"]) + ("+norm" if config.get("normalize_credits") else "")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({g.env_id for g in groups})
    if not envs:
        raise ValueError("no curves to plot: the runs share no evaluation points")
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
