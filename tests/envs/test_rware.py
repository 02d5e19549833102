"""RwareEnv: sizes, rware's own observations, masks that match rware's rules, the 500-step
truncation, and exact snapshots through deliveries (which draw from ``np_random``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.envs.rware import RwareEnv
from llmca_data.policies.base import EpsilonPolicy
from llmca_data.policies.rware import RwareScripted

RWARE_IDS = ("rware-tiny-2ag", "rware-small-4ag")


def expert_episode(env: RwareEnv, seed: int, epsilon: float = 0.1) -> list[np.ndarray]:
    """Actions of one episode of the scripted policy with epsilon exploration."""
    policy, rng = EpsilonPolicy(RwareScripted(), epsilon), np.random.default_rng(seed)
    env.reset(seed)
    policy.reset(env, rng)
    actions = []
    while True:
        a = policy.act(env, rng)
        actions.append(a)
        st = env.step(a)
        if st.terminated or st.truncated:
            return actions


@pytest.mark.parametrize(("env_id", "n_shelves"), [("rware-tiny-2ag", 32), ("rware-small-4ag", 80)])
def test_spec_matches_arrays(env_id: str, n_shelves: int) -> None:
    env = make_env(env_id)
    assert isinstance(env, RwareEnv) and isinstance(env, MultiAgentEnv)
    n, spec = env.n_agents, env.spec
    assert env.n_shelves == n_shelves
    assert spec.obs_dim == 71 and spec.state_dim == 7 * n + 3 * n_shelves + 1
    assert spec.max_steps == 500 and spec.noop_action == 0 and spec.n_actions == 5
    obs = env.reset(0)
    assert obs.shape == (n, 71) and obs.dtype == np.float32
    assert env.state().shape == (spec.state_dim,) and env.state().dtype == np.float32
    assert env.action_mask().shape == (n, 5)
    assert spec.obs_features[:2] == ("self.x", "self.y") and spec.state_features[-1] == "t_frac"
    assert env.state()[7 * n + 2 : -1 : 3].sum() == n  # request queue size = N by default


@pytest.mark.parametrize("env_id", RWARE_IDS)
def test_obs_are_rwares_own(env_id: str) -> None:
    """The vectorised observation equals rware's per-agent ``_make_obs`` through deliveries."""
    env, plain = RwareEnv(env_id), RwareEnv(env_id, fast_obs=False)
    actions = expert_episode(plain, 3)
    np.testing.assert_array_equal(env.reset(3), plain.reset(3))
    raw = env.raw
    for t, a in enumerate(actions):
        st, st_plain = env.step(a), plain.step(a)
        np.testing.assert_array_equal(st.obs, st_plain.obs)
        np.testing.assert_array_equal(st.reward_env, st_plain.reward_env)
        if t % 50 == 0:
            np.testing.assert_array_equal(st.obs, np.stack([type(raw)._make_obs(raw, ag) for ag in raw.agents]))


def test_mask_follows_rwares_rules() -> None:
    """A masked-out FORWARD or TOGGLE_LOAD is one rware would not execute; an allowed TOGGLE is executed."""
    env = make_env("rware-small-4ag")
    rng = np.random.default_rng(0)
    toggles = 0
    for seed in range(3):
        env.reset(seed)
        for _ in range(300):
            mask = env.action_mask()
            assert mask[:, [0, 2, 3]].all()
            before = env.describe()["agents"]
            a = rng.integers(0, 5, env.n_agents)
            st = env.step(a)
            after = env.describe()["agents"]
            for i, act in enumerate(a):
                if act == 1 and not mask[i, 1]:
                    assert after[i]["pos"] == before[i]["pos"]
                if act == 4:
                    assert (after[i]["carrying"] != before[i]["carrying"]) == bool(mask[i, 4])
                    toggles += int(mask[i, 4])
            if st.truncated:
                break
    assert toggles > 5


def test_truncated_at_500_never_terminated_and_custom_limit() -> None:
    env = make_env("rware-tiny-2ag")
    env.reset(0)
    for t in range(1, 501):
        st = env.step(np.zeros(2, np.int64))
        assert not st.terminated and st.truncated == (t == 500)
    assert env.state()[-1] == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.int64))
    short = make_env("rware-tiny-2ag", max_steps=20)
    assert short.spec.max_steps == 20 and short.spec.kwargs == {"max_steps": 20}
    short.reset(0)
    flags = [short.step(np.zeros(2, np.int64)).truncated for _ in range(20)]
    assert flags == [False] * 19 + [True]


