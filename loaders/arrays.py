"""Numpy arrays and torch minibatches decoded from committed shards (the loaders' low level).

Input: ``ShardRef``s (path, tier, manifest row count, columns present) and a layout of wanted
columns with their per-row shapes and dtypes. Output: one preallocated numpy array per column
(``[M, ...]``, shards concatenated in order), per-agent credits rescaled to the team reward
(per step or per episode, ``rescale_credits``), and uniform minibatches of torch tensors. Page
checksums are verified while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from llmca_data.config import ConfigError
from llmca_data.errors import ShardError
from llmca_data.extras import require
from llmca_data.shards import read_shard

if TYPE_CHECKING:
    import torch

CreditScale = Literal["none", "step", "episode"]
"""How per-agent credits are put on the team reward's scale (``rescale_credits``)."""
CREDIT_SCALES: tuple[CreditScale, ...] = get_args(CreditScale)
TeamReward = Literal["true", "delayed"]
"""What the learner sees of the team reward: ``true`` (every step's) or ``delayed`` (each episode's
return at its last step, 0 elsewhere; ``delay_to_episode_end``)."""
TEAM_REWARDS: tuple[TeamReward, ...] = get_args(TeamReward)

_NORMALIZE_EPS = 1e-6
"""Credits summing to less than this (in absolute value) are not rescaled but replaced by an even
split: r_team / N of the step (``step``), R / (T·N) of the episode's return (``episode``)."""


@dataclass(frozen=True)
class ShardRef:
    """A committed shard: its file, tier, row count from the manifest and the columns it has."""

    path: Path
    tier: str
    rows: int
    columns: frozenset[str]


def normalize_credits(credits: np.ndarray, team: np.ndarray) -> np.ndarray:
    """Rescale each step's per-agent rewards ``[M, N]`` so that they sum to ``team`` ``[M]``.

    A step whose rewards sum to ~0 (below 1e-6 in magnitude) gets ``team / N`` for every agent,
    since its shares are undefined. Signs follow the scale: credits summing to −2 on a step with
    team reward +1 are flipped, so relative shares, not the critic's sign, carry over. A step with
    no team reward gets 0 for every agent whatever its credits: credit given to steps that lead
    to reward is lost (``scale_per_episode`` keeps it). ``rescale_credits`` mode ``step``.
    """
    n = credits.shape[1]
    total = credits.sum(axis=1)  # [M]
    ok = np.abs(total) > _NORMALIZE_EPS
    scale = np.divide(team, total, out=np.zeros_like(team, dtype=np.float64), where=ok)  # [M]
    out: np.ndarray = np.where(ok[:, None], credits * scale[:, None], (team / n)[:, None]).astype(np.float32)  # [M, N]
    return out


def scale_per_episode(credits: np.ndarray, team: np.ndarray, episode: np.ndarray | None = None) -> np.ndarray:
    """Rescale each episode's credits ``[M, N]`` so that they sum to its return Σ_t ``team`` ``[M]``.

    Every credit of an episode is multiplied by the same factor R / Σ_{t,i} c[t, i], so the
    ratio between any two of its agent-steps is kept: a step with no team reward that the critic
    credited (it *led* to reward: temporal credit) keeps non-zero credit, unlike ``normalize_credits``.
    An episode whose credits sum to ~0 (below 1e-6 in magnitude) gets R / (T·N) for every agent
    and step (an even split of its return). Signs follow the scale, as in ``normalize_credits``:
    credits summing to a negative total in an episode with positive return are all flipped.

    Args:
        credits: per-agent credits ``[M, N]`` of the steps of one or more episodes.
        team: team reward ``[M]`` of the same steps.
        episode: the episode each row belongs to ``[M]`` (any ids; rows of an episode need not be
            contiguous); None: all rows are one episode (``[T, N]``, as the online loop has).

    Returns:
        float32 ``[M, N]``.
    """
    m, n = credits.shape
    # [M] episode index 0..E-1 of each row
    group = np.zeros(m, np.intp) if episode is None else np.unique(episode, return_inverse=True)[1].reshape(m)
    e = int(group.max()) + 1 if m else 0
    total = np.bincount(group, weights=credits.sum(axis=1, dtype=np.float64), minlength=e)  # [E] Σ_{t,i} c
    ret = np.bincount(group, weights=team.astype(np.float64), minlength=e)  # [E] R
    cells = n * np.bincount(group, minlength=e)  # [E] T·N
    ok = np.abs(total) > _NORMALIZE_EPS  # [E]
    scale = np.divide(ret, total, out=np.zeros(e), where=ok)  # [E]
    even = ret / np.maximum(cells, 1)  # [E] R / (T·N)
    out = np.where(ok[group, None], credits * scale[group, None], even[group, None])  # [M, N]
    return out.astype(np.float32)


