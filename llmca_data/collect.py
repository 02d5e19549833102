"""Collect episodes of a tier's behaviour policy into a dataset directory.

Input: a ``CollectConfig`` (env id, tier, number of episodes, base seed, workers, executor) and a
dataset directory (new or existing). Output: new ``steps`` and ``episodes`` shards for that
env and tier (a growing index; shards are never appended in place), ``meta/info.json``, and
``meta/manifest.json`` last, as the commit point.

Deterministic: episode i is played from env seed ``episode_seed(seed, i)`` with policy
streams derived from that seed, so the same arguments give identical rows, whatever
``workers`` and the executor (``local`` processes or Ray, ``llmca_data.executor``) are. Workers
return each chunk's tables and only this process writes: finished chunks are staged under
``.staging/<job>/`` as they arrive; a rerun after a kill reuses them and plays only the
missing episodes. Episodes whose seed is already committed for that env and tier are
skipped, so a rerun adds nothing and a larger ``--episodes`` adds only the new ones. New
episodes get fresh ids above every id in the dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmca_data import __version__
from llmca_data.dataset import Dataset, DatasetWriter, renumber_episodes, writing
from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.envs.base import EnvSpec
from llmca_data.executor import check_executor, open_executor
from llmca_data.layout import STAGING_DIR
from llmca_data.rollout import episode_seed, run_episode, tier_rng
from llmca_data.shards import MAX_SHARD_BYTES, read_shard, write_shard
from llmca_data.tables import episodes_to_tables
from llmca_data.tiers import tier_policy, tier_spec

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(episodes_done, episodes_total)``."""


