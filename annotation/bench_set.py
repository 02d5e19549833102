"""The critic benchmark's fixed, versioned episode set (``llmca critic-bench``), built once and cached.

Input: a ``BenchConfig`` (the default one is *the* benchmark, version ``BENCH_VERSION``) and a
directory (default ``default_bench_dir()``: ``$LLMCA_BENCH_DIR``, else
``$LLMCA_CACHE_DIR/critic-bench/v<BENCH_VERSION>``, else the user cache directory's
``llmca-data/critic-bench/v<BENCH_VERSION>``, the same cache directory as the LLM reply cache).
Output: a ``Bench``: an ordinary llmca dataset directory (it validates and loads like any
other) with the reference critics' credit columns, and readers for its episodes.

The default set (``BENCH_VERSION`` 1), seed ``BENCH_SEED``, tiers ``expert`` and ``medium``:

=====================  =========================  ==========  ===============  =============
env                    episodes per tier          time limit  rewarded steps   steps
=====================  =========================  ==========  ===============  =============
lbf-8x8-2p-2f          40                         50 (env's)  141              1552
lbf-10x10-3p-3f        30                         50 (env's)  143              1842
rware-tiny-2ag         16                         100         141              3200
spaceworld-10x10-3a    24                         100 (env's) 122              2612
=====================  =========================  ==========  ===============  =============

RWARE runs with ``max_steps=100`` instead of its 500 (recorded in the env kwargs), so the
whole set is about 9,200 steps in 220 episodes: an LLM critic with ``max_window`` 30 needs
429 requests (about 1M prompt tokens). Every env has at least ``min_rewarded_steps`` (100) steps with a
non-zero team reward; a build that gets fewer raises. The references ``shapley``,
``counterfactual`` and ``counterfactual-h5`` annotate every episode.

Deterministic: the same config and package versions give the same episodes, ids and
credits. Cached: a complete set is never rebuilt. Crash-safe: the set is built in a staging
directory next to the target (``.<name>.partial``) and renamed into place only when complete,
so the target directory exists only as a whole set; a killed build resumes from what the
staging directory already holds (collection and annotation are both resumable), and one built
for another config is wiped first. ``meta/info.json`` records the version and the config under
``recipe`` (``{"name": "critic-bench", "bench_version": ..., "config": ...}``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data.collect import CollectConfig, collect
from llmca_data.config import ConfigError, JsonConfig, bounded
from llmca_data.dataset import Dataset, writing
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import LlmcaError
from llmca_data.info import load_info, spec_from_info
from llmca_data.rollout import Episode
from llmca_data.schema import credit_column, from_fsl
from llmca_data.tables import tables_to_episodes
from llmca_data.tiers import tier_sort_key

from .annotate import annotate
from .registry import make_critic

BENCH_VERSION = 1
"""Version of the default set; bump it whenever the default ``BenchConfig`` or what it builds changes."""
BENCH_SEED = 4242
"""Base seed of every collection run of the set."""
BENCH_ENV = "LLMCA_BENCH_DIR"
"""Environment variable that overrides the default set directory."""
REFERENCES = ("shapley", "counterfactual", "counterfactual-h5")
RECIPE_NAME = "critic-bench"

Progress = Callable[[int, int, str], None]
"""``progress(done, total, status)`` in episodes (collected, then annotated per reference)."""


class BenchError(LlmcaError, ValueError):
    """A bench directory that holds something else, another config, or too few rewarded steps."""


@dataclass(frozen=True)
class BenchEnv(JsonConfig):
    """One env of the set."""

    env: str = ""
    """Env id (``llmca envs``)."""
    episodes: int = bounded(1, low=1)
    """Episodes per tier."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env kwargs of the set (e.g. ``{"max_steps": 100}`` for RWARE)."""


DEFAULT_ENVS = (
    BenchEnv("lbf-8x8-2p-2f", 40),
    BenchEnv("lbf-10x10-3p-3f", 30),
    BenchEnv("rware-tiny-2ag", 16, {"max_steps": 100}),
    BenchEnv("spaceworld-10x10-3a", 24),
)


