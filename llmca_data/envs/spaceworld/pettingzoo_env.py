"""Spaceworld as a PettingZoo ``ParallelEnv``, so other MARL code can use it.

Input: ``parallel_env(env_id="spaceworld-10x10-3a", **config_kwargs)``, then dicts of
actions keyed by ``agent_0 ..``. Output: the PettingZoo parallel API: dicts of observations
(``Box(-1, 1, (obs_dim,), float32)``), rewards, terminations, truncations and infos; each
info carries the agent's ``action_mask`` (``int8[6]``) and safety ``cost``. ``state()`` is the
global state (``state_space``). A missing or illegal action acts as NOOP.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from llmca_data.envs.spaceworld.env import SpaceworldEnv

DEFAULT_ENV_ID = "spaceworld-10x10-3a"


class SpaceworldParallelEnv(ParallelEnv[str, np.ndarray, int]):  # type: ignore[misc]
    """PettingZoo parallel wrapper around ``SpaceworldEnv``.

    Args:
        env_id: ``spaceworld-<W>x<H>-<N>a``.
        render_mode: ``None`` or ``"ansi"`` (``render()`` returns a text picture).
        **kwargs: other ``SpaceworldConfig`` fields.
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "spaceworld_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, env_id: str = DEFAULT_ENV_ID, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.env = SpaceworldEnv(env_id, **kwargs)
        self.render_mode = render_mode
        spec = self.env.spec
        self.possible_agents: list[str] = list(spec.agent_ids)
        self.agents: list[str] = []
        obs_space = spaces.Box(-1.0, 1.0, (spec.obs_dim,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = {a: spaces.Discrete(spec.n_actions) for a in self.possible_agents}
        self.state_space = spaces.Box(-1.0, 1.0, (spec.state_dim,), np.float32)
        self._rng = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return self.action_spaces[agent]

    def _infos(self, cost: np.ndarray | None) -> dict[str, dict[str, Any]]:
        mask = self.env.action_mask().astype(np.int8)  # [N, 6]
        return {
            a: {"action_mask": mask[i], "cost": 0.0 if cost is None else float(cost[i])}
            for i, a in enumerate(self.possible_agents)
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode; without ``seed`` one is drawn from the generator of the last seed."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        else:
            seed = int(self._rng.integers(2**31 - 1))
        obs = self.env.reset(seed)  # [N, obs_dim]
        self.agents = list(self.possible_agents)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}, self._infos(None)

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Apply one joint action; all agents finish together."""
        if not self.agents:
            raise RuntimeError("no live agents: call reset() first")
        joint = np.array([int(actions.get(a, 0)) for a in self.possible_agents], dtype=np.int64)  # [N]
        out = self.env.step(joint)
        names = self.possible_agents
        obs = {a: out.obs[i] for i, a in enumerate(names)}
        rewards = {a: float(out.reward_env[i]) for i, a in enumerate(names)}
        terms = dict.fromkeys(names, out.terminated)
        truncs = dict.fromkeys(names, out.truncated)
        infos = self._infos(out.cost)
        if out.terminated or out.truncated:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        """Global state ``float32[state_dim]``."""
        return self.env.state()

    def render(self) -> str | None:
        return self.env.render_text() if self.render_mode == "ansi" else None

    def close(self) -> None:
        return None


def parallel_env(**kwargs: Any) -> SpaceworldParallelEnv:
    """The PettingZoo convention: ``parallel_env(env_id=..., render_mode=..., **config)``."""
    return SpaceworldParallelEnv(**kwargs)
