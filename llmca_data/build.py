"""Turn a dataset directory into a publishable Hub dataset: card, statistics, plots.

Input: a dataset directory (DESIGN.md §6) after ``collect`` (and usually ``annotate``), and
optionally credit-quality rows that the caller computed with
``llmca_data.annotation.evaluate.critic_eval`` (core never imports ``llmca_data.annotation``),
each such row extended with ``critic`` and ``reference`` keys.

Output, all under the dataset's writer lock:

* ``meta/info.json`` keeps everything it held and gains ``statistics`` (per env and tier:
  episodes, steps, team return mean/std/min/max, normalised score, cost, success rate and the
  coverage of every critic), ``configs``, ``built_at``, ``package_version`` and
  ``schema_version``;
* ``meta/return_hist_<env_id>.png``: the team-return histogram of each env, one line per tier;
* ``README.md``: ``DATASET_CARD.md`` rendered, with a YAML ``configs:`` block listing
  ``<env_id>`` (steps), ``<env_id>-episodes`` and ``<env_id>-annotations``, each with exactly
  the tiers that have files, so ``datasets.load_dataset(dir_or_repo, config, split=tier)``
  works with nothing but ``datasets``.

The card and the plots are committed through the manifest (path, bytes, sha256) like the data
shards; ``validate`` checks them. Before that, steps shards of one env that lack a
``credit_*`` / ``task_*`` column that other shards of that env have (a critic run on part of
the data) get it filled with NaN / −1, because ``datasets`` needs one column set per config.
A second build with unchanged data rewrites nothing but ``meta/info.json``.

Template syntax (no dependency): ``{{name}}`` is replaced by a value, and
``{{#flag}} ... {{/flag}}`` keeps its content only when ``flag`` is true.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.card import card_template, card_values, render_card
from llmca_data.dataset import Dataset, writing
from llmca_data.errors import LlmcaError
from llmca_data.layout import CARD_PATH, RETURN_HIST_PATH, ShardName
from llmca_data.schema import from_fsl
from llmca_data.shards import sha256_file
from llmca_data.stats import TierStats
from llmca_data.tiers import tier_sort_key

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(stages_done, stages_total)``."""


@dataclass(frozen=True)
class BuildConfig:
    """What ``build`` renders besides the data itself."""

    repo_id: str = "llmca/annotated"
    """Hub repo id used in the card's loading examples."""
    hist_bins: int = 20
    """Number of bins of each env's return histogram (shared by its tiers)."""
    pretty_name: str = "LLM-MCA: multi-agent offline RL with per-agent credit annotations"
    """Human-readable title of the card (YAML ``pretty_name`` and the heading)."""


@dataclass(frozen=True)
class BuildResult:
    """What one ``build`` did."""

    files: list[str]
    """Files (re)written and committed: card and plots whose content changed."""
    padded_shards: list[str]
    """Steps shards that got missing critic columns filled with NaN / −1."""
    statistics: dict[str, Any]
    configs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def configs_yaml(root: Path) -> list[dict[str, Any]]:
    """The ``configs:`` entries of the card, from the committed files of the manifest.

    Envs in alphabetical order, each with ``<env_id>``, ``<env_id>-episodes`` and
    ``<env_id>-annotations`` when it has such files; splits are the tiers with files, in
    contract order (expert, medium, random, replay). The first config is the default.
    """
    shards = Dataset(root).shards()
    configs: list[dict[str, Any]] = []
    for env_id in sorted({n.env_id for n in shards}):
        for kind, suffix in (("steps", ""), ("episodes", "-episodes"), ("annotations", "-annotations")):
            tiers = sorted({n.tier for n in shards if n.env_id == env_id and n.kind == kind}, key=tier_sort_key)
            if tiers:
                files = [{"split": t, "path": f"data/{env_id}/{kind}/{t}-*.parquet"} for t in tiers]
                configs.append({"config_name": env_id + suffix, "data_files": files})
    if configs:
        configs[0]["default"] = True
    return configs


