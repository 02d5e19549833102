"""A circular replay buffer of multi-agent transitions, saved as ``.npz`` (never pickle).

Input: whole episodes (``Episode`` step arrays) with one reward per agent per step ``[T, N]``
(a critic's credits or the team reward) and, for LLM-TACA, the assigned tasks ``[T, N]``.
Output: uniformly sampled minibatches as torch tensors with the keys the Q-learners use
(``obs``, ``action``, ``action_mask``, ``reward``, ``next_obs``, ``next_action_mask``,
``terminated``, and ``task``/``next_task`` when the buffer holds tasks), and ``save``/``load``
of its filled part for checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmca_data.rollout import Episode


class ReplayBuffer:
    """``capacity`` transitions of N agents; the oldest are overwritten first."""

    def __init__(self, capacity: int, n_agents: int, obs_dim: int, n_actions: int, with_tasks: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        c, n = capacity, n_agents
        self.capacity = capacity
        self.arrays: dict[str, np.ndarray] = {
            "obs": np.zeros((c, n, obs_dim), np.float32),  # [C, N, obs_dim]
            "action": np.zeros((c, n), np.int64),  # [C, N]
            "action_mask": np.zeros((c, n, n_actions), np.bool_),  # [C, N, A]
            "reward": np.zeros((c, n), np.float32),  # [C, N]
            "next_obs": np.zeros((c, n, obs_dim), np.float32),  # [C, N, obs_dim]
            "next_action_mask": np.zeros((c, n, n_actions), np.bool_),  # [C, N, A]
            "terminated": np.zeros(c, np.bool_),  # [C]
        }
        if with_tasks:
            self.arrays["task"] = np.full((c, n), -1, np.int64)  # [C, N]
            self.arrays["next_task"] = np.full((c, n), -1, np.int64)  # [C, N]
        self.ptr = 0
        """Next slot to write."""
        self.size = 0
        """Filled slots (≤ capacity)."""

    @property
    def with_tasks(self) -> bool:
        return "task" in self.arrays

    def __len__(self) -> int:
        return self.size

    def add_episode(self, episode: Episode, reward: np.ndarray, task: np.ndarray | None = None) -> None:
        """Add every step of ``episode`` with per-agent ``reward`` ``[T, N]`` (and ``task`` ``[T, N]``).

        A truncated last step bootstraps from ``final_obs`` (only ``terminated`` stops it). An
        episode's last step keeps its own task as ``next_task``.
        """
        t_len = episode.length
        if reward.shape != episode.reward_env.shape:
            raise ValueError(f"reward of shape {reward.shape} for an episode of shape {episode.reward_env.shape}")
        rows: dict[str, np.ndarray] = {
            "obs": episode.obs,
            "action": episode.action.astype(np.int64),
            "action_mask": episode.action_mask,
            "reward": reward.astype(np.float32),
            "next_obs": np.concatenate([episode.obs[1:], episode.final_obs[None]]),  # [T, N, obs_dim]
            "next_action_mask": np.concatenate([episode.action_mask[1:], episode.final_action_mask[None]]),
            "terminated": episode.terminated,
        }
        if self.with_tasks:
            tasks = np.full(reward.shape, -1, np.int64) if task is None else task.astype(np.int64)  # [T, N]
            rows["task"], rows["next_task"] = tasks, np.concatenate([tasks[1:], tasks[-1:]])
        idx = (self.ptr + np.arange(t_len)) % self.capacity  # [T]
        for name, values in rows.items():
            self.arrays[name][idx] = values[-self.capacity :] if t_len > self.capacity else values
        self.ptr = int((self.ptr + t_len) % self.capacity)
        self.size = min(self.capacity, self.size + t_len)

    def sample(self, batch_size: int, rng: np.random.Generator, device: str | torch.device) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement, as tensors on ``device``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, batch_size)  # [B]
        return {name: torch.from_numpy(values[idx]).to(device) for name, values in self.arrays.items()}

    def save(self, path: Path) -> None:
        """Write the filled slots and the write pointer to ``path`` (``.npz``, no pickled objects)."""
        meta = np.frombuffer(json.dumps({"ptr": self.ptr, "size": self.size}).encode(), np.uint8)
        arrays: dict[str, Any] = {name: values[: self.size] for name, values in self.arrays.items()}
        with path.open("wb") as f:
            np.savez(f, _meta=meta, **arrays)

    def load(self, path: Path) -> None:
        """Restore a buffer written by ``save`` into this (empty, same-shaped) buffer."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["_meta"].tobytes().decode())
            size = int(meta["size"])
            if size > self.capacity or set(data.files) - {"_meta"} != set(self.arrays):
                raise ValueError(
                    f"{path} does not fit this buffer (size {size}, capacity {self.capacity}, "
                    f"fields {sorted(data.files)}): resume with the run's own config"
                )
            for name, values in self.arrays.items():
                values[:size] = data[name]
        self.ptr, self.size = int(meta["ptr"]), size
