"""Score one critic against a reference critic over a dataset directory (the credit-assignment benchmark).

Input: a dataset directory (DESIGN.md §6) whose committed steps shards carry the credit
columns of both critics (``credit_<id>`` with ``-`` → ``_``, e.g. ``counterfactual-h5`` →
``credit_counterfactual_h5``), optionally restricted to some envs and tiers. Only the
columns ``episode_id``, ``reward_team`` and the two credit columns are read, shard by shard,
with page checksums verified.

Output: a list of rows ``{"env_id", "tier", **CreditScores.to_dict()}`` (metrics defined in
``llmca_data.annotation.metrics``): one per (env, tier) that has steps shards, in env and
then tier order; after each env's tiers one row for that env with ``tier == "all"``; last
one overall row with ``env_id == tier == "all"``. The ``all`` rows pool the steps, pairs
and episodes of the rows they cover (envs may differ in agent count), so their counts are
the sums of the per-tier counts and their rates are rates over the pooled data, not means
of rates. An empty list when no steps shard matches.

A credit column that is absent from some shards (a critic run on part of the dataset)
counts as NaN there: those steps are ``nan_steps`` and lower the critic's ``coverage``. A
column absent from every selected shard is an ``UnknownCriticError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmca_data.errors import ShardError, UnknownCriticError, UnknownEnvError
from llmca_data.layout import INFO_PATH, ShardName
from llmca_data.schema import credit_column, from_fsl
from llmca_data.shards import Manifest, read_shard
from llmca_data.tiers import tier_spec

from .metrics import DEFAULT_TOL, CreditTally, combine_tallies, tally_credits

ALL = "all"
"""``env_id`` / ``tier`` of the pooled rows."""
Names = list[str] | None
"""Env ids or tiers to score; None: every one present."""


def critic_eval(
    root: Path, critic: str, reference: str, envs: Names = None, tiers: Names = None, tol: float = DEFAULT_TOL
) -> list[dict[str, Any]]:
    """Score ``critic`` against ``reference`` per (env, tier), per env and overall.

    Args and Raises: as ``credit_tallies``.

    Returns:
        Rows ``{"env_id", "tier", **scores}`` as the module docstring describes.
    """
    tallies = credit_tallies(root, critic, reference, envs, tiers, tol)
    if not tallies:
        return []
    rows: list[dict[str, Any]] = []
    env_tallies: list[CreditTally] = []
    for env_id in dict.fromkeys(env for env, _ in tallies):
        tier_tallies = {tier: tally for (env, tier), tally in tallies.items() if env == env_id}
        rows.extend(_row(env_id, tier, tally) for tier, tally in tier_tallies.items())
        env_tallies.append(combine_tallies(list(tier_tallies.values())))
        rows.append(_row(env_id, ALL, env_tallies[-1]))
    rows.append(_row(ALL, ALL, combine_tallies(env_tallies)))
    return rows


def credit_tallies(
    root: Path, critic: str, reference: str, envs: Names = None, tiers: Names = None, tol: float = DEFAULT_TOL
) -> dict[tuple[str, str], CreditTally]:
    """The metrics' tallies of ``critic`` against ``reference`` per (env, tier), in env then tier order.

    Tallies of disjoint datasets pool with ``combine_tallies`` (e.g. several seeds' runs).

    Args:
        root: dataset directory.
        critic: hyphenated id of the critic under test, e.g. ``llm-mca``.
        reference: hyphenated id of the reference critic, e.g. ``shapley``.
        envs: env ids to score (default: every env with steps shards).
        tiers: tiers to score (default: every tier present).
        tol: tolerance of the metrics (see ``llmca_data.annotation.metrics``).

    Returns:
        One tally per (env, tier) with steps shards; empty when no steps shard matches.

    Raises:
        UnknownCriticError: a credit column is in none of the selected shards; the message
            lists the critic ids the dataset has.
        UnknownEnvError: an env in ``envs`` has no steps shards in ``root``.
        UnknownTierError: a name in ``tiers`` is not a contract tier.
        ShardError: a shard is unreadable or corrupt.
    """
    root = Path(root)
    all_steps = Manifest.load(root).shards(kind="steps")
    present_envs = sorted({n.env_id for n in all_steps})
    if envs is not None:
        missing = [e for e in envs if e not in present_envs]
        if missing:
            raise UnknownEnvError(
                f"{root} has no steps for env {', '.join(missing)}; envs present: {', '.join(present_envs) or 'none'}"
            )
    for tier in tiers or ():
        tier_spec(tier)
    selected = [n for n in all_steps if (envs is None or n.env_id in envs) and (tiers is None or n.tier in tiers)]
    if not selected:
        return {}
    schemas = {n: _schema(root, n) for n in selected}
    columns = (credit_column(critic), credit_column(reference))
    for critic_id, col in zip((critic, reference), columns, strict=True):
        if not any(col in s.names for s in schemas.values()):
            raise UnknownCriticError(_unknown_message(root, critic_id, col, all_steps))
    tallies: dict[tuple[str, str], CreditTally] = {}
    for env_id, tier in sorted({(n.env_id, n.tier) for n in selected}):
        names = [n for n in selected if n.env_id == env_id and n.tier == tier]
        crit, ref, reward, episode = _load(root, names, schemas, columns)
        tallies[env_id, tier] = tally_credits(crit, ref, reward, episode, tol)
    return tallies


def _row(env_id: str, tier: str, tally: CreditTally) -> dict[str, Any]:
    return {"env_id": env_id, "tier": tier, **tally.scores().to_dict()}


def _schema(root: Path, name: ShardName) -> pa.Schema:
    path = root / str(name)
    try:
        schema: pa.Schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(
            f"{path}: unreadable or corrupt Parquet ({exc}); re-download or re-collect this shard "
            "(`llmca validate` lists every damaged file)"
        ) from exc
    return schema


def _n_agents(schema: pa.Schema, columns: Iterable[str]) -> int:
    """Agent count from the first per-agent column of the shard."""
    for name in (*columns, "action", "reward_env"):
        if name in schema.names and pa.types.is_fixed_size_list(schema.field(name).type):
            return int(schema.field(name).type.list_size)
    raise ShardError(f"cannot tell the number of agents: no per-agent column among {schema.names}")


def _load(
    root: Path, names: list[ShardName], schemas: dict[ShardName, pa.Schema], columns: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Critic ``[M, N]``, reference ``[M, N]``, reward_team ``[M]``, episode_id ``[M]`` of these shards."""
    parts: list[tuple[np.ndarray, ...]] = []
    for name in names:
        schema = schemas[name]
        n = _n_agents(schema, columns)
        wanted = ["episode_id", "reward_team", *dict.fromkeys(c for c in columns if c in schema.names)]
        table = read_shard(root / str(name), wanted)
        credits = []
        for col in columns:
            if col in schema.names:
                credits.append(from_fsl(table.column(col), (n,)).astype(np.float32))  # [M, N]
            else:
                credits.append(np.full((table.num_rows, n), np.nan, np.float32))  # [M, N]
        reward = table.column("reward_team").to_numpy()  # [M]
        episode = table.column("episode_id").to_numpy()  # [M]
        parts.append((credits[0], credits[1], reward, episode))
    crit, ref, reward, episode = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return crit, ref, reward, episode


def _present_critics(root: Path, names: list[ShardName]) -> list[str]:
    """Critic ids with a credit column in any of ``names``, spelled as ``meta/info.json`` spells them."""
    columns = {f for n in names for f in _schema(root, n).names if f.startswith("credit_")}
    try:
        info = json.loads((root / INFO_PATH).read_text())
    except (OSError, ValueError):
        info = {}
    critics = info.get("critics") if isinstance(info, dict) else None
    ids: list[object] = []
    if isinstance(critics, dict):
        ids = list(critics)
    elif isinstance(critics, list):
        ids = [c.get("id") if isinstance(c, dict) else c for c in critics]
    spelled = {credit_column(i): i for i in ids if isinstance(i, str)}
    return sorted(spelled.get(c, c.removeprefix("credit_").replace("_", "-")) for c in columns)


def _unknown_message(root: Path, critic_id: str, column: str, names: list[ShardName]) -> str:
    present = _present_critics(root, names)
    return (
        f"critic {critic_id!r} has no column {column} in the selected steps shards of {root}; "
        f"critics present: {', '.join(present) or 'none'}; "
        f"run `llmca annotate {root} --critic {critic_id}` to add its credits"
    )
