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
import pyarrow.parquet as pq

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.card import card_template, card_values, critic_fields, render_card
from llmca_data.errors import LlmcaError
from llmca_data.info import load_info
from llmca_data.layout import CARD_PATH, INFO_PATH, RETURN_HIST_PATH
from llmca_data.schema import from_fsl, to_fsl
from llmca_data.shards import Commit, DatasetLock, Manifest, read_shard, sha256_file, write_json_atomic
from llmca_data.stats import tier_stats
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
    shards = Manifest.load(root).shards()
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
        DatasetLockedError: another process is writing ``root``.
        LlmcaError: nothing was collected, or the card template cannot be found.
    """
    started = time.perf_counter()
    root = Path(root)
    with DatasetLock(root):
        manifest = Manifest.load(root)
        info = load_info(root)
        envs = sorted({n.env_id for n in manifest.shards(kind="episodes")})
        if not envs:
            raise LlmcaError(f"{root} holds no episodes; run `llmca collect` first")
        stages, report = len(envs) + 3, progress or _no_progress
        padded = _pad_critic_columns(root, manifest)
        report(1, stages)
        statistics = _statistics(root, manifest, info)
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
            outputs[RETURN_HIST_PATH.format(env_id=env_id)] = _histogram_png(root, manifest, env_id, config.hist_bins)
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
        write_json_atomic(root / INFO_PATH, info)
        commit = Commit(root, manifest)
        written = []
        for rel, data in outputs.items():
            entry, path = manifest.files.get(rel), root / rel
            sha = hashlib.sha256(data).hexdigest()
            if entry is not None and entry.sha256 == sha and path.is_file() and sha256_file(path) == sha:
                continue
            commit.write_bytes(rel, data)
            written.append(rel)
        commit.apply()
        report(stages, stages)
    return BuildResult(written, padded, statistics, configs, time.perf_counter() - started)


def _no_progress(done: int, total: int) -> None:
    pass


def _pad_critic_columns(root: Path, manifest: Manifest) -> list[str]:
    """Give every steps shard of an env the same ``credit_*`` / ``task_*`` columns (NaN / −1 where absent)."""
    commit = Commit(root, manifest)
    padded = []
    for env_id in sorted({n.env_id for n in manifest.shards(kind="steps")}):
        extra = critic_fields(root, manifest, env_id)
        for n in manifest.shards(env_id, "steps"):
            rel = str(n)
            names = pq.read_schema(root / rel).names
            missing = [f for c, f in extra.items() if c not in names]
            if not missing:
                continue
            table = read_shard(root / rel)
            for f in missing:
                fill, dtype = (np.nan, np.float32) if f.name.startswith("credit_") else (-1, np.int16)
                values = np.full((table.num_rows, f.type.list_size), fill, dtype)  # [M, N]
                table = table.append_column(f, to_fsl(values, f.type.value_type))
            commit.write(rel, table)
            padded.append(rel)
            log.info("%s: filled missing critic columns %s", rel, ", ".join(f.name for f in missing))
    commit.apply()
    return padded


def _statistics(root: Path, manifest: Manifest, info: dict[str, Any]) -> dict[str, Any]:
    """``tier_stats`` rows, each with ``coverage`` {critic id: share of episodes without NaN credits}."""
    known = {c.get("column"): cid for cid, c in info.get("critics", {}).items()}  # column → hyphenated id
    columns = [c for c in critic_fields(root, manifest) if c.startswith("credit_")]
    critics = {c: known.get(c, c.removeprefix("credit_").replace("_", "-")) for c in columns}
    rows = tier_stats(root)
    for row in rows:
        names = manifest.shards(row["env_id"], "steps", row["tier"])
        present = [c for c in critics if all(c in pq.read_schema(root / str(n)).names for n in names)]
        covered: dict[str, int] = dict.fromkeys(present, 0)
        for n in names:
            table = read_shard(root / str(n), ["episode_id", *present])
            ids = table.column("episode_id").to_numpy()
            starts = np.flatnonzero(np.append(True, ids[1:] != ids[:-1]))  # first row of each episode
            for c in present:
                bad = np.isnan(from_fsl(table.column(c), (table.schema.field(c).type.list_size,))).any(axis=1)
                covered[c] += int(np.sum(np.logical_or.reduceat(bad, starts) == 0)) if len(ids) else 0
        row["coverage"] = {critics[c]: covered.get(c, 0) / max(1, row["episodes"]) for c in critics}
    return {
        "episodes": sum(r["episodes"] for r in rows),
        "steps": sum(r["steps"] for r in rows),
        "critics": sorted(critics.values()),
        "tiers": rows,
    }


def _histogram_png(root: Path, manifest: Manifest, env_id: str, bins: int) -> bytes:
    """Team return per episode, one step line per tier (share of that tier's episodes)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise LlmcaError("`llmca build` draws return histograms with matplotlib: pip install matplotlib") from exc

    returns: dict[str, np.ndarray] = {}
    for n in manifest.shards(env_id, "episodes"):
        r = read_shard(root / str(n), ["return_team"]).column("return_team").to_numpy().astype(np.float64)
        returns[n.tier] = np.concatenate([returns.get(n.tier, np.empty(0)), r])
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
