"""Scripted experts for LBF and RWARE: legal actions, and returns far above random."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.policies.base import EpsilonPolicy, Policy, RandomPolicy, scripted_policy
from llmca_data.policies.lbf import LBFScripted
from llmca_data.policies.rware import RwareScripted


def mean_return(env_id: str, policy: Policy, episodes: int, seed0: int = 1000) -> float:
    """Mean team return; also checks every action is int64[N] and legal under the mask."""
    env = make_env(env_id)
    rng = np.random.default_rng(seed0)
    returns = []
    for ep in range(episodes):
        env.reset(seed0 + ep)
        policy.reset(env, rng)
        total = 0.0
        while True:
            mask = env.action_mask()
            actions = policy.act(env, rng)
            assert actions.dtype == np.int64 and actions.shape == (env.spec.n_agents,)
            assert mask[np.arange(len(actions)), actions].all()
            st = env.step(actions)
            total += float(st.reward_env.sum())
            if st.terminated or st.truncated:
                break
        returns.append(total)
    return float(np.mean(returns))


def test_scripted_policy_factory() -> None:
    assert isinstance(scripted_policy("lbf-8x8-2p-2f"), LBFScripted)
    assert isinstance(scripted_policy("rware-tiny-2ag"), RwareScripted)
    assert LBFScripted.policy_id == "lbf-scripted" and RwareScripted.policy_id == "rware-scripted"


@pytest.mark.parametrize("env_id", ["lbf-8x8-2p-2f", "lbf-10x10-3p-3f"])
def test_lbf_expert_clears_the_field(env_id: str) -> None:
    expert = mean_return(env_id, LBFScripted(), 30)
    random = mean_return(env_id, RandomPolicy(), 30)
    assert expert > 0.9 and expert > random + 0.5


def test_lbf_expert_cooperates() -> None:
    """Every food in -coop needs both agents loading together; random almost never manages."""
    expert = mean_return("lbf-8x8-2p-2f-coop", LBFScripted(), 30)
    random = mean_return("lbf-8x8-2p-2f-coop", RandomPolicy(), 30)
    assert expert > 0.8 and random < 0.1


def test_lbf_expert_survives_exploration() -> None:
    assert mean_return("lbf-10x10-3p-3f", EpsilonPolicy(LBFScripted(), 0.3), 20) > 0.6


@pytest.mark.parametrize(("env_id", "episodes"), [("rware-tiny-2ag", 3), ("rware-small-4ag", 2)])
def test_rware_expert_delivers(env_id: str, episodes: int) -> None:
    expert = mean_return(env_id, RwareScripted(), episodes)
    assert expert >= 15
    assert mean_return(env_id, EpsilonPolicy(RwareScripted(), 0.2), 1) >= 8


def test_rware_random_delivers_almost_nothing() -> None:
    assert mean_return("rware-tiny-2ag", RandomPolicy(), 1) < 2


class _DescribeOnly:
    """An env view with ``describe()``/``action_mask()`` only (no ``highway_mask``, no ``raw``)."""

    def __init__(self, env: MultiAgentEnv) -> None:
        self._env = env
        self.spec = env.spec

    def describe(self) -> dict[str, Any]:
        return self._env.describe()

    def action_mask(self) -> np.ndarray:
        return self._env.action_mask()


def test_rware_policy_needs_only_describe() -> None:
    """Highways are inferred from the shelves at reset when the env has no ``highway_mask``."""
    env = make_env("rware-tiny-2ag")
    env.reset(2)
    full, thin = RwareScripted(), RwareScripted()
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    full.reset(env, rng_a)
    thin.reset(_DescribeOnly(env), rng_b)  # type: ignore[arg-type]
    for _ in range(100):
        a = full.act(env, rng_a)
        np.testing.assert_array_equal(a, thin.act(_DescribeOnly(env), rng_b))  # type: ignore[arg-type]
        env.step(a)
