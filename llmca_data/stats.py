"""Per-env, per-tier statistics of a dataset.

Input: a dataset directory. Output: one row per (env, tier): episodes, steps, team return
mean/std/min/max, normalised score of the mean (when reference returns exist), safety cost
per episode, success rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmca_data.reference import REFERENCE_RETURNS, normalized_score
from llmca_data.schema import from_fsl
from llmca_data.shards import Manifest, read_shard


def tier_stats(root: Path) -> list[dict[str, Any]]:
    """Statistics per (env_id, tier), sorted by env then tier."""
    manifest = Manifest.load(root)
    groups: dict[tuple[str, str], list[Path]] = {}
    for name in manifest.shards(kind="episodes"):
        groups.setdefault((name.env_id, name.tier), []).append(root / str(name))
    rows = []
    for (env_id, tier), paths in sorted(groups.items()):
        cols = ["return_team", "length", "success", "cost_total"]
        tables = [read_shard(p, cols) for p in paths]
        ret = np.concatenate([t.column("return_team").to_numpy() for t in tables]).astype(np.float64)
        length = np.concatenate([t.column("length").to_numpy() for t in tables])
        success = np.concatenate([t.column("success").to_numpy(zero_copy_only=False) for t in tables])
        n = tables[0].schema.field("cost_total").type.list_size
        cost = np.concatenate([from_fsl(t.column("cost_total"), (n,)).sum(axis=1) for t in tables])
        score = normalized_score(env_id, float(ret.mean())) if env_id in REFERENCE_RETURNS else None
        rows.append(
            {
                "env_id": env_id,
                "tier": tier,
                "episodes": len(ret),
                "steps": int(length.sum()),
                "return_mean": float(ret.mean()),
                "return_std": float(ret.std()),
                "return_min": float(ret.min()),
                "return_max": float(ret.max()),
                "normalized_score": score,
                "cost_mean": float(cost.mean()),
                "success_rate": float(success.mean()),
            }
        )
    return rows
