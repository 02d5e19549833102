"""Add one critic's credits to every step of a dataset.

Input: a dataset directory and a critic (built-in id or any ``Critic``). Output, per
affected (env, tier) shard: the steps shard rewritten with the column ``credit_<critic>``
(``[N] float32``; NaN where the critic failed) and the annotations shard with one row per
(episode, critic), both committed together through the dataset journal; ``meta/info.json``
records the critic and its parameters.

Idempotent: episodes that already have finite credits from this critic are skipped (a rerun
retries only failed episodes); ``force`` recomputes everything. Critics that re-simulate
replay each stored episode through ``replay`` (which refuses an episode the installed env
does not reproduce: that episode is marked failed with the reason), so a downloaded dataset
can be annotated too. An interrupted run leaves every shard committed before the
interruption annotated and the rest untouched; the dataset stays valid.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmca_data import __version__
from llmca_data.envs import make_env
from llmca_data.envs.base import EnvSpec
from llmca_data.info import load_info, spec_from_info
from llmca_data.layout import INFO_PATH, ShardName
from llmca_data.rollout import Episode
from llmca_data.schema import annotations_schema, credit_column, from_fsl, fsl, to_fsl
from llmca_data.shards import Commit, DatasetLock, Manifest, read_shard, write_json_atomic
from llmca_data.tables import tables_to_episodes

from .critic import Critic, CriticOutput

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AnnotateResult:
    critic_id: str
    episodes: int
    """Episodes annotated by this run."""
    skipped: int
    """Episodes that already had credits from this critic."""
    failed: int
    steps: int
    env_steps: int
    """Env steps the critic simulated (re-simulating critics)."""
    shards: list[str]
    seconds: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class _Work:
    shard: ShardName
    todo: np.ndarray  # episode ids to annotate
    skipped: int


_ENVS: dict[str, Any] = {}


def _run_chunk(critic: Critic, spec_kwargs: dict[str, Any], episodes: list[Episode]) -> list[CriticOutput]:
    env = None
    if critic.needs_env and episodes:
        key = json.dumps([episodes[0].env_id, spec_kwargs], sort_keys=True)
        env = _ENVS.get(key) or _ENVS.setdefault(key, make_env(episodes[0].env_id, **spec_kwargs))
    batch = getattr(critic, "annotate_batch", None)
    if batch is not None:  # critics with their own concurrency (the LLM critic) take the whole list
        outputs: list[CriticOutput] = batch(episodes, env)
        return outputs
    return [critic.annotate(e, env) for e in episodes]


def annotate(
    root: Path,
    critic: Critic,
    *,
    envs: tuple[str, ...] = (),
    tiers: tuple[str, ...] = (),
    workers: int = 1,
    force: bool = False,
    limit: int = 0,
    chunk_episodes: int = 8,
    progress: Progress | None = None,
) -> AnnotateResult:
    """Annotate the dataset at ``root`` with ``critic`` (see the module docstring).

    ``limit`` > 0 keeps the first ``limit`` episodes of each env (in episode-id order, within the
    ``tiers`` filter), so the same command always touches the same episodes. Critics with an
    ``annotate_batch(episodes, env)`` method get all episodes of a shard at once, in this process.
    """
    started = time.perf_counter()
    column = credit_column(critic.critic_id)
    with DatasetLock(root):
        manifest = Manifest.load(root)
        info = load_info(root)
        plan = _plan(root, manifest, column, envs, tiers, force, limit)
        total = int(sum(w.todo.size for w in plan))
        _record_critic(root, info, critic)
        done = failed = steps = env_steps = tokens_in = tokens_out = 0
        cost = 0.0
        shards: list[str] = []
        if progress:
            progress(0, total)
        ctx = multiprocessing.get_context("spawn")
        batched = hasattr(critic, "annotate_batch")
        pool = ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 and not batched else None
        try:
            for work in plan:
                if work.todo.size == 0:
                    continue
                spec = spec_from_info(info["envs"][work.shard.env_id])
                steps_table, episodes = _load_episodes(root, manifest, work, spec)
                size = len(episodes) if batched else chunk_episodes
                chunks = [episodes[k : k + size] for k in range(0, len(episodes), size)]
                outputs: list[CriticOutput] = []
                if pool is None:
                    for chunk in chunks:
                        outputs += _run_chunk(critic, spec.kwargs, chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                else:
                    k = len(chunks)
                    results = pool.map(_run_chunk, [critic] * k, [spec.kwargs] * k, chunks)
                    for chunk, outs in zip(chunks, results, strict=True):
                        outputs += outs
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                commit = Commit(root, manifest)
                _write_credits(root, commit, work.shard, steps_table, spec, critic, episodes, outputs)
                commit.apply()
                shards.append(str(work.shard))
                failed += sum(o.status == "failed" for o in outputs)
                steps += sum(e.length for e in episodes)
                env_steps += sum(int(o.extra.get("env_steps", 0)) for o in outputs)
                tokens_in += sum(o.tokens_in for o in outputs)
                tokens_out += sum(o.tokens_out for o in outputs)
                cost += sum(o.cost_usd for o in outputs)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            close = getattr(critic, "close", None)
            if close is not None:
                close()
    skipped = int(sum(w.skipped for w in plan))
    seconds = time.perf_counter() - started
    return AnnotateResult(
        critic.critic_id, done, skipped, failed, steps, env_steps, shards, seconds, tokens_in, tokens_out, cost
    )


def _plan(
    root: Path,
    manifest: Manifest,
    column: str,
    envs: tuple[str, ...],
    tiers: tuple[str, ...],
    force: bool,
    limit: int = 0,
) -> list[_Work]:
    present = sorted({n.env_id for n in manifest.shards(kind="steps")})
    unknown = [e for e in envs if e not in present]
    if unknown:
        raise ValueError(f"{root} has no env {', '.join(unknown)}; it holds {', '.join(present) or 'nothing'}")
    plan = []
    names = [
        n
        for n in manifest.shards(kind="steps")
        if not ((envs and n.env_id not in envs) or (tiers and n.tier not in tiers))
    ]
    allowed: dict[str, np.ndarray] = {}
    if limit > 0:
        for env_id in sorted({n.env_id for n in names}):
            ids = [
                read_shard(root / str(n), ["episode_id"]).column("episode_id").to_numpy()
                for n in names
                if n.env_id == env_id
            ]
            allowed[env_id] = np.unique(np.concatenate(ids))[:limit]
    for name in names:
        table = read_shard(root / str(name), ["episode_id", *([column] if column in _columns(root, name) else [])])
        ids = table.column("episode_id").to_numpy()
        if limit > 0:
            keep = np.isin(ids, allowed[name.env_id])
            table, ids = table.filter(pa.array(keep)), ids[keep]
        if column not in table.column_names or force:
            todo = np.unique(ids)
        else:
            n = table.schema.field(column).type.list_size
            bad = np.isnan(from_fsl(table.column(column), (n,))).any(axis=1)  # [M]
            todo = np.unique(ids[bad])
        plan.append(_Work(name, todo, int(np.unique(ids).size - todo.size)))
    if not plan:
        raise ValueError(
            f"{root}: no steps shards match envs={list(envs)} tiers={list(tiers)}; run `llmca collect` first"
        )
    return plan


def _columns(root: Path, name: ShardName) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(root / str(name)).names)


def _record_critic(root: Path, info: dict[str, Any], critic: Critic) -> None:
    critics = info.setdefault("critics", {})
    critics[critic.critic_id] = {
        "column": credit_column(critic.critic_id),
        "params": critic.params(),
        "package_version": __version__,
    }
    write_json_atomic(root / INFO_PATH, info)


def plan_episodes(
    root: Path,
    critic_id: str,
    envs: tuple[str, ...] = (),
    tiers: tuple[str, ...] = (),
    force: bool = False,
    limit: int = 0,
) -> list[tuple[EnvSpec, list[Episode]]]:
    """The episodes ``annotate`` would give ``critic_id``, per shard, without touching anything (dry runs)."""
    manifest = Manifest.load(root)
    info = load_info(root)
    out = []
    for work in _plan(root, manifest, credit_column(critic_id), envs, tiers, force, limit):
        if work.todo.size:
            spec = spec_from_info(info["envs"][work.shard.env_id])
            out.append((spec, _load_episodes(root, manifest, work, spec)[1]))
    return out


def _load_episodes(root: Path, manifest: Manifest, work: _Work, spec: EnvSpec) -> tuple[pa.Table, list[Episode]]:
    steps = read_shard(root / str(work.shard))
    names = manifest.shards(work.shard.env_id, "episodes", work.shard.tier)
    eps = pa.concat_tables([read_shard(root / str(n)) for n in names])
    wanted = pa.array(work.todo, pa.int64())
    sub_steps = steps.filter(pc.is_in(steps.column("episode_id"), wanted))
    sub_eps = eps.filter(pc.is_in(eps.column("episode_id"), wanted)).sort_by("episode_id")
    return steps, tables_to_episodes(sub_steps, sub_eps, spec)


def _write_credits(
    root: Path,
    commit: Commit,
    shard: ShardName,
    steps: pa.Table,
    spec: EnvSpec,
    critic: Critic,
    episodes: list[Episode],
    outputs: list[CriticOutput],
) -> None:
    """Stage the steps shard with the new credits and the annotations shard with the new rows."""
    n = spec.n_agents
    column = credit_column(critic.critic_id)
    ids = steps.column("episode_id").to_numpy()
    if column in steps.column_names:
        credits = from_fsl(steps.column(column), (n,)).copy()  # [M, N]
    else:
        credits = np.full((steps.num_rows, n), np.nan, np.float32)  # [M, N]
    for episode, out in zip(episodes, outputs, strict=True):
        lo = int(np.searchsorted(ids, episode.episode_id, "left"))
        if out.credits.shape != (episode.length, n):
            raise ValueError(
                f"{critic.critic_id}: credits of shape {out.credits.shape} for {episode.length} steps, {n} agents"
            )
        credits[lo : lo + episode.length] = out.credits
    array = to_fsl(credits.astype(np.float32), pa.float32())
    if column in steps.column_names:
        steps = steps.set_column(
            steps.schema.get_field_index(column), pa.field(column, fsl(pa.float32(), n), nullable=False), array
        )
    else:
        steps = steps.append_column(pa.field(column, fsl(pa.float32(), n), nullable=False), array)
    if any(o.tasks is not None for o in outputs):
        steps = _with_tasks(steps, critic.critic_id, n, ids, episodes, outputs)
    commit.write(str(shard), steps)

    rows = annotation_rows(critic, episodes, outputs, spec)
    ann_name = ShardName(shard.env_id, "annotations", shard.tier, shard.index)
    ann_path = root / str(ann_name)
    if str(ann_name) in commit.manifest.files:
        old = read_shard(ann_path)
        replaced = pc.and_(
            pc.equal(old.column("critic"), critic.critic_id),
            pc.is_in(old.column("episode_id"), rows.column("episode_id")),
        )
        rows = pa.concat_tables([old.filter(pc.invert(replaced)).cast(rows.schema), rows])
    commit.write(str(ann_name), rows.sort_by([("episode_id", "ascending"), ("critic", "ascending")]))


def task_column(critic_id: str) -> str:
    """Column of a critic's task assignments: ``llm-taca`` → ``task_llm_taca``."""
    return "task_" + critic_id.replace("-", "_")