def delay_to_episode_end(rewards: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """Each episode's column sums of ``rewards`` ``[M, K]`` at its last row, 0 on its other rows.

    ``episode`` ``[M]`` numbers the rows' episodes, each one contiguous run (``[0, 0, 1, 1, 1, ...]``).
    The team reward ``[M, 1]`` gives the delayed team reward; the env's per-agent reward ``[M, N]``
    each agent's episode total at the end: structural credit without temporal credit.
    """
    out = np.zeros_like(rewards)  # [M, K]
    if rewards.shape[0]:
        last = np.flatnonzero(np.append(episode[1:] != episode[:-1], True))  # [E] last row of each episode
        out[last] = np.add.reduceat(rewards.astype(np.float64), np.append(0, last[:-1] + 1), axis=0)
    return out


def check_team_reward(mode: str) -> TeamReward:
    """``mode`` if it is a ``TeamReward``.

    Raises:
        ConfigError: naming the allowed values.
    """
    if mode not in TEAM_REWARDS:
        raise ConfigError(
            f"unknown team_reward {mode!r}; choose true (every step's team reward) or delayed (each episode's "
            "return at its last step)"
        )
    return mode


def check_credit_scale(mode: str) -> CreditScale:
    """``mode`` if it is a ``CreditScale``.

    Raises:
        ConfigError: naming the allowed values.
    """
    if isinstance(mode, bool):  # the boolean ``normalize`` this replaced
        raise ConfigError(f"credit_scale takes none, step or episode, got {mode!r} (normalize=True is now 'step')")
    if mode not in CREDIT_SCALES:
        allowed = ", ".join(CREDIT_SCALES)
        raise ConfigError(
            f"unknown credit_scale {mode!r}; choose one of {allowed} (none: credits as the critic gave them; "
            "step: each step sums to the team reward; episode: each episode sums to its return)"
        )
    return mode


def rescale_credits(
    credits: np.ndarray, team: np.ndarray, episode: np.ndarray | None = None, mode: str = "none"
) -> np.ndarray:
    """Per-agent rewards ``[M, N]`` put on the team reward's scale as ``mode`` says.

    - ``none``: ``credits`` unchanged (the same array).
    - ``step``: each step sums to ``team`` (``normalize_credits``); a step with no team reward
      gets 0 for every agent, so credit given to steps that lead to reward is lost.
    - ``episode``: each episode sums to its return, every credit of it scaled by one factor
      (``scale_per_episode``), so temporal credit survives.

    In both scaling modes a negative credit total under a positive reward flips every sign.

    Args:
        credits: per-agent credits ``[M, N]``.
        team: team reward ``[M]`` of the same steps.
        episode: episode id of each row ``[M]`` (``episode`` mode only); None: all rows are one episode.
        mode: ``none``, ``step`` or ``episode``.

    Raises:
        ConfigError: an unknown ``mode``, naming the allowed values.
    """
    mode = check_credit_scale(mode)
    if mode == "step":
        return normalize_credits(credits, team)
    if mode == "episode":
        return scale_per_episode(credits, team, episode)
    return credits


def read_columns(shards: list[ShardRef], layout: dict[str, tuple[tuple[int, ...], type]]) -> dict[str, np.ndarray]:
    """Decode ``layout``'s columns of ``shards`` into preallocated arrays.

    A credit column a shard lacks is NaN there, a task column −1."""
    total = sum(s.rows for s in shards)
    out: dict[str, np.ndarray] = {k: np.empty((total, *shape), dtype) for k, (shape, dtype) in layout.items()}
    start = 0
    for shard in shards:
        present = [k for k in layout if k in shard.columns]
        table = read_shard(shard.path, present)
        if table.num_rows != shard.rows:
            raise ShardError(
                f"{shard.path}: {table.num_rows} rows, the manifest says {shard.rows}; run `llmca validate`"
            )
        for key in layout:
            dest = out[key][start : start + shard.rows]
            if key not in shard.columns:
                if not key.startswith(("credit_", "task_")):
                    raise ShardError(f"{shard.path}: no column {key}; run `llmca validate`")
                dest[...] = np.nan if key.startswith("credit_") else -1  # a tier this critic never annotated
                continue
            at = 0
            for chunk in table.column(key).chunks:
                flat = chunk
                for _ in range(dest.ndim - 1):
                    flat = flat.flatten()
                dest[at : at + len(chunk)] = flat.to_numpy(zero_copy_only=False).reshape(len(chunk), *dest.shape[1:])
                at += len(chunk)
        start += shard.rows
    return out


def sample_batch(
    tensors: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """A uniform random minibatch (with replacement) of ``transitions`` output, on the tensors' device.

    Uses ``torch.index_select``, 2-4x faster on CPU than ``tensor[idx]`` (``benchmarks/loaders.py``).
    A ``generator`` must live on the tensors' device.
    """
    th = require("torch")
    first = next(iter(tensors.values()))
    idx = th.randint(first.shape[0], (batch_size,), device=first.device, generator=generator)  # [B]
    return {k: th.index_select(v, 0, idx) for k, v in tensors.items()}