def test_rewards_float32_and_describe_is_json() -> None:
    env = make_env("rware-tiny-2ag")
    actions = expert_episode(env, 1, epsilon=0.0)
    env.reset(1)
    total = 0.0
    for a in actions:
        st = env.step(a)
        assert st.reward_env.dtype == np.float32 and st.cost.dtype == np.float32
        total += float(st.reward_env.sum())
        desc = env.describe()
        json.dumps(desc)
    assert total >= 5
    assert desc["grid"] == [11, 10] and desc["goals"] == [[10, 4], [10, 5]] and desc["t"] == 500
    assert {a["dir"] for a in desc["agents"]} <= {"up", "down", "left", "right"}
    assert sum(s["requested"] for s in desc["shelves"]) == 2


@pytest.mark.parametrize("env_id", RWARE_IDS)
def test_snapshot_before_each_delivery_replays_exactly(env_id: str) -> None:
    """Snapshot every step; restore the one before each delivery twice and replay to the end."""
    env = make_env(env_id)
    actions = expert_episode(env, 4)
    env.reset(4)
    snaps, log = [], []
    for a in actions:
        snaps.append(env.snapshot())
        st = env.step(a)
        log.append((st.obs, st.reward_env, env.state(), st.truncated))
    deliveries = [t for t, (_, r, _, _) in enumerate(log) if r.sum() > 0]
    assert len(deliveries) >= 3
    for t in (deliveries[0], deliveries[len(deliveries) // 2]):
        for _ in range(2):  # the same snapshot twice
            env.restore(snaps[t])
            for u in range(t, len(actions)):
                st = env.step(actions[u])
                obs, rew, state, trunc = log[u]
                np.testing.assert_array_equal(st.obs, obs)
                np.testing.assert_array_equal(st.reward_env, rew)
                np.testing.assert_array_equal(env.state(), state)
                assert st.truncated == trunc


def test_snapshot_restore_every_step_random() -> None:
    """Thousands of single steps: restore + the same action gives the same step."""
    env = make_env("rware-tiny-2ag")
    rng = np.random.default_rng(5)
    env.reset(0)
    for _ in range(2000):
        snap = env.snapshot()
        a = rng.integers(0, 5, 2)
        first = env.step(a)
        s1, d1 = env.state(), env.describe()
        env.restore(snap)
        second = env.step(a)
        np.testing.assert_array_equal(first.obs, second.obs)
        np.testing.assert_array_equal(s1, env.state())
        assert d1 == env.describe()
        if second.truncated:
            env.reset(1)


def test_reset_determinism_and_interleaved_envs() -> None:
    """Same seed + same actions → same trajectory, even with another rware env reset in between
    (rware numbers agents with class-level counters)."""
    a_env, b_env = make_env("rware-tiny-2ag"), make_env("rware-small-4ag")
    actions = expert_episode(make_env("rware-tiny-2ag"), 6)[:200]
    runs = []
    for interleave in (False, True):
        a_env.reset(6)
        if interleave:
            b_env.reset(0)
        states = []
        for t, a in enumerate(actions):
            st = a_env.step(a)
            if interleave and t % 37 == 0:
                b_env.reset(t)
            states.append(np.concatenate([st.obs.ravel(), st.reward_env, a_env.state()]))
        runs.append(np.stack(states))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len({a_env.reset(seed).tobytes() for seed in range(5)}) > 1


def test_success_means_at_least_one_delivery() -> None:
    """RWARE has no goal state; an episode succeeds when it delivered at least once."""
    from llmca_data.policies.base import RandomPolicy
    from llmca_data.rollout import run_episode

    env = RwareEnv("rware-tiny-2ag", max_steps=120)
    expert = run_episode(env, RwareScripted(), 3, "expert")
    assert expert.return_team > 0 and expert.success
    random = run_episode(env, RandomPolicy(), 3, "random")
    assert random.return_team == 0 and not random.success