def _with_tasks(
    steps: pa.Table, critic_id: str, n: int, ids: np.ndarray, episodes: list[Episode], outputs: list[CriticOutput]
) -> pa.Table:
    """Set the ``[N] int16`` task column (−1 where no task was assigned or the critic failed)."""
    column = task_column(critic_id)
    if column in steps.column_names:
        tasks = from_fsl(steps.column(column), (n,)).astype(np.int16)  # [M, N]
    else:
        tasks = np.full((steps.num_rows, n), -1, np.int16)  # [M, N]
    for episode, out in zip(episodes, outputs, strict=True):
        lo = int(np.searchsorted(ids, episode.episode_id, "left"))
        tasks[lo : lo + episode.length] = -1 if out.tasks is None else out.tasks
    field = pa.field(column, fsl(pa.int16(), n), nullable=False)
    array = to_fsl(tasks, pa.int16())
    if column in steps.column_names:
        return steps.set_column(steps.schema.get_field_index(column), field, array)
    return steps.append_column(field, array)


def annotation_rows(critic: Critic, episodes: list[Episode], outputs: list[CriticOutput], spec: EnvSpec) -> pa.Table:
    """The annotations table rows of ``outputs`` (one per episode)."""
    n = spec.n_agents
    params = json.dumps(critic.params(), sort_keys=True)
    rationale = [o.rationale if o.rationale is not None else [""] * n for o in outputs]
    data = {
        "episode_id": [e.episode_id for e in episodes],
        "critic": [critic.critic_id] * len(episodes),
        "model": [o.model for o in outputs],
        "prompt_version": [o.prompt_version for o in outputs],
        "params": [params] * len(episodes),
        "status": [o.status for o in outputs],
        "error": [o.error for o in outputs],
        "rationale": rationale,
        "summary": [o.summary for o in outputs],
        "tokens_in": [o.tokens_in for o in outputs],
        "tokens_out": [o.tokens_out for o in outputs],
        "latency_s": [o.latency_s for o in outputs],
        "cost_usd": [o.cost_usd for o in outputs],
        "raw_response": [o.raw_response for o in outputs],
    }
    return pa.table(data, schema=annotations_schema(spec))
