"""Episodes ↔ Arrow tables.

Input: ``Episode`` objects (or the steps/episodes tables of a dataset). Output: the steps
and episodes tables of DESIGN.md §6 (or ``Episode`` objects again, for replay).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from llmca_data.envs.base import EnvSpec
from llmca_data.rollout import Episode
from llmca_data.schema import episodes_schema, from_fsl, steps_schema, table_of


def episodes_to_tables(episodes: Sequence[Episode], ids: Sequence[int], spec: EnvSpec) -> tuple[pa.Table, pa.Table]:
    """Build ``(steps, episodes)`` tables for ``episodes`` with episode ids ``ids`` (same order)."""
    if len(episodes) != len(ids):
        raise ValueError(f"{len(episodes)} episodes but {len(ids)} ids")
    s_schema, e_schema = steps_schema(spec), episodes_schema(spec)
    if not episodes:
        return s_schema.empty_table(), e_schema.empty_table()
    lengths = np.array([e.length for e in episodes], np.int64)
    cat = np.concatenate

    def col(name: str) -> np.ndarray:
        return cat([getattr(e, name) for e in episodes])

    reward_env = col("reward_env")  # [M, N]
    steps = {
        "episode_id": np.repeat(np.asarray(ids, np.int64), lengths),
        "t": cat([np.arange(n, dtype=np.int32) for n in lengths]),
        "obs": col("obs"),
        "state": col("state"),
        "action": col("action").astype(np.int16),
        "action_mask": col("action_mask"),
        "reward_team": reward_env.sum(axis=1, dtype=np.float32),
        "reward_env": reward_env,
        "cost": col("cost"),
        "terminated": col("terminated"),
        "truncated": col("truncated"),
    }
    stack = np.stack
    eps = {
        "episode_id": np.asarray(ids, np.int64),
        "tier": [e.tier for e in episodes],
        "env_id": [e.env_id for e in episodes],
        "seed": [e.seed for e in episodes],
        "env_kwargs": [json.dumps(e.env_kwargs, sort_keys=True) for e in episodes],
        "versions": [json.dumps(e.versions, sort_keys=True) for e in episodes],
        "policy_id": [e.policy_id for e in episodes],
        "length": lengths.astype(np.int32),
        "return_team": np.array([e.reward_env.sum() for e in episodes], np.float32),
        "return_env": stack([e.reward_env.sum(axis=0) for e in episodes]).astype(np.float32),
        "cost_total": stack([e.cost.sum(axis=0) for e in episodes]).astype(np.float32),
        "success": [e.success for e in episodes],
        "final_obs": stack([e.final_obs for e in episodes]),
        "final_state": stack([e.final_state for e in episodes]),
        "final_action_mask": stack([e.final_action_mask for e in episodes]),
    }
    return table_of(s_schema, steps), table_of(e_schema, eps)


def tables_to_episodes(steps: pa.Table, episodes: pa.Table, spec: EnvSpec) -> list[Episode]:
    """Rebuild ``Episode`` objects from a steps table sorted by (episode_id, t) and its episodes table."""
    n, d, a, s = spec.n_agents, spec.obs_dim, spec.n_actions, spec.state_dim
    ids = steps.column("episode_id").to_numpy()
    arrays = {
        "obs": from_fsl(steps.column("obs"), (n, d)),
        "state": from_fsl(steps.column("state"), (s,)),
        "action": from_fsl(steps.column("action"), (n,)),
        "action_mask": from_fsl(steps.column("action_mask"), (n, a)),
        "reward_env": from_fsl(steps.column("reward_env"), (n,)),
        "cost": from_fsl(steps.column("cost"), (n,)),
        "terminated": steps.column("terminated").to_numpy(),
        "truncated": steps.column("truncated").to_numpy(),
    }
    final_obs = from_fsl(episodes.column("final_obs"), (n, d))
    final_state = from_fsl(episodes.column("final_state"), (s,))
    final_mask = from_fsl(episodes.column("final_action_mask"), (n, a))
    rows = episodes.select(["episode_id", "tier", "env_id", "seed", "env_kwargs", "versions", "policy_id", "success"])
    out = []
    for k, row in enumerate(rows.to_pylist()):
        lo, hi = np.searchsorted(ids, row["episode_id"], "left"), np.searchsorted(ids, row["episode_id"], "right")
        out.append(
            Episode(
                env_id=row["env_id"],
                seed=row["seed"],
                policy_id=row["policy_id"],
                tier=row["tier"],
                **{name: arr[lo:hi] for name, arr in arrays.items()},
                final_obs=final_obs[k],
                final_state=final_state[k],
                final_action_mask=final_mask[k],
                success=row["success"],
                env_kwargs=json.loads(row["env_kwargs"]),
                versions=json.loads(row["versions"]),
                episode_id=row["episode_id"],
            )
        )
    return out
