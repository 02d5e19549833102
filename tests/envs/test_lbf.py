"""LBFEnv: sizes, LBF's own observations and masks, determinism, time limits, exact snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lbforaging.foraging.environment import Action

from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.envs.lbf import LBFEnv
from llmca_data.policies.lbf import LBFScripted

LBF_IDS = ("lbf-8x8-2p-2f", "lbf-8x8-2p-2f-coop", "lbf-10x10-3p-3f")


def random_actions(env: LBFEnv, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, env.spec.n_actions, env.spec.n_agents)  # [N], illegal ones become NONE


def rollout(env: LBFEnv, seed: int, actions: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    out = [(env.reset(seed), env.state())]
    for a in actions:
        st = env.step(a)
        out.append((st.obs, env.state(), st.reward_env, np.array([st.terminated, st.truncated])))
        if st.terminated or st.truncated:
            break
    return out


@pytest.mark.parametrize("env_id", LBF_IDS)
def test_spec_matches_arrays(env_id: str) -> None:
    env = make_env(env_id)
    assert isinstance(env, LBFEnv) and isinstance(env, MultiAgentEnv)
    spec = env.spec
    n, f = env.n_agents, env.n_food
    assert spec.obs_dim == 3 * f + 3 * n and spec.state_dim == 3 * n + 4 * f + 1
    assert spec.max_steps == 50 and spec.noop_action == 0 and spec.n_actions == 6
    assert spec.action_names == ("NONE", "NORTH", "SOUTH", "WEST", "EAST", "LOAD")
    obs = env.reset(0)
    assert obs.shape == (n, spec.obs_dim) and obs.dtype == np.float32
    assert env.state().shape == (spec.state_dim,) and env.state().dtype == np.float32
    assert env.action_mask().shape == (n, 6) and env.action_mask().dtype == np.bool_
    assert spec.obs_features[3 * f : 3 * f + 3] == ("self.row", "self.col", "self.level")
    assert spec.state_features[-1] == "t_frac"
    if env_id.endswith("coop"):  # every food needs all agents together
        desc = env.describe()
        assert all(x["level"] == sum(a["level"] for a in desc["agents"]) for x in desc["food"])


@pytest.mark.parametrize("env_id", LBF_IDS)
def test_obs_and_mask_are_lbfs_own(env_id: str) -> None:
    """The vectorised observation equals LBF's ``_make_gym_obs``; the mask equals its valid actions."""
    env, plain = LBFEnv(env_id), LBFEnv(env_id, fast_obs=False)
    raw = env.raw
    rng = np.random.default_rng(0)
    for seed in range(6):
        np.testing.assert_array_equal(env.reset(seed), plain.reset(seed))
        done = False
        while not done:
            a = random_actions(env, rng)
            st, st_plain = env.step(a), plain.step(a)
            np.testing.assert_array_equal(st.obs, st_plain.obs)
            np.testing.assert_array_equal(st.obs, np.stack(type(raw)._make_gym_obs(raw)))
            mask = env.action_mask()
            for i, player in enumerate(raw.players):
                expected = [raw._is_valid_action(player, act) for act in Action]
                assert mask[i].tolist() == expected
            assert mask[:, 0].all()
            done = st.terminated or st.truncated


def test_reset_determines_the_episode() -> None:
    env = make_env("lbf-10x10-3p-3f")
    rng = np.random.default_rng(1)
    actions = [random_actions(env, rng) for _ in range(50)]
    first, second = rollout(env, 7, actions), rollout(make_env("lbf-10x10-3p-3f"), 7, actions)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    starts = {env.reset(s).tobytes() for s in range(10)}
    assert len(starts) > 1


def test_time_limit_is_truncation_and_clearing_is_termination() -> None:
    env = make_env("lbf-8x8-2p-2f")
    env.reset(0)
    for t in range(1, 51):
        st = env.step(np.zeros(2, np.int64))
        assert st.truncated == (t == 50) and not st.terminated
    assert env.state()[-1] == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.int64))
    policy, rng = LBFScripted(), np.random.default_rng(0)
    env.reset(0)
    policy.reset(env, rng)
    total = 0.0
    while True:
        st = env.step(policy.act(env, rng))
        assert st.reward_env.dtype == np.float32 and st.cost.dtype == np.float32 and not st.cost.any()
        total += float(st.reward_env.sum())
        assert not (st.terminated and st.truncated)
        if st.terminated or st.truncated:
            break
    assert st.terminated and total == pytest.approx(1.0, abs=1e-5)
    assert all(f["pos"] is None for f in env.describe()["food"])
    assert not env.state()[3 * 2 + 3 :: 4][:2].any()  # both present flags are 0


def test_describe_is_json_with_stable_food_ids() -> None:
    env = make_env("lbf-10x10-3p-3f")
    env.reset(3)
    before = env.describe()
    json.dumps(before)
    assert [f["id"] for f in before["food"]] == ["food_0", "food_1", "food_2"]
    assert before["grid"] == [10, 10] and before["t"] == 0 and before["agents"][0]["id"] == "agent_0"
    policy, rng = LBFScripted(), np.random.default_rng(0)
    policy.reset(env, rng)
    while all(f["pos"] is not None for f in env.describe()["food"]):
        env.step(policy.act(env, rng))
    after = env.describe()
    json.dumps(after)
    for b, a in zip(before["food"], after["food"], strict=True):
        assert a["id"] == b["id"] and a["level"] == b["level"] and a["pos"] in (None, b["pos"])


@pytest.mark.parametrize("env_id", ["lbf-8x8-2p-2f", "lbf-10x10-3p-3f"])
def test_snapshot_restore_replays_every_step(env_id: str) -> None:
    """Thousands of random steps: restore + the same action gives the same step, every time."""
    env = make_env(env_id)
    rng = np.random.default_rng(2)
    steps = 0
    seed = 0
    while steps < 2500:
        env.reset(seed)
        seed += 1
        done = False
        while not done:
            snap = env.snapshot()
            a = random_actions(env, rng)
            first = env.step(a)
            s1, m1, d1 = env.state(), env.action_mask().copy(), env.describe()
            env.restore(snap)
            second = env.step(a)
            np.testing.assert_array_equal(first.obs, second.obs)
            np.testing.assert_array_equal(first.reward_env, second.reward_env)
            assert (first.terminated, first.truncated) == (second.terminated, second.truncated)
            np.testing.assert_array_equal(s1, env.state())
            np.testing.assert_array_equal(m1, env.action_mask())
            assert d1 == env.describe()
            done = second.terminated or second.truncated
            steps += 1


def test_one_snapshot_restored_twice_and_across_episodes() -> None:
    env = make_env("lbf-10x10-3p-3f")
    policy, rng = LBFScripted(), np.random.default_rng(0)
    env.reset(5)
    policy.reset(env, rng)
    for _ in range(4):
        env.step(policy.act(env, rng))
    snap = env.snapshot()
    obs0 = env.last_obs.copy()

    def continuation() -> list[np.ndarray]:
        env.restore(snap)
        np.testing.assert_array_equal(env.last_obs, obs0)
        out, r = [], np.random.default_rng(9)
        for _ in range(40):
            st = env.step(policy.act(env, r))
            out.append(np.concatenate([st.obs.ravel(), st.reward_env, env.state()]))
            if st.terminated or st.truncated:
                break
        return out

    first = continuation()
    env.reset(123)  # another episode in between: different food slots
    second = continuation()
    assert len(first) == len(second)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)
