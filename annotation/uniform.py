"""The ``uniform`` critic: every agent gets ``r_team / N``. The trivial baseline.

Input: an ``Episode``. Output: credits ``float32[T, N]`` with each row summing to ``r_team``.
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
