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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmca_data.dataset import Dataset, EpisodeCredits, writing
from llmca_data.envs import make_env
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import UnknownEnvError, UnknownTierError
from llmca_data.executor import check_executor, open_executor
from llmca_data.info import spec_from_info
from llmca_data.layout import ShardName
from llmca_data.rollout import Episode
from llmca_data.schema import annotations_schema, credit_column, from_fsl
from llmca_data.tables import tables_to_episodes

from .critic import Critic, CriticOutput, run_critic

if TYPE_CHECKING:
    from .llm.critic import LLMCritic

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
    return run_critic(critic, episodes, env)


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
    executor: str = "local",
) -> AnnotateResult:
    """Annotate the dataset at ``root`` with ``critic`` (see the module docstring).

    ``limit`` > 0 keeps the first ``limit`` episodes of each env (in episode-id order, within the
    ``tiers`` filter), so the same command always touches the same episodes. Critics with an
    ``annotate_batch(episodes, env)`` method get all episodes of a shard at once, in this process.
    ``executor`` ``ray`` runs the chunks as Ray tasks (``llmca_data.executor``); the workers return
    credits and this process alone writes, so the shards equal a local run's.
    """
    started = time.perf_counter()
    column = credit_column(critic.critic_id)
    with writing(root, create=False) as ds:
        info = ds.info()
        plan = _plan(ds, column, envs, tiers, force, limit)
        total = int(sum(w.todo.size for w in plan))
        done = failed = steps = env_steps = tokens_in = tokens_out = 0
        cost = 0.0
        shards: list[str] = []
        if progress:
            progress(0, total)
        batched = hasattr(critic, "annotate_batch")  # the LLM critics: one request fan-out, in this process
        kind = "local" if batched or total == 0 else check_executor(executor)
        try:
            with open_executor(kind, 1 if batched else workers) as ex:
                for work in plan:
                    if work.todo.size == 0:
                        continue
                    spec = spec_from_info(info["envs"][work.shard.env_id])
                    steps_table, episodes = _load_episodes(ds, work, spec)
                    size = len(episodes) if batched else chunk_episodes
                    chunks = [episodes[k : k + size] for k in range(0, len(episodes), size)]
                    by_chunk: dict[int, list[CriticOutput]] = {}
                    for k, outs in ex.map_unordered(_run_chunk, [(critic, spec.kwargs, chunk) for chunk in chunks]):
                        by_chunk[k] = outs
                        done += len(chunks[k])
                        if progress:
                            progress(done, total)
                    outputs = [o for k in range(len(chunks)) for o in by_chunk[k]]
                    credits = [
                        EpisodeCredits(e.episode_id, o.credits, o.tasks) for e, o in zip(episodes, outputs, strict=True)
                    ]
                    rows = annotation_rows(critic, episodes, outputs, spec)
                    ds.write_critic(work.shard, steps_table, critic.critic_id, spec.n_agents, credits, rows)
                    ds.record_critic(critic.critic_id, critic.params(), kind)
                    ds.commit()
                    shards.append(str(work.shard))
                    failed += sum(o.status == "failed" for o in outputs)
                    steps += sum(e.length for e in episodes)
                    env_steps += sum(int(o.extra.get("env_steps", 0)) for o in outputs)
                    tokens_in += sum(o.tokens_in for o in outputs)
                    tokens_out += sum(o.tokens_out for o in outputs)
                    cost += sum(o.cost_usd for o in outputs)
        finally:
            close = getattr(critic, "close", None)
            if close is not None:
                close()
    skipped = int(sum(w.skipped for w in plan))
    seconds = time.perf_counter() - started
    return AnnotateResult(
        critic.critic_id, done, skipped, failed, steps, env_steps, shards, seconds, tokens_in, tokens_out, cost
    )


def _plan(
    ds: Dataset,
    column: str,
    envs: tuple[str, ...],
    tiers: tuple[str, ...],
    force: bool,
    limit: int = 0,
) -> list[_Work]:
    root = ds.root
    present = ds.envs()
    unknown = [e for e in envs if e not in present]
    if unknown:
        raise UnknownEnvError(
            f"{root} has no env {', '.join(unknown)}; it holds {', '.join(present) or 'nothing'}: "
            "pick --env from those, or collect that env first"
        )
    present_tiers = sorted({n.tier for n in ds.shards(kind="steps")})
    if missing_tiers := [t for t in tiers if t not in present_tiers]:
        raise UnknownTierError(
            f"{root} has no tier {', '.join(missing_tiers)}; it holds {', '.join(present_tiers) or 'nothing'}: "
            "pick --tier from those, or collect that tier first"
        )
    plan = []
    names = [
        n for n in ds.shards(kind="steps") if not ((envs and n.env_id not in envs) or (tiers and n.tier not in tiers))
    ]
    allowed: dict[str, np.ndarray] = {}
    if limit > 0:
        for env_id in sorted({n.env_id for n in names}):
            ids = [ds.read(n, ["episode_id"]).column("episode_id").to_numpy() for n in names if n.env_id == env_id]
            allowed[env_id] = np.unique(np.concatenate(ids))[:limit]
    for name in names:
        table = ds.read(name, ["episode_id", *([column] if column in ds.schema(name).names else [])])
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


def plan_episodes(
    root: Path,
    critic_id: str,
    envs: tuple[str, ...] = (),
    tiers: tuple[str, ...] = (),
    force: bool = False,
    limit: int = 0,
) -> list[tuple[EnvSpec, list[Episode]]]:
    """The episodes ``annotate`` would give ``critic_id``, per shard, without touching anything (dry runs)."""
    ds = Dataset.open(root)
    info = ds.info()
    out = []
    for work in _plan(ds, credit_column(critic_id), envs, tiers, force, limit):
        if work.todo.size:
            spec = spec_from_info(info["envs"][work.shard.env_id])
            out.append((spec, _load_episodes(ds, work, spec)[1]))
    return out


def _load_episodes(ds: Dataset, work: _Work, spec: EnvSpec) -> tuple[pa.Table, list[Episode]]:
    steps = ds.read(work.shard)
    eps = pa.concat_tables([ds.read(n) for n in ds.shards(work.shard.env_id, "episodes", work.shard.tier)])
    wanted = pa.array(work.todo, pa.int64())
    sub_steps = steps.filter(pc.is_in(steps.column("episode_id"), wanted))
    sub_eps = eps.filter(pc.is_in(eps.column("episode_id"), wanted)).sort_by("episode_id")
    return steps, tables_to_episodes(sub_steps, sub_eps, spec)


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


def llm_dry_run(
    root: Path,
    critic: LLMCritic,
    envs: tuple[str, ...] = (),
    tiers: tuple[str, ...] = (),
    limit: int = 0,
    force: bool = False,
) -> dict[str, float]:
    """What ``annotate`` would send: requests, cached ones, prompt tokens and cost; sends nothing."""
    totals: dict[str, float] = {"episodes": 0, "requests": 0, "cached": 0, "prompt_tokens": 0,
                                "max_output_tokens": 0, "estimated_cost_usd": 0.0}  # fmt: skip
    for spec, episodes in plan_episodes(root, critic.critic_id, envs, tiers, force, limit):
        requests, _ = critic.plan(episodes, make_env(spec.env_id, **spec.kwargs))
        totals["episodes"] += len(episodes)
        for key, value in critic.estimate(requests).items():
            totals[key] += value
    return totals
