"""Reference critics: Shapley axioms, counterfactual facts, horizon replay, failure handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmca_data.annotation.branch import Brancher, discounted_window_returns
from llmca_data.annotation.registry import make_critic
from llmca_data.annotation.shapley import efficient_credits, shapley_exact, shapley_sampled
from llmca_data.envs import make_env
from llmca_data.errors import UnknownCriticError
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy

games = st.integers(1, 4).flatmap(
    lambda n: st.lists(st.floats(-5, 5, allow_nan=False), min_size=1 << n, max_size=1 << n).map(np.array)
)


@given(games)
def test_shapley_efficiency(values: np.ndarray) -> None:
    phi = shapley_exact(values)
    assert phi.sum() == pytest.approx(values[-1] - values[0], abs=1e-9)
    assert efficient_credits(phi, values[0]).sum() == pytest.approx(values[-1], abs=1e-9)


@given(st.integers(1, 4), st.lists(st.floats(-5, 5, allow_nan=False), min_size=5, max_size=5))
def test_shapley_symmetry(n: int, by_size: list[float]) -> None:
    """A game that depends only on coalition size gives every agent the same value."""
    values = np.array([by_size[bin(m).count("1")] for m in range(1 << n)])
    phi = shapley_exact(values)
    np.testing.assert_allclose(phi, phi[0], atol=1e-9)


@given(games, st.data())
def test_shapley_null_player(values: np.ndarray, data: st.DataObject) -> None:
    n = values.shape[0].bit_length() - 1
    null = data.draw(st.integers(0, n - 1))
    masks = np.arange(1 << n)
    values = values[masks & ~(1 << null)]  # v(S ∪ {null}) = v(S): the null agent never matters
    assert shapley_exact(values)[null] == pytest.approx(0.0, abs=1e-9)


@given(games, st.floats(-3, 3, allow_nan=False), st.data())
def test_shapley_linearity(v: np.ndarray, a: float, data: st.DataObject) -> None:
    w = np.array(data.draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=v.size, max_size=v.size)))
    np.testing.assert_allclose(shapley_exact(v + a * w), shapley_exact(v) + a * shapley_exact(w), atol=1e-8)


@settings(max_examples=20)
@given(games)
def test_permutation_sampling_is_efficient_and_close(values: np.ndarray) -> None:
    n = values.shape[0].bit_length() - 1
    phi = shapley_sampled(n, lambda m: float(values[m]), 4000, np.random.default_rng(0))
    assert phi.sum() == pytest.approx(values[-1] - values[0], abs=1e-9)
    np.testing.assert_allclose(phi, shapley_exact(values), atol=0.35)


def play(env_id: str, tier: str, seed: int, **kwargs: object) -> Episode:
    return run_episode(make_env(env_id, **kwargs), tier_policy(env_id, tier, tier_rng(seed)), seed, tier)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("lbf-10x10-3p-3f", {}), ("spaceworld-10x10-3a", {}), ("rware-small-4ag", {"max_steps": 80})],
)
def test_real_shapley_is_efficient_and_noop_agents_are_null(env_id: str, kwargs: dict[str, object]) -> None:
    for seed in range(3):
        episode = play(env_id, "medium", seed, **kwargs)
        out = make_critic("shapley").annotate(episode, make_env(env_id, **kwargs))
        assert out.status == "ok"
        np.testing.assert_allclose(out.credits.sum(axis=1), episode.reward_team, atol=1e-5)
        noop = episode.action == 0  # [T, N]; these contexts never have v(∅) ≠ 0
        assert out.raw_response == ""
        np.testing.assert_array_equal(out.credits[noop], 0.0)


def test_lbf_agents_outside_a_load_get_zero_counterfactual_credit() -> None:
    checked = 0
    for seed in range(12):
        episode = play("lbf-8x8-2p-2f", "expert", seed)
        credits = make_critic("counterfactual").annotate(episode, make_env("lbf-8x8-2p-2f")).credits
        outside = (episode.reward_team[:, None] > 0) & (episode.reward_env == 0) & (episode.action != 5)
        checked += int(outside.sum())
        np.testing.assert_array_equal(credits[outside], 0.0)
        # Removing a loader never raises the team reward (a redundant helper gets exactly 0).
        assert np.all(credits[episode.reward_env > 0] >= 0)
    assert checked > 0, "no step had an agent outside a load; pick other seeds"


@pytest.mark.parametrize("env_id", ["rware-tiny-2ag", "spaceworld-10x10-3a", "lbf-8x8-2p-2f-coop"])
def test_horizon_replay_without_replacement_reproduces_the_log(env_id: str) -> None:
    kwargs = {"max_steps": 150} if env_id.startswith("rware") else {}
    episode = play(env_id, "expert", 4, **kwargs)
    assert episode.return_team > 0
    branch = Brancher(episode, make_env(env_id, **kwargs))
    for horizon, gamma in ((1, 1.0), (7, 0.9), (40, 0.99)):
        factual = discounted_window_returns(episode.reward_team, horizon, gamma)
        replayed = [branch.team_return(t, episode.action[t], horizon, gamma) for t in range(episode.length)]
        np.testing.assert_allclose(replayed, factual, atol=1e-6)


def test_longer_horizon_credits_the_steps_that_lead_to_reward() -> None:
    episode = play("lbf-8x8-2p-2f", "expert", 2)
    h1 = make_critic("counterfactual").annotate(episode, make_env("lbf-8x8-2p-2f")).credits
    h5 = make_critic("counterfactual-h5").annotate(episode, make_env("lbf-8x8-2p-2f")).credits
    unrewarded = episode.reward_team == 0
    assert np.all(h1[unrewarded] == 0) and np.any(h5[unrewarded] != 0)


def test_uniform_splits_the_team_reward() -> None:
    episode = play("spaceworld-10x10-3a", "medium", 1)
    out = make_critic("uniform").annotate(episode, None)
    np.testing.assert_allclose(out.credits, np.repeat(episode.reward_team[:, None] / 3, 3, axis=1), rtol=1e-6)


@pytest.mark.parametrize("env_id", ["lbf-8x8-2p-2f", "spaceworld-10x10-3a"])
def test_env_critic_is_the_envs_own_per_agent_reward(env_id: str) -> None:
    episode = play(env_id, "expert", 0)
    out = make_critic("env").annotate(episode, None)
    assert out.credits.dtype == np.float32 and out.credits is not episode.reward_env
    np.testing.assert_array_equal(out.credits, episode.reward_env)
    np.testing.assert_allclose(out.credits.sum(axis=1), episode.reward_team, atol=1e-6)
    assert episode.reward_team.sum() > 0  # the expert earns something, so the check is not vacuous


def test_an_episode_the_env_does_not_reproduce_fails_with_nan() -> None:
    episode = play("lbf-8x8-2p-2f", "random", 0)
    episode.obs = episode.obs.copy()
    episode.obs[2] += 1
    for critic_id in ("shapley", "counterfactual-h3"):
        out = make_critic(critic_id).annotate(episode, make_env("lbf-8x8-2p-2f"))
        assert out.status == "failed" and "step 2" in out.error
        assert out.credits.shape == (episode.length, 2) and np.isnan(out.credits).all()


def test_unknown_critic_names_the_valid_ones() -> None:
    with pytest.raises(UnknownCriticError, match="uniform, shapley, counterfactual"):
        make_critic("shapely")


@pytest.mark.parametrize("env_id", ["lbf-8x8-2p-2f", "spaceworld-10x10-3a"])
def test_delayed_reference_critics_measure_the_episode_return(env_id: str) -> None:
    """``counterfactual-delayed`` is the counterfactual over the rest of the episode, undiscounted;
    ``shapley-delayed``'s credits at t sum to the return from t minus that of all agents idling at t."""
    from llmca_data.annotation.counterfactual import CounterfactualCritic

    env = make_env(env_id)
    episode = next(e for k in range(20) if (e := run_episode(env, tier_policy(env_id, "medium", tier_rng(k)), k,
                                                              "medium")).return_team > 0)  # fmt: skip
    cf = make_critic("counterfactual-delayed").annotate(episode, env)
    full = CounterfactualCritic(horizon=episode.length, gamma=1.0).annotate(episode, env)
    np.testing.assert_allclose(cf.credits, full.credits, atol=1e-6)
    assert cf.credits[:-1].any(), "steps before the end get credit for the return they led to"
    shap = make_critic("shapley-delayed").annotate(episode, env)
    branch, noop = Brancher(episode, env), env.spec.noop_action
    to_go = discounted_window_returns(episode.reward_team, episode.length, 1.0)  # [T]
    for t in range(0, episode.length, 7):
        idle = branch.team_return(t, np.full(episode.action.shape[1], noop), episode.length - t)
        assert shap.credits[t].sum() == pytest.approx(to_go[t] - idle, abs=1e-5)
    last = episode.length - 1  # at the last step the return to go is that step's reward: one-step values
    one_step = make_critic("shapley").annotate(episode, env).credits[last]
    np.testing.assert_allclose(shap.credits[last] - shap.credits[last].mean(), one_step - one_step.mean(), atol=1e-6)
    assert make_critic("counterfactual-delayed").params()["horizon"] == "episode end"
    with pytest.raises(ValueError, match="drop horizon"):
        CounterfactualCritic(horizon=3, delayed=True)
