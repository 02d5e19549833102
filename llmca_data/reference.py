"""Reference returns for normalised scores, kept as versioned constants.

Input (``measure``): an env id and a number of episodes. Output: mean team return of the
random and the expert tier on seeds disjoint from every data and evaluation seed. The
measured numbers are pasted into ``REFERENCE_RETURNS`` once per ``REFERENCE_VERSION`` so
scores never drift between builds; ``python -m llmca_data.reference`` re-measures them.

normalised score = 100 · (R − R_random) / (R_expert − R_random)
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

REFERENCE_VERSION = 1
REFERENCE_EPISODES = 200

# Measured with `python -m llmca_data.reference` (llmca-data 0.1.0, 200 episodes per tier,
# seeds REFERENCE_SEED_BASE + i). Mean team return per episode.
REFERENCE_RETURNS: dict[str, dict[str, float]] = {
    "lbf-8x8-2p-2f": {"random": 0.2409, "expert": 1.0},
    "lbf-8x8-2p-2f-coop": {"random": 0.0175, "expert": 1.0},
    "lbf-10x10-3p-3f": {"random": 0.1302, "expert": 1.0},
    "rware-tiny-2ag": {"random": 0.055, "expert": 30.3},
    "rware-small-4ag": {"random": 0.06, "expert": 42.02},
    "spaceworld-10x10-3a": {"random": 0.1338, "expert": 0.9938},
}


def reference_returns(env_id: str) -> dict[str, Any] | None:
    """``{"random", "expert", "version", "episodes"}`` for ``env_id``, or None if never measured."""
    ref = REFERENCE_RETURNS.get(env_id)
    if ref is None:
        return None
    return {**ref, "version": REFERENCE_VERSION, "episodes": REFERENCE_EPISODES}


def normalized_score(env_id: str, team_return: float) -> float:
    """100 · (R − R_random) / (R_expert − R_random); raises KeyError for an unmeasured env."""
    ref = REFERENCE_RETURNS[env_id]
    return 100.0 * (team_return - ref["random"]) / (ref["expert"] - ref["random"])


def measure(env_id: str, episodes: int = REFERENCE_EPISODES) -> dict[str, float]:
    """Mean team return of the ``random`` and ``expert`` tiers over ``episodes`` reference seeds each."""
    from llmca_data.envs import make_env
    from llmca_data.rollout import REFERENCE_SEED_BASE, run_episode, tier_rng
    from llmca_data.tiers import tier_policy

    env = make_env(env_id)
    out = {}
    for tier in ("random", "expert"):
        returns = []
        for i in range(episodes):
            seed = REFERENCE_SEED_BASE + i
            policy = tier_policy(env_id, tier, tier_rng(seed))
            returns.append(run_episode(env, policy, seed, tier).return_team)
        out[tier] = round(float(np.mean(returns)), 4)
    return out


if __name__ == "__main__":
    from llmca_data.envs import CONTRACT_ENV_IDS

    ids = sys.argv[1:] or list(CONTRACT_ENV_IDS)
    print(json.dumps({env_id: measure(env_id) for env_id in ids}, indent=4))
