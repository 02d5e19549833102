"""Per-env, per-tier statistics of a dataset.

Input: a dataset directory (its committed episodes shards). Output: one row per (env, tier):
episodes, steps, team return mean/std/min/max, normalised score of the mean (when reference
returns exist), safety cost per episode, success rate. ``TierStats`` computes them as a
``Dataset.scan`` visitor, so callers that read the dataset for more (``build``) read it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data.dataset import Dataset
from llmca_data.layout import ShardName
from llmca_data.reference import REFERENCE_RETURNS, normalized_score
from llmca_data.schema import from_fsl


class TierStats:
    """A ``Dataset.scan`` visitor: the episodes columns behind ``tier_stats``, per (env, tier)."""

    COLUMNS = ("return_team", "length", "success", "cost_total")

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], list[pa.Table]] = {}

    def columns(self, name: ShardName, schema: pa.Schema) -> Sequence[str]:
        return self.COLUMNS if name.kind == "episodes" else ()

    def visit(self, name: ShardName, table: pa.Table) -> None:
        self._parts.setdefault((name.env_id, name.tier), []).append(table)

    def returns(self) -> dict[tuple[str, str], np.ndarray]:
        """Team return per episode, float64 ``[E]``, per (env_id, tier) in sorted order."""
        return {
            key: np.concatenate([t.column("return_team").to_numpy() for t in tables]).astype(np.float64)
            for key, tables in sorted(self._parts.items())
        }

    def rows(self) -> list[dict[str, Any]]:
        """Statistics per (env_id, tier), sorted by env then tier."""
        rows = []
        for (env_id, tier), ret in self.returns().items():
            tables = self._parts[env_id, tier]
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


def tier_stats(root: Path) -> list[dict[str, Any]]:
    """Statistics per (env_id, tier), sorted by env then tier (see ``TierStats``)."""
    stats, ds = TierStats(), Dataset(root)
    ds.scan([stats], ds.shards(kind="episodes"))
    return stats.rows()
