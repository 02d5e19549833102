"""Render the leaderboard from verified results: markdown, a static HTML page, plots and JSON.

Input: a results directory (``<submission>/results.json`` from ``evaluate.py``). Output, in
``out`` (always regenerated from the results, never edited by hand)::

    leaderboard.md                         one table per env and tier
    index.html                             the same tables and the plots, self-contained but for the PNGs
    statistics.json                        every aggregate and the StatsConfig used
    plots/<env>__<tier>__intervals.png     IQM and mean with 95% CIs (rliable.plot_utils)
    plots/<env>__<tier>__profile.png       performance profiles with 95% bands (rliable.plot_utils)

Columns: the act mode (``greedy`` | ``sample``; ``(protocol 1)`` marks results verified before
protocol v2), mean ± std over seeds, IQM and mean with their stratified-bootstrap 95%
intervals, the probability of improvement over BC with its interval, seeds, and flags: how
many self-reported numbers were far from the verified ones (they are never shown as results)
and, when any, ``diverged k/n`` — seeds whose training self-reports Q divergence.

Submitted text (submission name, team, algorithm, env and tier) is escaped in both outputs:
``html.escape`` in the page, ``md_escape`` in the markdown, so a name cannot become a link, an
image, HTML or emphasis there.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmca_data.baselines.evaluate import PROTOCOL_VERSION
from llmca_data.extras import require
from llmca_data.shards import write_text_atomic

from .escape import md_escape
from .statistics import EntryStats, StatsConfig, TaskStats, aggregate, load_results, stats_to_json

MARKDOWN_FILE = "leaderboard.md"
HTML_FILE = "index.html"
STATS_FILE = "statistics.json"
PLOTS_DIR = "plots"
COLUMNS = ("rank", "submission", "team", "algorithm", "act", "seeds", "mean ± std", "IQM [95% CI]",
           "mean [95% CI]", "P(> BC) [95% CI]", "flags")  # fmt: skip
SUBMITTED = frozenset({"submission", "team", "algorithm"})
"""Columns that hold text a submitter chose."""


@dataclass(frozen=True)
class RenderResult:
    """What ``render`` wrote."""

    markdown: Path
    html: Path
    statistics: Path
    plots: list[Path]
    tasks: list[TaskStats]


def fmt(value: float) -> str:
    """A score as shown in every table (two decimals)."""
    return f"{value:.2f}"


def fmt_interval(ci: tuple[float, float] | None) -> str:
    """A confidence interval as shown in every table: ``[lo, hi]``."""
    return "—" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def row_cells(rank: int, e: EntryStats) -> list[str]:
    """The table cells of one entry (plain text, shared by markdown and HTML)."""
    poi = "—" if e.poi is None else f"{fmt(e.poi)} {fmt_interval(e.poi_ci)}"
    act = e.act if e.protocol >= PROTOCOL_VERSION else f"{e.act} (protocol {e.protocol})"
    flags = str(e.flags) + (f", diverged {e.diverged}/{len(e.scores)}" if e.diverged else "")
    return [str(rank), e.name, e.team, e.algorithm, act, str(len(e.scores)), f"{fmt(e.mean)} ± {fmt(e.std)}",
            f"{fmt(e.iqm)} {fmt_interval(e.iqm_ci)}", f"{fmt(e.mean)} {fmt_interval(e.mean_ci)}", poi,
            flags]  # fmt: skip


def plot_stem(task: TaskStats) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{task.env_id}__{task.tier}")


def plot_task(task: TaskStats, plots: Path) -> tuple[Path, Path]:
    """Write the interval-estimate and performance-profile PNGs of one task (Agg backend)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns  # rliable's own plotting dependency
    from rliable import plot_utils

    names = [e.name for e in task.entries]
    colors = dict(zip(sorted(names), sns.color_palette("colorblind", n_colors=len(names)), strict=True))
    points = {e.name: [e.iqm, e.mean] for e in task.entries}
    intervals = {e.name: np.array([[e.iqm_ci[0], e.mean_ci[0]], [e.iqm_ci[1], e.mean_ci[1]]]) for e in task.entries}
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=["IQM", "Mean"], algorithms=names,
                                                colors=colors, xlabel=task.metric.replace("_", " "), row_height=0.6,
                                                xlabel_y_coordinate=-0.3)  # fmt: skip
    intervals_png = plots / f"{plot_stem(task)}__intervals.png"
    fig.savefig(intervals_png, bbox_inches="tight", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_utils.plot_performance_profiles(
        {n: np.asarray(p) for n, p in task.profiles.items()}, np.asarray(task.taus),
        performance_profile_cis={n: np.asarray(c) for n, c in task.profile_cis.items()}, ax=ax, colors=colors,
        xlabel=task.metric.replace("_", " ") + r" ($\tau$)",
    )  # fmt: skip
    ax.legend(loc="upper right")
    ax.set_title(f"{task.env_id} · {task.tier}")
    profile_png = plots / f"{plot_stem(task)}__profile.png"
    fig.savefig(profile_png, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return intervals_png, profile_png


def markdown(tasks: list[TaskStats], config: StatsConfig) -> str:
    """The leaderboard as markdown tables, one per env and tier."""
    lines = ["# Leaderboard", "", "Generated by `llmca leaderboard render` from verified results; do not edit.",
             f"Scores are verified by re-evaluation; intervals are {config.confidence:.0%} stratified-bootstrap CIs "
             f"(rliable, {config.reps} reps); P(> BC) is the probability of improvement over `{config.baseline}`.",
             ""]  # fmt: skip
    for task in tasks:
        lines += [f"## {md_escape(task.env_id)} · {md_escape(task.tier)} ({task.metric})", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]  # fmt: skip
        for i, e in enumerate(task.entries):
            cells = [md_escape(c) if column in SUBMITTED else c.replace("|", "\\|")
                     for column, c in zip(COLUMNS, row_cells(i + 1, e), strict=True)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        stem = plot_stem(task)
        lines += [
            "",
            f"![intervals]({PLOTS_DIR}/{stem}__intervals.png) ![profile]({PLOTS_DIR}/{stem}__profile.png)",
            "",
        ]
    return "\n".join(lines)


def html_page(tasks: list[TaskStats], config: StatsConfig) -> str:
    """The leaderboard as one static HTML page (tables and the plots)."""
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>llmca-data leaderboard</title>',
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:48%}</style></head><body>",
             "<h1>Leaderboard</h1>",
             f"<p>Generated from verified results; {config.confidence:.0%} stratified-bootstrap CIs "
             f"(rliable, {config.reps} reps). Do not edit.</p>"]  # fmt: skip
    for task in tasks:
        stem = plot_stem(task)
        parts.append(f"<h2>{esc(task.env_id)} · {esc(task.tier)} ({esc(task.metric)})</h2><table>")
        parts.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr>")
        for i, e in enumerate(task.entries):
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row_cells(i + 1, e)) + "</tr>")
        parts.append("</table>")
        for kind in ("intervals", "profile"):
            src = esc(f"{PLOTS_DIR}/{stem}__{kind}.png")
            parts.append(f'<img src="{src}" alt="{esc(kind)} of {esc(task.env_id)} {esc(task.tier)}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(results_dir: Path, out: Path, config: StatsConfig | None = None) -> RenderResult:
    """Aggregate every submission under ``results_dir`` and write the leaderboard into ``out``.

    Raises:
        NoResultsError: ``results_dir`` holds no ``*/results.json``.
    """
    cfg = config or StatsConfig()
    tasks = aggregate(load_results(Path(results_dir)), cfg)
    out = Path(out)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [p for task in tasks for p in plot_task(task, plots_dir)]
    write_text_atomic(out / STATS_FILE, json.dumps(stats_to_json(tasks, cfg), indent=2) + "\n")
    write_text_atomic(out / MARKDOWN_FILE, markdown(tasks, cfg) + "\n")
    write_text_atomic(out / HTML_FILE, html_page(tasks, cfg))
    return RenderResult(out / MARKDOWN_FILE, out / HTML_FILE, out / STATS_FILE, plots, tasks)
