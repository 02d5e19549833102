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
from llmca_data.schema import episodes_schema, from_fsl, steps_schema, to_fsl


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
        "episode_id": pa.array(np.repeat(np.asarray(ids, np.int64), lengths)),
        "t": pa.array(cat([np.arange(n, dtype=np.int32) for n in lengths])),
        "obs": to_fsl(col("obs"), s_schema.field("obs").type.value_type.value_type),
        "state": to_fsl(col("state"), pa.float32()),
        "action": to_fsl(col("action").astype(np.int16), pa.int16()),
        "action_mask": to_fsl(col("action_mask"), pa.bool_()),
        "reward_team": pa.array(reward_env.sum(axis=1, dtype=np.float32)),
        "reward_env": to_fsl(reward_env, pa.float32()),
        "cost": to_fsl(col("cost"), pa.float32()),
        "terminated": pa.array(col("terminated")),
        "truncated": pa.array(col("truncated")),
    }
    stack = np.stack
    eps = {
        "episode_id": pa.array(np.asarray(ids, np.int64)),
        "tier": pa.array([e.tier for e in episodes], pa.string()),
        "env_id": pa.array([e.env_id for e in episodes], pa.string()),
        "seed": pa.array([e.seed for e in episodes], pa.int64()),
        "env_kwargs": pa.array([json.dumps(e.env_kwargs, sort_keys=True) for e in episodes], pa.string()),
        "versions": pa.array([json.dumps(e.versions, sort_keys=True) for e in episodes], pa.string()),
        "policy_id": pa.array([e.policy_id for e in episodes], pa.string()),
        "length": pa.array(lengths.astype(np.int32)),
        "return_team": pa.array(np.array([e.reward_env.sum() for e in episodes], np.float32)),
        "return_env": to_fsl(stack([e.reward_env.sum(axis=0) for e in episodes]).astype(np.float32), pa.float32()),
        "cost_total": to_fsl(stack([e.cost.sum(axis=0) for e in episodes]).astype(np.float32), pa.float32()),
        "success": pa.array([e.success for e in episodes], pa.bool_()),
        "final_obs": to_fsl(stack([e.final_obs for e in episodes]), pa.float32()),
        "final_state": to_fsl(stack([e.final_state for e in episodes]), pa.float32()),
        "final_action_mask": to_fsl(stack([e.final_action_mask for e in episodes]), pa.bool_()),
    }
    return pa.table(steps, schema=s_schema), pa.table(eps, schema=e_schema)


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
