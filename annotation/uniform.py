"""The two free critics: ``uniform`` (every agent gets ``r_team / N``) and ``env`` (the env's
own per-agent reward as credits).

Input: an ``Episode``. Output: credits ``float32[T, N]`` with each row summing to ``r_team``
(``reward_team`` is the sum of ``reward_env`` in every env here, so ``env`` keeps that too).
``env`` is the structural oracle of these envs: LBF, RWARE and Spaceworld already pay the
agents that caused a reward, so one-step Shapley is nearly ``env`` (DESIGN §4), and a critic
is only worth its cost where it beats this row (temporal credit, delayed reward).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmca_data.envs.base import MultiAgentEnv
from llmca_data.rollout import Episode

from .critic import CriticOutput


class UniformCritic:
    critic_id = "uniform"
    needs_env = False

    def params(self) -> dict[str, Any]:
        return {"type": "uniform"}

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        n = episode.reward_env.shape[1]
        credits = np.repeat(episode.reward_team[:, None] / np.float32(n), n, axis=1)  # [T, N]
        return CriticOutput(credits.astype(np.float32))


class EnvCritic:
    critic_id = "env"
    needs_env = False

    def params(self) -> dict[str, Any]:
        return {"type": "env"}

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        return CriticOutput(episode.reward_env.astype(np.float32, copy=True))  # [T, N]
