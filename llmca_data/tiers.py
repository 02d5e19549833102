"""Dataset quality tiers (CONTRACT names) and the behaviour policy of each.

Input: an env id, a tier name and the episode's policy RNG. Output: the ``Policy`` that
plays that episode. ``replay`` mixes qualities: every episode draws its own epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmca_data.errors import UnknownTierError
from llmca_data.policies.base import EpsilonPolicy, Policy, RandomPolicy, scripted_policy

TIERS: tuple[str, ...] = ("expert", "medium", "random", "replay")


@dataclass(frozen=True)
class TierSpec:
    """How a tier's episodes are played."""

    name: str
    epsilon: float | None
    """Per-agent probability of a random legal action; None draws it per episode from U(0, 1)."""
    description: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "epsilon": self.epsilon, "description": self.description}


TIER_SPECS: dict[str, TierSpec] = {
    "expert": TierSpec("expert", 0.0, "the scripted expert of the env family"),
    "medium": TierSpec("medium", 0.5, "the scripted expert, each agent acting at random with probability 0.5"),
    "random": TierSpec("random", 1.0, "uniformly random legal actions"),
    "replay": TierSpec("replay", None, "the scripted expert with a per-episode epsilon drawn from U(0, 1)"),
}


def tier_spec(tier: str) -> TierSpec:
    try:
        return TIER_SPECS[tier]
    except KeyError:
        raise UnknownTierError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}") from None


def tier_policy(env_id: str, tier: str, rng: np.random.Generator) -> Policy:
    """The policy that plays one episode of ``tier`` (draws the replay tier's epsilon from ``rng``)."""
    spec = tier_spec(tier)
    if spec.epsilon == 1.0:
        return RandomPolicy()
    epsilon = spec.epsilon if spec.epsilon is not None else round(float(rng.random()), 2)
    base = scripted_policy(env_id)
    return base if epsilon == 0.0 else EpsilonPolicy(base, epsilon)