@dataclass(frozen=True)
class BenchConfig(JsonConfig):
    """What the set holds (recorded in its ``meta/info.json``); the default is the benchmark."""

    envs: tuple[BenchEnv, ...] = DEFAULT_ENVS
    """The envs and their episode counts."""
    tiers: tuple[str, ...] = ("expert", "medium")
    """Tiers collected for every env."""
    seed: int = bounded(BENCH_SEED, low=0)
    """Base seed of every collection run."""
    references: tuple[str, ...] = REFERENCES
    """Reference critics run on every episode."""
    min_rewarded_steps: int = bounded(100, low=0)
    """Fewest steps with a team reward per env; a build with fewer raises ``BenchError``."""

    def small(self, episodes: int = 1) -> BenchConfig:
        """The same set with ``episodes`` per env and tier and no rewarded-step floor (tests, dry runs)."""
        return replace(self, envs=tuple(replace(e, episodes=episodes) for e in self.envs), min_rewarded_steps=0)


def default_bench_dir() -> Path:
    """``$LLMCA_BENCH_DIR``, else ``<cache dir>/critic-bench/v<BENCH_VERSION>`` (cache dir as the LLM cache's)."""
    override = os.environ.get(BENCH_ENV)
    if override:
        return Path(override)
    from .llm.cache import default_cache_path

    return default_cache_path().parent / "critic-bench" / f"v{BENCH_VERSION}"


@dataclass(frozen=True)
class Bench:
    """A complete set: its directory and config."""

    root: Path
    config: BenchConfig

    @property
    def env_ids(self) -> tuple[str, ...]:
        return tuple(e.env for e in self.config.envs)

    def spec(self, env_id: str) -> EnvSpec:
        return spec_from_info(load_info(self.root)["envs"][env_id])

    def load(self, env_id: str) -> tuple[list[Episode], pa.Table]:
        """The episodes of ``env_id`` (every tier, by episode id) and their steps table, sorted by
        (episode_id, t), with ``episode_id``, ``t``, ``reward_team`` and the reference columns."""
        ds = Dataset.open(self.root)
        steps = pa.concat_tables([ds.read(n) for n in ds.shards(env_id, "steps")])
        steps = steps.sort_by([("episode_id", "ascending"), ("t", "ascending")])
        episodes = pa.concat_tables([ds.read(n) for n in ds.shards(env_id, "episodes")]).sort_by("episode_id")
        keep = ["episode_id", "t", "reward_team", *(credit_column(r) for r in self.config.references)]
        return tables_to_episodes(steps, episodes, self.spec(env_id)), steps.select(keep)

    def reference(self, steps: pa.Table, reference: str, n_agents: int) -> np.ndarray:
        """A reference's credits ``[M, N]`` from a ``load`` steps table."""
        values: np.ndarray = from_fsl(steps.column(credit_column(reference)), (n_agents,)).astype(np.float32)
        return values


def _recipe(config: BenchConfig) -> dict[str, Any]:
    return {"name": RECIPE_NAME, "bench_version": BENCH_VERSION, "config": config.to_dict()}


def _stored_config(root: Path) -> BenchConfig | None:
    """The config recorded in ``root``'s info, or None when it holds no critic-bench recipe."""
    recipe = load_info(root).get("recipe")
    if not isinstance(recipe, dict) or recipe.get("name") != RECIPE_NAME:
        return None
    if recipe.get("bench_version") != BENCH_VERSION:
        raise BenchError(
            f"{root} holds critic-bench version {recipe.get('bench_version')!r}, this package scores version "
            f"{BENCH_VERSION}: delete it (it is rebuilt) or choose another --bench-dir"
        )
    try:
        return BenchConfig.from_dict(recipe.get("config", {}), strict=True, owner=str(root))
    except ConfigError as exc:
        raise BenchError(f"{root}: unreadable critic-bench config ({exc}); delete it to rebuild") from None


