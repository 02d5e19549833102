"""Behaviour-policy protocol, the uniform random policy and epsilon mixtures.

Input: an env (a ``MultiAgentEnv`` in its current state) and a numpy Generator.
Output: a joint action ``int64[N]`` that is legal under ``env.action_mask()``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from llmca_data.envs.base import IntArray, MultiAgentEnv


class Policy(Protocol):
    """A centralised behaviour policy: it may read the whole env state."""

    policy_id: str

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        """Called once after ``env.reset`` at the start of every episode."""
        ...

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        """The joint action ``int64[N]`` for the current step."""
        ...


def random_legal_actions(mask: np.ndarray, rng: np.random.Generator) -> IntArray:
    """One uniformly random legal action per agent; ``mask`` is ``bool[N, A]``."""
    # Random keys with the illegal ones pushed to -1: the argmax is uniform over legal actions.
    keys = rng.random(mask.shape)  # [N, A]
    keys[~mask] = -1.0
    actions: IntArray = keys.argmax(axis=1).astype(np.int64)
    return actions


class RandomPolicy:
    """Uniform over each agent's legal actions."""

    policy_id = "random"

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        return None

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        return random_legal_actions(env.action_mask(), rng)


class EpsilonPolicy:
    """Each agent independently takes a random legal action with probability ``epsilon``."""

    def __init__(self, base: Policy, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base = base
        self.epsilon = epsilon
        self.policy_id = f"{base.policy_id}/eps={epsilon:.2f}"

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self.base.reset(env, rng)

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        # The base policy is always queried so its internal plan stays consistent.
        greedy = self.base.act(env, rng)
        explore: np.ndarray = np.less(rng.random(greedy.shape[0]), self.epsilon)  # [N]
        if not explore.any():
            return greedy
        return np.where(explore, random_legal_actions(env.action_mask(), rng), greedy)


def scripted_policy(env_id: str) -> Policy:
    """The hand-written expert for ``env_id``'s family."""
    from llmca_data.envs.ids import EnvId

    family = EnvId.parse(env_id).family
    if family == "lbf":
        from llmca_data.policies.lbf import LBFScripted

        return LBFScripted()
    if family == "rware":
        from llmca_data.policies.rware import RwareScripted

        return RwareScripted()
    from llmca_data.policies.spaceworld import SpaceworldScripted

    return SpaceworldScripted()