@dataclass(frozen=True)
class CollectConfig:
    """One collection run; saved in the staging folder and reflected in ``meta/info.json``."""

    env_id: str
    tier: str
    episodes: int
    """Episodes wanted for this (env, tier, seed); already committed ones are not played again."""
    seed: int = 0
    """Base seed; episode i uses env seed ``episode_seed(seed, i)`` (always < 2**31)."""
    workers: int = 1
    """Processes playing episodes in parallel (1 = in this process); Ray CPUs with ``executor="ray"``."""
    executor: str = "local"
    """``local`` (this process or a process pool) or ``ray``; the shards are the same either way."""
    chunk_episodes: int = 16
    """Episodes per staged chunk: the progress step and the most a kill can lose."""
    max_shard_bytes: int = MAX_SHARD_BYTES
    env_kwargs: dict[str, object] = field(default_factory=dict)

    def job_id(self) -> str:
        """Identity of the episode stream (not of its length), so a longer rerun reuses staged chunks."""
        key = json.dumps([self.env_id, self.tier, self.seed, self.env_kwargs, __version__], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CollectResult:
    env_id: str
    tier: str
    new_episodes: int
    new_steps: int
    skipped_episodes: int
    """Requested episodes already in the dataset."""
    files: list[str]
    seconds: float


_ENV_CACHE: dict[str, MultiAgentEnv] = {}


def _play_chunk(config: CollectConfig, indices: list[int]) -> tuple[pa.Table, pa.Table]:
    """Play episodes ``indices``; returns their steps and episodes tables (written by the caller only)."""
    key = json.dumps([config.env_id, config.env_kwargs], sort_keys=True)
    env = _ENV_CACHE.get(key)
    if env is None:
        env = _ENV_CACHE[key] = make_env(config.env_id, **config.env_kwargs)
    episodes = []
    for i in indices:
        seed = episode_seed(config.seed, i)
        policy = tier_policy(config.env_id, config.tier, tier_rng(seed))
        episodes.append(run_episode(env, policy, seed, config.tier))
    # Staged tables carry the episode *index* in `episode_id`; real ids are given at commit.
    return episodes_to_tables(episodes, indices, env.spec)


def _stage(stage: Path, indices: list[int], steps: pa.Table, eps: pa.Table) -> None:
    write_shard(stage, f"chunk-{indices[0]:08d}.steps.parquet", steps)
    write_shard(stage, f"chunk-{indices[0]:08d}.episodes.parquet", eps)  # written last: chunk complete


def _staged_chunks(stage: Path) -> dict[Path, np.ndarray]:
    """Complete staged chunks → their episode indices; incomplete or unreadable ones are removed."""
    out = {}
    for eps_path in sorted(stage.glob("chunk-*.episodes.parquet")):
        steps_path = eps_path.with_name(eps_path.name.replace(".episodes.", ".steps."))
        try:
            out[eps_path] = read_shard(eps_path, ["episode_id"]).column("episode_id").to_numpy()
            if not steps_path.exists():
                raise FileNotFoundError(steps_path)
        except Exception as exc:  # a damaged staging file is re-played, never trusted
            log.warning("discarding damaged staged chunk %s (%s); its episodes will be played again", eps_path, exc)
            out.pop(eps_path, None)
            eps_path.unlink(missing_ok=True)
            steps_path.unlink(missing_ok=True)
    return out


def collect(root: Path, config: CollectConfig, progress: Progress | None = None) -> CollectResult:
    """Collect ``config.episodes`` episodes into ``root`` (see the module docstring).

    Raises:
        DatasetLockedError: another process is writing ``root``.
        UnknownEnvError / UnknownTierError: bad ids; the message lists the valid ones.
    """
    started = time.perf_counter()
    tier_spec(config.tier)
    if config.episodes < 1 or config.workers < 1 or config.chunk_episodes < 1:
        raise ValueError("episodes, workers and chunk_episodes must all be >= 1")
    check_executor(config.executor)
    spec = make_env(config.env_id, **config.env_kwargs).spec
    job = config.job_id()
    stage = root / STAGING_DIR / job
    with writing(root) as ds:
        committed = set(ds.episodes_column("seed", config.env_id, config.tier).tolist())
        seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
        staged = _staged_chunks(stage)
        staged_idx = set(np.concatenate(list(staged.values())).tolist()) if staged else set()
        todo = [i for i, s in enumerate(seeds) if s not in committed and i not in staged_idx]
        skipped = sum(s in committed for s in seeds)
        stage.mkdir(parents=True, exist_ok=True)
        (stage / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
        done = config.episodes - len(todo)
        if progress:
            progress(done, config.episodes)
        chunks = [todo[k : k + config.chunk_episodes] for k in range(0, len(todo), config.chunk_episodes)]
        with open_executor(config.executor if chunks else "local", min(config.workers, max(1, len(chunks)))) as ex:
            for k, (steps, eps) in ex.map_unordered(_play_chunk, [(config, c) for c in chunks]):
                _stage(stage, chunks[k], steps, eps)
                done += len(chunks[k])
                if progress:
                    progress(done, config.episodes)
        files, new_steps, new_eps = _commit(ds, spec, config, stage, set(seeds) - committed)
    return CollectResult(config.env_id, config.tier, new_eps, new_steps, skipped, files, time.perf_counter() - started)


def collect_transitions(
    root: Path, config: CollectConfig, transitions: int, progress: Progress | None = None, max_rounds: int = 10
) -> CollectResult:
    """Collect episodes of ``config``'s env and tier until that tier holds ``transitions`` steps.

    Episodes are played in rounds from the same seed sequence as ``collect`` (``config.episodes``
    is the first round's size): after each round the mean episode length of the tier sets how
    many more to ask for (10% to spare), so the data is the first K episodes of the seed
    sequence for a K at most ~10% above the least that reaches the target. Resumable like
    ``collect``. Returns the rounds' totals.

    Raises:
        ValueError: ``transitions`` < 1, or the target not reached in ``max_rounds`` rounds.
    """
    if transitions < 1:
        raise ValueError(f"transitions must be >= 1, got {transitions}")
    started = time.perf_counter()
    episodes, new_eps, new_steps, skipped = config.episodes, 0, 0, 0
    files: list[str] = []
    for _ in range(max_rounds):
        result = collect(root, replace(config, episodes=episodes), progress)
        new_eps, new_steps, files = new_eps + result.new_episodes, new_steps + result.new_steps, files + result.files
        skipped = max(skipped, result.skipped_episodes)
        lengths = Dataset(root).episodes_column("length", config.env_id, config.tier)
        have = int(lengths.sum())
        if have >= transitions:
            return CollectResult(config.env_id, config.tier, new_eps, new_steps, skipped, files,
                                 time.perf_counter() - started)  # fmt: skip
        episodes += max(1, math.ceil(1.1 * (transitions - have) / max(1.0, float(lengths.mean()))))
    raise ValueError(
        f"{config.env_id} {config.tier}: {have} of {transitions} transitions after {max_rounds} rounds; "
        "ask for fewer transitions or more episodes per round"
    )


def _commit(
    ds: DatasetWriter, spec: EnvSpec, config: CollectConfig, stage: Path, wanted_seeds: set[int]
) -> tuple[list[str], int, int]:
    """Move the staged episodes of this run into new shards, then write info and manifest."""
    chunks = _staged_chunks(stage)
    steps_parts, eps_parts, used = [], [], []
    for eps_path in chunks:
        eps = read_shard(eps_path)
        keep = pc.is_in(eps.column("seed"), pa.array(sorted(wanted_seeds), pa.int64()))
        keep = pc.and_(keep, pc.less(eps.column("episode_id"), config.episodes))
        steps = read_shard(eps_path.with_name(eps_path.name.replace(".episodes.", ".steps.")))
        if pc.all(pc.less(eps.column("episode_id"), config.episodes)).as_py():
            used.append(eps_path)  # everything in it is now committed (kept here or earlier)
        kept_idx = eps.filter(keep).column("episode_id")
        eps_parts.append(eps.filter(keep))
        steps_parts.append(steps.filter(pc.is_in(steps.column("episode_id"), kept_idx)))
    if not eps_parts or sum(t.num_rows for t in eps_parts) == 0:
        return [], 0, 0
    eps = pa.concat_tables(eps_parts).sort_by("episode_id")
    steps = pa.concat_tables(steps_parts).sort_by([("episode_id", "ascending"), ("t", "ascending")])
    steps, eps = renumber_episodes(steps, eps, ds.next_episode_id())
    files = ds.append_episodes(spec, config.tier, steps, eps, max_shard_bytes=config.max_shard_bytes)
    policy_ids = sorted({p.split("/")[0] for p in eps.column("policy_id").to_pylist()})
    ds.record_collection(spec, config.tier, policy_ids, executor=config.executor)
    ds.commit()
    for eps_path in used:
        eps_path.unlink()
        eps_path.with_name(eps_path.name.replace(".episodes.", ".steps.")).unlink()
    if not any(stage.glob("chunk-*")):
        (stage / "config.json").unlink(missing_ok=True)
        stage.rmdir()
    return files, steps.num_rows, eps.num_rows
