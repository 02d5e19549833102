"""A tiny known game for the online-training tests (imported by them as ``match_env``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from llmca_data.envs.base import EnvSpec, Step

MATCH_STEPS = 4
MATCH_REWARD = 0.125
"""Per agent per step: the best team return is 2 agents × 4 steps × 0.125 = 1."""


class MatchEnv:
    """A tiny known game: each step every agent sees a target in {0, 1, 2} (one-hot) and earns
    ``MATCH_REWARD`` when its action equals it. Random play returns 1/3, the optimum 1."""

    def __init__(self) -> None:
        self.spec = EnvSpec(
            env_id="match-2a", n_agents=2, n_actions=3, obs_dim=3, state_dim=6, max_steps=MATCH_STEPS,
            action_names=("A", "B", "C"), obs_features=("t0", "t1", "t2"),
            state_features=tuple(f"s{k}" for k in range(6)),
        )  # fmt: skip
        self._rng = np.random.default_rng(0)
        self._t = 0
        self._target = np.zeros(2, np.int64)

    def _obs(self) -> npt.NDArray[np.float32]:
        return np.eye(3, dtype=np.float32)[self._target]  # [N, 3]

    def reset(self, seed: int) -> npt.NDArray[np.float32]:
        self._rng = np.random.default_rng(seed)
        self._t = 0
        self._target = self._rng.integers(0, 3, 2)
        return self._obs()

    def step(self, actions: npt.ArrayLike) -> Step:
        acts = np.asarray(actions).reshape(-1)
        reward = np.where(acts == self._target, MATCH_REWARD, 0.0).astype(np.float32)  # [N]
        self._t += 1
        self._target = self._rng.integers(0, 3, 2)
        done = self._t == MATCH_STEPS
        return Step(self._obs(), reward, np.zeros(2, np.float32), False, done, {})

    def action_mask(self) -> npt.NDArray[np.bool_]:
        return np.ones((2, 3), np.bool_)

    def state(self) -> npt.NDArray[np.float32]:
        return self._obs().reshape(-1)

    def snapshot(self) -> Any:
        return (self._t, self._target.copy(), self._rng.bit_generator.state)

    def restore(self, snap: Any) -> None:
        self._t, target, state = snap
        self._target = target.copy()
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state

    def describe(self) -> dict[str, Any]:
        return {"env_id": "match-2a", "t": self._t, "targets": self._target.tolist()}