def open_bench(root: Path, config: BenchConfig | None = None) -> Bench:
    """The complete set at ``root`` (checked against ``config`` when given).

    Raises:
        BenchError: ``root`` holds no critic-bench set, another version, or another config.
        DatasetNotFoundError: ``root`` holds no dataset.
    """
    root = Path(root)
    Dataset.open(root)
    stored = _stored_config(root)
    if stored is None:
        raise BenchError(f"{root} is a dataset but not a critic-bench set; choose another --bench-dir")
    if config is not None and stored != config:
        raise BenchError(
            f"{root} holds a critic-bench set built with another config; delete it or choose another --bench-dir"
        )
    return Bench(root, stored)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One builder per target directory at a time (released if the process dies)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent / f".{root.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_bench(
    root: Path | None = None, config: BenchConfig | None = None, *, progress: Progress | None = None, workers: int = 1
) -> Bench:
    """The set at ``root`` (default ``default_bench_dir()``), built first if it is not there.

    Args:
        root: set directory; built when absent (or an empty folder).
        config: what to build (default ``BenchConfig()``); an existing set must have been built
            with it (when None, any existing set is taken as it is).
        progress: ``progress(done, total, status)`` while building.
        workers: processes for the reference critics while building.

    Raises:
        BenchError: see ``open_bench``; or a build with fewer rewarded steps than asked.
    """
    root = Path(root) if root is not None else default_bench_dir()
    if _complete(root):
        return open_bench(root, config)
    with _build_lock(root):
        if _complete(root):  # another process finished it while we waited
            return open_bench(root, config)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise BenchError(f"{root} exists and holds no dataset: choose an empty or new --bench-dir")
        config = config if config is not None else BenchConfig()
        stage = root.parent / f".{root.name}.partial"
        _build(stage, config, progress, workers)
        if root.exists():
            root.rmdir()  # the empty folder checked above
        os.replace(stage, root)
    return Bench(root, config)


def _complete(root: Path) -> bool:
    return (root / "meta" / "manifest.json").is_file()


def _build(stage: Path, config: BenchConfig, progress: Progress | None, workers: int) -> None:
    """Build (or finish building) the set in ``stage``."""
    resumable = False
    if stage.exists():
        with contextlib.suppress(LlmcaError):
            resumable = _stored_config(stage) == config
        if not resumable:
            shutil.rmtree(stage)
    if not resumable:
        with writing(stage) as ds:
            info = ds.info()
            info["recipe"] = _recipe(config)
            ds.save_info(info)
    _fill(stage, config, progress, workers)


def _fill(stage: Path, config: BenchConfig, progress: Progress | None, workers: int) -> None:
    """Collect what is missing, annotate what is missing with every reference, check the floor."""
    per_pass = sum(e.episodes for e in config.envs) * len(config.tiers)
    total = per_pass * (1 + len(config.references))
    offset = 0

    def report(status: str) -> Callable[[int, int], None]:
        def update(done: int, _total: int) -> None:
            if progress:
                progress(min(total, offset + done), total, status)

        return update

    for bench_env in config.envs:
        for tier in sorted(config.tiers, key=tier_sort_key):
            cfg = CollectConfig(bench_env.env, tier, bench_env.episodes, seed=config.seed,
                                env_kwargs=dict(bench_env.env_kwargs))  # fmt: skip
            collect(stage, cfg, progress=report(f"collect {bench_env.env} {tier}"))
            offset += bench_env.episodes
    for reference in config.references:
        annotate(stage, make_critic(reference), workers=workers, progress=report(f"annotate {reference}"))
        offset += per_pass
    if progress:
        progress(total, total, "done")
    ds = Dataset.open(stage)
    for env_id in ds.envs():
        reward = np.concatenate([ds.read(n, ["reward_team"]).column("reward_team").to_numpy()
                                 for n in ds.shards(env_id, "steps")])  # fmt: skip
        rewarded = int((np.abs(reward) > 1e-6).sum())
        if rewarded < config.min_rewarded_steps:
            raise BenchError(
                f"the critic-bench set has {rewarded} rewarded steps for {env_id}, fewer than "
                f"{config.min_rewarded_steps}: raise that env's episodes in the BenchConfig"
            )
