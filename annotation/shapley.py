"""The ``shapley`` critic: Shapley values of the one-step team reward.

Input: an ``Episode`` and a live env. Output: credits ``float32[T, N]``.

At step t the coalition value v(S) is the team reward when the agents in S play their
logged actions and the others the no-op (re-simulated from the snapshot before t;
v(all) is the logged reward). The Shapley value φ_i averages i's marginal contribution
v(S ∪ {i}) − v(S) over all orders of the agents: exact over the 2^N coalitions for N ≤ 4,
estimated from ``samples`` random orders (seeded by ``seed``, the episode seed and t) above.
φ sums to v(all) − v(∅); adding v(∅)/N to every agent makes Σ_i credit_i = r_team at every
step (efficiency). Steps with v(∅) ≠ 0 are listed in the annotation's ``raw_response``.
Coalitions that differ only in agents whose logged action is the no-op are one simulation.

``shapley-delayed`` is the variant for a team reward seen only at the episode's end: v(S) is
the team return from t to the end (the no-op at t, then the logged actions, open loop), so
each agent's credit is its share of how much the joint action at t changed the episode's
return; the credits are φ (they sum to v(all) − v(∅)), since v(∅) is no reward of step t.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from math import factorial
from typing import Any

import numpy as np

from llmca_data.rollout import Episode

from .branch import Brancher, ResimulatingCritic, discounted_window_returns
from .critic import CriticOutput

MAX_EXACT_AGENTS = 4


@cache
def _shapley_matrix(n: int) -> np.ndarray:
    """``M`` with ``φ = M @ v`` for coalition values ``v[mask]``: row i holds i's marginal-contribution weights."""
    m = np.zeros((n, 1 << n), np.float64)  # [N, 2^N]
    for mask in range(1 << n):
        size = bin(mask).count("1")
        for i in range(n):
            if not (mask >> i) & 1:
                w = factorial(size) * factorial(n - size - 1) / factorial(n)
                m[i, mask | (1 << i)] += w
                m[i, mask] -= w
    m.flags.writeable = False
    return m


def shapley_exact(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values from ``values[mask]`` = v(coalition ``mask``), ``len(values) == 2^N``."""
    n = int(values.shape[0]).bit_length() - 1
    if values.shape[0] != 1 << n:
        raise ValueError(f"need 2^N coalition values, got {values.shape[0]}")
    phi: np.ndarray = _shapley_matrix(n) @ values  # [N]
    return phi


def efficient_credits(phi: np.ndarray, v_empty: float) -> np.ndarray:
    """Shapley values shifted by v(∅)/N each, so the credits sum to v(all) (the step's team reward)."""
    out: np.ndarray = phi + v_empty / phi.shape[0]
    return out


def shapley_sampled(n: int, value: Callable[[int], float], samples: int, rng: np.random.Generator) -> np.ndarray:
    """Shapley values estimated from ``samples`` random orders; each order's contributions sum exactly
    to v(all) − v(∅), so the estimate is efficient too."""
    phi = np.zeros(n, np.float64)  # [N]
    for _ in range(samples):
        mask, prev = 0, value(0)
        for i in rng.permutation(n):
            mask |= 1 << int(i)
            cur = value(mask)
            phi[i] += cur - prev
            prev = cur
    return phi / samples


class ShapleyCritic(ResimulatingCritic):
    def __init__(self, samples: int = 256, seed: int = 0, delayed: bool = False) -> None:
        self.samples = samples
        self.seed = seed
        self.delayed = delayed
        self.critic_id = "shapley-delayed" if delayed else "shapley"

    def params(self) -> dict[str, Any]:
        return {
            "type": "shapley",
            "baseline": "noop",
            "max_exact_agents": MAX_EXACT_AGENTS,
            "samples": self.samples,
            "seed": self.seed,
            "value": "return to episode end" if self.delayed else "one-step team reward",
        }

    def credit(self, episode: Episode, branch: Brancher, noop: int) -> CriticOutput:
        t_len, n = episode.action.shape
        # v(all): the logged reward of step t, or (delayed) the logged return from t to the end
        reward = discounted_window_returns(episode.reward_team, t_len if self.delayed else 1, 1.0)  # [T]
        credits = np.zeros((t_len, n), np.float64)  # [T, N]
        v_empty: dict[int, float] = {}
        for t in range(t_len):
            logged = episode.action[t].astype(np.int64)  # [N]
            cache: dict[bytes, float] = {logged.tobytes(): float(reward[t])}

            def value(mask: int, t: int = t, logged: np.ndarray = logged, cache: dict[bytes, float] = cache) -> float:
                joint = np.where([(mask >> i) & 1 for i in range(n)], logged, noop)
                key = joint.tobytes()
                if key not in cache:
                    cache[key] = branch.team_return(t, joint, t_len - t if self.delayed else 1)
                return cache[key]

            if n <= MAX_EXACT_AGENTS:
                values = np.array([value(m) for m in range(1 << n)])  # [2^N]
                phi = shapley_exact(values)
            else:
                rng = np.random.default_rng([self.seed, episode.seed, t])
                phi = shapley_sampled(n, value, self.samples, rng)
            if self.delayed:
                credits[t] = phi
                continue
            empty = value(0)
            credits[t] = efficient_credits(phi, empty)
            if empty != 0.0:
                v_empty[t] = empty
        raw = json.dumps({"v_empty": v_empty}) if v_empty else ""
        return CriticOutput(credits.astype(np.float32), raw_response=raw)