def build(
    root: Path,
    config: BuildConfig = BuildConfig(),
    critic_eval: list[dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build the card, statistics and plots of the dataset at ``root`` (see the module docstring).

    Args:
        root: dataset directory.
        config: card options.
        critic_eval: credit-quality rows (``critic_eval`` rows plus ``critic`` and ``reference``);
            None keeps the rows of the previous build if the data files have not changed since.
        progress: called as ``progress(done, total)`` over the build's stages.

    Raises:
        DatasetNotFoundError: ``root`` holds no dataset (nothing is created).
        DatasetLockedError: another process is writing ``root``.
        LlmcaError: nothing was collected, or the card template cannot be found.
    """
    started = time.perf_counter()
    root = Path(root)
    with writing(root, create=False) as ds:
        manifest = ds.manifest
        info = ds.info()
        envs = ds.envs("episodes")
        if not envs:
            raise LlmcaError(f"{root} holds no episodes; run `llmca collect` first")
        stages, report = len(envs) + 3, progress or _no_progress
        padded = ds.pad_critic_columns()
        ds.commit()
        report(1, stages)
        statistics, returns = _statistics(ds)
        fingerprint = hashlib.sha256(
            "".join(f"{p}{e.sha256}" for p, e in sorted(manifest.files.items()) if p.startswith("data/")).encode()
        ).hexdigest()
        previous = info.get("statistics", {}).get("critic_eval") or {}
        if critic_eval is not None:
            statistics["critic_eval"] = {"rows": critic_eval, "data_sha256": fingerprint}
        elif previous.get("data_sha256") == fingerprint:
            statistics["critic_eval"] = previous
        report(2, stages)
        outputs: dict[str, bytes] = {}
        for k, env_id in enumerate(envs):
            env_returns = {tier: r for (env, tier), r in returns.items() if env == env_id}
            outputs[RETURN_HIST_PATH.format(env_id=env_id)] = _histogram_png(env_id, env_returns, config.hist_bins)
            report(3 + k, stages)
        configs = configs_yaml(root)
        values, flags = card_values(root, manifest, info, statistics, configs)
        values.update(pretty_name=config.pretty_name, repo_id=config.repo_id)
        outputs[CARD_PATH] = render_card(card_template(), values, flags).encode()
        info.update(
            statistics=statistics,
            configs=configs,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            package_version=__version__,
            schema_version=SCHEMA_VERSION,
        )
        ds.save_info(info)
        written = []
        for rel, data in outputs.items():
            entry, path = manifest.files.get(rel), root / rel
            sha = hashlib.sha256(data).hexdigest()
            if entry is not None and entry.sha256 == sha and path.is_file() and sha256_file(path) == sha:
                continue
            ds.write_file(rel, data)
            written.append(rel)
        ds.commit()
        report(stages, stages)
    return BuildResult(written, padded, statistics, configs, time.perf_counter() - started)


def _no_progress(done: int, total: int) -> None:
    pass


class _Coverage:
    """A ``Dataset.scan`` visitor: per (env, tier) and credit column, the episodes without a NaN credit."""

    def __init__(self, credit_columns: list[str]) -> None:
        self.credit_columns = credit_columns
        self.covered: dict[tuple[str, str], dict[str, int]] = {}

    def columns(self, name: ShardName, schema: pa.Schema) -> list[str]:
        return ["episode_id", *self.credit_columns] if name.kind == "steps" else []

    def visit(self, name: ShardName, table: pa.Table) -> None:
        counts = self.covered.setdefault((name.env_id, name.tier), {})
        ids = table.column("episode_id").to_numpy()
        if not len(ids):
            return
        starts = np.flatnonzero(np.append(True, ids[1:] != ids[:-1]))  # first row of each episode
        for c in table.column_names[1:]:
            bad = np.isnan(from_fsl(table.column(c), (table.schema.field(c).type.list_size,))).any(axis=1)
            counts[c] = counts.get(c, 0) + int(np.sum(np.logical_or.reduceat(bad, starts) == 0))


def _statistics(ds: Dataset) -> tuple[dict[str, Any], dict[tuple[str, str], np.ndarray]]:
    """``tier_stats`` rows, each with ``coverage`` {critic id: share of episodes without NaN credits},
    and the team returns per (env, tier), from one read of every shard."""
    critics = ds.critics()  # credit column -> critic id
    tiers, coverage = TierStats(), _Coverage(list(critics))
    ds.scan([tiers, coverage])
    rows = tiers.rows()
    for row in rows:
        covered = coverage.covered.get((row["env_id"], row["tier"]), {})
        row["coverage"] = {cid: covered.get(c, 0) / max(1, row["episodes"]) for c, cid in critics.items()}
    statistics = {
        "episodes": sum(r["episodes"] for r in rows),
        "steps": sum(r["steps"] for r in rows),
        "critics": sorted(critics.values()),
        "tiers": rows,
    }
    return statistics, tiers.returns()


def _histogram_png(env_id: str, returns: dict[str, np.ndarray], bins: int) -> bytes:
    """Team return per episode (``returns`` per tier), one step line per tier (share of its episodes)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise LlmcaError("`llmca build` draws return histograms with matplotlib: pip install matplotlib") from exc

    pooled = np.concatenate(list(returns.values()))
    lo, hi = float(pooled.min()), float(pooled.max())
    edges = np.linspace(lo - 0.5, hi + 0.5, bins + 1) if hi <= lo else np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for tier in sorted(returns, key=tier_sort_key):
        counts, _ = np.histogram(returns[tier], edges)
        ax.stairs(counts / len(returns[tier]), edges, label=f"{tier} ({len(returns[tier])})", linewidth=1.5)
    ax.set(xlabel="team return per episode", ylabel="share of episodes", title=env_id)
    ax.legend(title="tier (episodes)", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": f"llmca-data {__version__}"})
    return buf.getvalue()
