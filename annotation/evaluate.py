"""Score one critic against a reference critic over a dataset directory (the credit-assignment benchmark).

Input: a dataset directory (DESIGN.md §6) whose committed steps shards carry the credit
columns of both critics (``credit_<id>`` with ``-`` → ``_``, e.g. ``counterfactual-h5`` →
``credit_counterfactual_h5``), optionally restricted to some envs and tiers. Only the
columns ``episode_id``, ``reward_team`` and the credit columns are read, each shard once
(``Dataset.scan``, also when ``critic_eval_pairs`` scores several pairs), with page
checksums verified.

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

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data.dataset import Dataset
from llmca_data.errors import ShardError, UnknownCriticError, UnknownEnvError
from llmca_data.layout import ShardName
from llmca_data.schema import credit_column, from_fsl
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
    return _rows(credit_tallies(root, critic, reference, envs, tiers, tol))


def _rows(tallies: dict[tuple[str, str], CreditTally]) -> list[dict[str, Any]]:
    """Per (env, tier), per env and overall rows of one pair's tallies."""
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


def critic_eval_pairs(root: Path, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``critic_eval`` of each distinct (critic, reference) pair, each scored once, every shard read once."""
    distinct = list(dict.fromkeys(pairs))
    if not distinct:
        return {}
    tallies = _pair_tallies(Dataset.open(root), distinct, None, None, DEFAULT_TOL)
    return {pair: _rows(t) for pair, t in tallies.items()}


def card_rows(evals: dict[tuple[str, str], list[dict[str, Any]]], reference: str) -> list[dict[str, Any]]:
    """The dataset card's critic-eval rows: every scored critic against ``reference``, labelled."""
    return [
        {**row, "critic": critic, "reference": ref}
        for (critic, ref), rows in evals.items()
        if ref == reference
        for row in rows
    ]


def critic_eval_all(root: Path, reference: str) -> list[dict[str, Any]]:
    """Every critic of the dataset scored against ``reference`` (the card's rows); [] without it."""
    critics = _present_critics(Dataset.open(root))
    if reference not in critics:
        return []
    return card_rows(critic_eval_pairs(root, ((c, reference) for c in critics if c != reference)), reference)


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
    return _pair_tallies(Dataset.open(root), [(critic, reference)], envs, tiers, tol)[critic, reference]


def _pair_tallies(
    ds: Dataset, pairs: list[tuple[str, str]], envs: Names, tiers: Names, tol: float
) -> dict[tuple[str, str], dict[tuple[str, str], CreditTally]]:
    """``credit_tallies`` of several (critic, reference) pairs from one scan of the selected shards."""
    all_steps = ds.shards(kind="steps")
    present_envs = sorted({n.env_id for n in all_steps})
    if envs is not None:
        missing = [e for e in envs if e not in present_envs]
        if missing:
            raise UnknownEnvError(
                f"{ds.root} has no steps for env {', '.join(missing)}; "
                f"envs present: {', '.join(present_envs) or 'none'}"
            )
    for tier in tiers or ():
        tier_spec(tier)
    selected = [n for n in all_steps if (envs is None or n.env_id in envs) and (tiers is None or n.tier in tiers)]
    if not selected:
        return {pair: {} for pair in pairs}
    critic_ids = list(dict.fromkeys(c for pair in pairs for c in pair))
    for critic_id in critic_ids:
        if not any(credit_column(critic_id) in ds.schema(n).names for n in selected):
            raise UnknownCriticError(_unknown_message(ds, critic_id))
    credits = _Credits([credit_column(c) for c in critic_ids])
    ds.scan([credits], selected)
    return {
        (critic, ref): {
            key: tally_credits(*credits.arrays(key, credit_column(critic), credit_column(ref)), tol)
            for key in sorted(credits.parts)
        }
        for critic, ref in pairs
    }


def _row(env_id: str, tier: str, tally: CreditTally) -> dict[str, Any]:
    return {"env_id": env_id, "tier": tier, **tally.scores().to_dict()}


def _n_agents(schema: pa.Schema, columns: Iterable[str]) -> int:
    """Agent count from the first per-agent column of the shard."""
    for name in (*columns, "action", "reward_env"):
        if name in schema.names and pa.types.is_fixed_size_list(schema.field(name).type):
            return int(schema.field(name).type.list_size)
    raise ShardError(f"cannot tell the number of agents: no per-agent column among {schema.names}")


class _Credits:
    """A ``Dataset.scan`` visitor: per (env, tier), ``episode_id``, ``reward_team`` and the credit columns."""

    def __init__(self, credit_columns: Sequence[str]) -> None:
        self.credit_columns = list(credit_columns)
        self.parts: dict[tuple[str, str], list[tuple[int, pa.Table]]] = {}
        self._n_agents: dict[ShardName, int] = {}

    def columns(self, name: ShardName, schema: pa.Schema) -> list[str]:
        self._n_agents[name] = _n_agents(schema, self.credit_columns)  # from the full schema
        return ["episode_id", "reward_team", *self.credit_columns]

    def visit(self, name: ShardName, table: pa.Table) -> None:
        self.parts.setdefault((name.env_id, name.tier), []).append((self._n_agents[name], table))

    def arrays(
        self, key: tuple[str, str], critic: str, reference: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Critic ``[M, N]``, reference ``[M, N]`` (NaN in shards without the column), reward_team ``[M]``,
        episode_id ``[M]`` of one (env, tier)."""
        parts: list[tuple[np.ndarray, ...]] = []
        for n, table in self.parts[key]:
            credits = [
                from_fsl(table.column(c), (n,)).astype(np.float32)  # [M, N]
                if c in table.column_names
                else np.full((table.num_rows, n), np.nan, np.float32)  # [M, N]
                for c in (critic, reference)
            ]
            parts.append((*credits, table.column("reward_team").to_numpy(), table.column("episode_id").to_numpy()))
        crit, ref, reward, episode = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
        return crit, ref, reward, episode


def _present_critics(ds: Dataset) -> list[str]:
    """Critic ids with a credit column in the committed steps shards, spelled as ``meta/info.json`` spells them."""
    return sorted(ds.critics().values())


def _unknown_message(ds: Dataset, critic_id: str) -> str:
    return (
        f"critic {critic_id!r} has no column {credit_column(critic_id)} in the selected steps shards of {ds.root}; "
        f"critics present: {', '.join(_present_critics(ds)) or 'none'}; "
        f"run `llmca annotate {ds.root} --critic {critic_id}` to add its credits"
    )
