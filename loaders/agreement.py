"""Load one env of a dataset three ways and check they agree (the pipeline's load-back check).

Input: a dataset directory, an env id and a cache folder for ``datasets``. Output: a row with
the step counts seen by ``datasets.load_dataset``, ``OfflineDataset`` and the d3rlpy export,
and whether they agree (same rows, same team rewards, every step exported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .offline import OfflineDataset


def load_three_ways(dataset: Path, cache_dir: Path, env_id: str) -> dict[str, Any]:
    """Every tier of ``env_id`` through ``datasets`` (skipped without the hub extra: rows -1),
    ``OfflineDataset`` and d3rlpy; ``agree`` is True when all that ran saw the same steps."""
    offline = OfflineDataset.open(dataset, env_id)
    steps = offline.steps(columns=["episode_id", "t", "reward_team"])
    assert isinstance(steps, pl.DataFrame)  # not lazy
    out: dict[str, Any] = {"env_id": env_id, "offline_rows": steps.height}
    try:
        import datasets
    except ImportError:
        rows, same = -1, True  # the hub extra is missing: nothing to compare against
    else:
        datasets.disable_progress_bars()
        parts = [
            datasets.load_dataset(str(dataset), env_id, split=tier, cache_dir=str(cache_dir)).with_format("arrow")
            for tier in offline.tiers
        ]
        rows = sum(p.num_rows for p in parts)
        team = np.concatenate([p[:]["reward_team"].to_numpy() for p in parts])
        same = rows == steps.height and np.array_equal(team, steps["reward_team"].to_numpy())
    d3 = offline.to_d3rlpy(agent=0, reward="team")
    d3_steps = int(sum(len(e.rewards) for e in d3.episodes))
    out.update(
        datasets_rows=rows,
        d3rlpy_steps=d3_steps,
        d3rlpy_transitions=int(d3.transition_count),
        d3rlpy_timeouts=int(sum(not bool(e.terminated) for e in d3.episodes)),
        agree=bool(same and d3_steps == steps.height),
    )
    return out
