"""The ``counterfactual`` critic: difference rewards by re-simulation.

Input: an ``Episode`` and a live env. Output: credits ``float32[T, N]`` with

    credit_i(t) = G(t) − G_{−i}(t),

where G(t) is the logged discounted team return over the window t … t+H−1 and G_{−i}(t)
the same window re-simulated with agent i's action at t replaced by the no-op (then the
logged joint actions, open loop; see ``branch.py``). H = 1 (id ``counterfactual``) credits
only the step that is rewarded; H > 1 (id ``counterfactual-h<H>``) also credits the steps
that lead to reward, which makes it the reference for temporal credit. An agent whose
logged action already is the no-op gets exactly 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmca_data.rollout import Episode

from .branch import Brancher, ResimulatingCritic, discounted_window_returns
from .critic import CriticOutput


class CounterfactualCritic(ResimulatingCritic):
    def __init__(self, horizon: int = 1, gamma: float = 0.99, delayed: bool = False) -> None:
        if horizon < 1 or not 0.0 < gamma <= 1.0:
            raise ValueError(f"need horizon >= 1 and 0 < gamma <= 1, got horizon={horizon}, gamma={gamma}")
        if delayed and horizon != 1:
            raise ValueError(f"counterfactual-delayed runs to the episode's end: drop horizon={horizon}")
        self.horizon = horizon
        self.gamma = 1.0 if delayed else gamma
        self.delayed = delayed
        self.critic_id = (
            "counterfactual-delayed" if delayed else "counterfactual" if horizon == 1 else f"counterfactual-h{horizon}"
        )

    def params(self) -> dict[str, Any]:
        horizon = "episode end" if self.delayed else self.horizon
        return {"type": "counterfactual", "horizon": horizon, "gamma": self.gamma, "baseline": "noop"}

    def credit(self, episode: Episode, branch: Brancher, noop: int) -> CriticOutput:
        t_len, n = episode.action.shape
        horizon = t_len if self.delayed else self.horizon
        factual = discounted_window_returns(episode.reward_team, horizon, self.gamma)  # [T]
        credits = np.zeros((t_len, n), np.float64)  # [T, N]
        for t in range(t_len):
            for i in range(n):
                if episode.action[t, i] == noop:
                    continue
                joint = episode.action[t].astype(np.int64)
                joint[i] = noop
                credits[t, i] = factual[t] - branch.team_return(t, joint, horizon, self.gamma)
        return CriticOutput(credits.astype(np.float32))
