"""Re-simulate alternative joint actions from the logged states of an episode.

Input: an ``Episode`` and a live env of its id. Output: team returns of counterfactual
branches: from the state before step t, play an alternative joint action, then (for a
horizon H > 1) the logged joint actions of steps t+1 … t+H−1, open loop.

The episode is replayed once (which also checks it reproduces exactly) and a snapshot is
kept for every step. Envs that draw random numbers inside ``step`` (RWARE, on every
delivery) expose ``rng_state()`` / ``set_rng_state()``; the branch then gets the factual
branch's RNG state before each of its steps, so exogenous randomness is the same in both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from llmca_data.envs.base import MultiAgentEnv
from llmca_data.errors import ReplayMismatchError
from llmca_data.rollout import Episode, replay_iter

from .critic import CriticOutput


def discounted_window_returns(reward: np.ndarray, horizon: int, gamma: float) -> np.ndarray:
    """``G[t] = Σ_{k=t}^{min(t+H, T)−1} γ^(k−t) · r[k]`` for every t; ``reward`` is ``[T]``."""
    t_len = reward.shape[0]
    out = np.zeros(t_len, np.float64)  # [T]
    for lag in range(min(horizon, t_len)):
        out[: t_len - lag] += gamma**lag * reward[lag:].astype(np.float64)
    return out


class Brancher:
    """Snapshots of every step of one episode, and branch evaluation from them."""

    def __init__(self, episode: Episode, env: MultiAgentEnv) -> None:
        self.episode = episode
        self.env = env
        self._get_rng = getattr(env, "rng_state", None)
        self._set_rng = getattr(env, "set_rng_state", None)
        self.snapshots: list[Any] = []
        self.rng_states: list[Any] = []
        for _, live in replay_iter(episode, env):  # raises ReplayMismatchError on any difference
            self.snapshots.append(live.snapshot())
            self.rng_states.append(self._get_rng() if self._get_rng else None)
        self.evaluations = 0
        """Number of env steps the branches took (for the cost benchmark)."""

    def team_return(self, t: int, joint_action: np.ndarray, horizon: int = 1, gamma: float = 1.0) -> float:
        """Discounted team return of playing ``joint_action`` at t, then the logged actions, for ``horizon`` steps."""
        env, actions = self.env, self.episode.action
        env.restore(self.snapshots[t])
        step = env.step(joint_action)
        self.evaluations += 1
        total = float(step.reward_env.sum(dtype=np.float64))
        done = step.terminated or step.truncated
        for k in range(t + 1, min(t + horizon, self.episode.length)):
            if done:
                break
            if self._set_rng is not None:
                self._set_rng(self.rng_states[k])
            step = env.step(actions[k])
            self.evaluations += 1
            total += gamma ** (k - t) * float(step.reward_env.sum(dtype=np.float64))
            done = step.terminated or step.truncated
        return total


class ResimulatingCritic(ABC):
    """Base of critics that branch from the logged states (counterfactual, Shapley).

    ``annotate`` replays the episode once; an episode the env does not reproduce becomes a
    ``failed`` output with the reason. Subclasses compute credits from the ready ``Brancher``.
    """

    critic_id: str
    needs_env = True

    def annotate(self, episode: Episode, env: MultiAgentEnv | None) -> CriticOutput:
        if env is None:
            raise ValueError(f"the {self.critic_id} critic re-simulates episodes: pass an env")
        try:
            branch = Brancher(episode, env)
        except ReplayMismatchError as exc:
            return CriticOutput.failed(episode.length, episode.action.shape[1], str(exc))
        out = self.credit(episode, branch, env.spec.noop_action)
        out.extra["env_steps"] = branch.evaluations
        return out

    @abstractmethod
    def credit(self, episode: Episode, branch: Brancher, noop: int) -> CriticOutput:
        """Credits ``[T, N]`` of ``episode``, simulating alternatives through ``branch``."""
