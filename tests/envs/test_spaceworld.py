"""Spaceworld rules on hand-placed scenes, the single/vector/PettingZoo views, and the scripted expert.

Grid used everywhere: 10x10, station (5, 5), docks (4, 5), (6, 5), (5, 4), (5, 6).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from llmca_data.envs import make_env
from llmca_data.envs.spaceworld import SpaceworldConfig, SpaceworldEnv, VectorSpaceworld, parallel_env
from llmca_data.policies.base import RandomPolicy, random_legal_actions, scripted_policy

NOOP, UP, DOWN, LEFT, RIGHT, GRAB = range(6)
FAR_MODULES = [(9, 0), (9, 2), (0, 9)]  # out of everyone's way


def env_with(**kwargs: Any) -> SpaceworldEnv:
    return SpaceworldEnv("spaceworld-10x10-3a", **kwargs)


def positions(env: SpaceworldEnv) -> list[list[int]]:
    return [a["pos"] for a in env.describe()["agents"]]


# ------------------------------------------------------------------------------- collisions
def test_same_cell_collision_costs_both_bounces_and_disables() -> None:
    env = env_with(n_debris=0)
    env.set_scene([(0, 0), (0, 2), (8, 8)], FAR_MODULES)
    step = env.step([RIGHT, LEFT, NOOP])
    assert step.cost.tolist() == [1.0, 1.0, 0.0]
    assert positions(env) == [[0, 0], [0, 2], [8, 8]]
    assert [a["disabled"] for a in env.describe()["agents"]] == [3, 3, 0]
    assert step.info["collisions"] == 2
    assert not step.terminated and not step.truncated


def test_swap_collision() -> None:
    env = env_with(n_debris=0)
    env.set_scene([(0, 0), (0, 1), (8, 8)], FAR_MODULES)
    step = env.step([RIGHT, LEFT, NOOP])
    assert step.cost.tolist() == [1.0, 1.0, 0.0]
    assert positions(env) == [[0, 0], [0, 1], [8, 8]]


def test_following_and_bounce_cascade() -> None:
    env = env_with(n_debris=0)
    # A follows B into a vacated cell: no collision.
    env.set_scene([(0, 0), (0, 1), (8, 8)], FAR_MODULES)
    assert env.step([RIGHT, RIGHT, NOOP]).cost.sum() == 0
    assert positions(env) == [[0, 1], [0, 2], [8, 8]]
    # B and C meet at (0, 3); B bounces back onto (0, 2), where A arrived: A collides too.
    env.set_scene([(0, 1), (0, 2), (0, 4)], FAR_MODULES)
    step = env.step([RIGHT, RIGHT, LEFT])
    assert step.cost.tolist() == [1.0, 1.0, 1.0]
    assert positions(env) == [[0, 1], [0, 2], [0, 4]]


def test_debris_collisions_same_cell_and_swap_but_not_passing() -> None:
    env = env_with(n_debris=1)
    env.set_scene([(2, 2), (8, 8), (8, 0)], FAR_MODULES, [((2, 3), (0, -1))])
    assert env.step([NOOP, NOOP, NOOP]).cost.tolist() == [1.0, 0.0, 0.0]  # debris enters the agent's cell
    env.set_scene([(2, 2), (8, 8), (8, 0)], FAR_MODULES, [((2, 3), (0, -1))])
    step = env.step([RIGHT, NOOP, NOOP])  # agent and debris swap cells
    assert step.cost.tolist() == [1.0, 0.0, 0.0]
    assert positions(env)[0] == [2, 3]  # debris does not bounce agents back
    env.set_scene([(2, 2), (8, 8), (8, 0)], FAR_MODULES, [((2, 3), (0, -1))])
    assert env.step([UP, NOOP, NOOP]).cost.sum() == 0  # dodged


def test_disabled_agent_can_only_noop_for_disable_steps() -> None:
    env = env_with(n_debris=0, disable_steps=2)
    env.set_scene([(0, 0), (0, 1), (8, 8)], FAR_MODULES)
    env.step([RIGHT, LEFT, NOOP])
    for expected_counter in (1, 0):
        mask = env.action_mask()
        assert mask[0].tolist() == [True, False, False, False, False, False]
        assert mask[2].sum() > 1
        env.step([DOWN, DOWN, NOOP])  # ignored for the disabled agents
        assert positions(env)[:2] == [[0, 0], [0, 1]]
        assert env.describe()["agents"][0]["disabled"] == expected_counter
    assert env.action_mask()[0, DOWN]
    env.step([DOWN, NOOP, NOOP])
    assert positions(env)[0] == [1, 0]


def test_collision_drops_the_carried_module() -> None:
    env = env_with(n_debris=1)
    env.set_scene([(2, 2), (8, 8), (8, 0)], [(2, 1), *FAR_MODULES[1:]], [((2, 3), (0, -1))], carrying=[0, -1, -1])
    step = env.step([NOOP, NOOP, NOOP])
    assert step.cost[0] == 1.0
    d = env.describe()
    assert d["agents"][0]["carrying"] is None and d["modules"][0]["status"] == "free"
    assert d["modules"][0]["pos"] == [2, 1]


def test_terminate_on_collision() -> None:
    env = env_with(n_debris=0, terminate_on_collision=True)
    env.set_scene([(0, 0), (0, 2), (8, 8)], FAR_MODULES)
    step = env.step([RIGHT, LEFT, NOOP])
    assert step.terminated and not step.truncated and not step.info["success"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step([NOOP, NOOP, NOOP])


# ------------------------------------------------------------------------------- grab and deliver
def test_heavy_module_needs_two_simultaneous_grabs_light_needs_one() -> None:
    env = env_with(n_debris=0)
    modules = [(7, 7), (9, 0), (2, 2)]  # module_2 is heavy
    env.set_scene([(2, 1), (1, 2), (7, 8)], modules)
    assert env.action_mask()[:, GRAB].tolist() == [True, True, True]
    env.step([GRAB, NOOP, GRAB])
    d = env.describe()
    assert d["modules"][2]["status"] == "free" and d["agents"][0]["carrying"] is None  # one is not enough
    assert d["modules"][0]["status"] == "carried" and d["agents"][2]["carrying"] == "module_0"
    env.step([NOOP, GRAB, NOOP])  # staggered grabs do not add up
    assert env.describe()["modules"][2]["status"] == "free"
    env.step([GRAB, GRAB, NOOP])
    d = env.describe()
    assert d["modules"][2]["status"] == "carried"
    assert [a["carrying"] for a in d["agents"]] == ["module_2", "module_2", "module_0"]
    assert not env.action_mask()[:, GRAB].any()


def test_body_moves_only_when_all_carriers_agree_and_fit() -> None:
    env = env_with(n_debris=0)
    env.set_scene([(2, 1), (1, 2), (9, 9)], [(9, 0), (9, 2), (2, 2)], carrying=[2, 2, -1])
    env.step([RIGHT, DOWN, NOOP])  # disagree: stays
    assert positions(env)[:2] == [[2, 1], [1, 2]]
    env.step([RIGHT, RIGHT, NOOP])
    assert positions(env)[:2] == [[2, 2], [1, 3]] and env.describe()["modules"][2]["pos"] == [2, 3]
    env.set_scene([(0, 1), (1, 0), (9, 9)], [(9, 0), (9, 2), (1, 1)], carrying=[2, 2, -1])
    assert not env.action_mask()[0, UP] and not env.action_mask()[1, LEFT]  # the body would leave the grid
    env.step([UP, UP, NOOP])
    assert positions(env)[:2] == [[0, 1], [1, 0]]


def test_delivery_splits_reward_and_team_return_is_one() -> None:
    env = env_with(n_debris=0)
    # module_2 (heavy, value 0.5) above the top dock, carried by two agents; module_0 (light, 0.25) carried by one.
    env.set_scene([(3, 4), (2, 5), (6, 7)], [(6, 8), (9, 0), (3, 5)], carrying=[2, 2, 0], status=[1, 0, 1])
    step = env.step([DOWN, DOWN, LEFT])  # module_2 reaches the dock (4, 5); agent 2 reaches nothing yet
    assert step.reward_env.tolist() == pytest.approx([0.25, 0.25, 0.0])
    assert env.describe()["modules"][2]["status"] == "delivered"
    assert env.describe()["agents"][0]["carrying"] is None
    step = env.step([NOOP, NOOP, LEFT])  # agent 2 at (6, 5): a dock
    assert step.reward_env.tolist() == pytest.approx([0.0, 0.0, 0.25])
    assert not step.terminated
    env.step([NOOP, NOOP, NOOP])


def test_success_terminates_and_return_at_most_one() -> None:
    env = env_with(n_debris=0)
    env.set_scene([(3, 4), (2, 5), (6, 6)], [(6, 7), (5, 7), (3, 5)], carrying=[2, 2, 0])
    # module_1 is free next to the right dock; agent 2 delivers module_0 by stepping onto (6, 5).
    total = env.step([DOWN, DOWN, LEFT]).reward_env.sum()
    assert total == pytest.approx(0.75)
    env.step([NOOP, NOOP, RIGHT])
    step = env.step([NOOP, NOOP, UP])  # agent 2 at (5, 6)=dock next to module_1 at (5, 7)
    step = env.step([NOOP, NOOP, GRAB])  # grab on a dock delivers at once
    total += step.reward_env.sum()
    assert step.terminated and not step.truncated and step.info["success"]
    assert total == pytest.approx(1.0)


# ------------------------------------------------------------------------------- debris, time
def test_debris_moves_and_bounces_off_walls_and_station() -> None:
    env = env_with(n_debris=2)
    env.set_scene([(9, 9), (9, 7), (9, 5)], FAR_MODULES, [((0, 3), (-1, 0)), ((5, 3), (0, 1))])
    trace = []
    for _ in range(4):
        env.step([NOOP, NOOP, NOOP])
        trace.append([(tuple(d["pos"]), tuple(d["vel"])) for d in env.describe()["debris"]])
    assert [t[0] for t in trace] == [((1, 3), (1, 0)), ((2, 3), (1, 0)), ((3, 3), (1, 0)), ((4, 3), (1, 0))]
    assert [t[1] for t in trace] == [((5, 4), (0, 1)), ((5, 3), (0, -1)), ((5, 2), (0, -1)), ((5, 1), (0, -1))]


def test_time_limit_truncates_never_both() -> None:
    env = env_with(max_steps=5)
    env.reset(1)
    flags = [env.step([NOOP] * 3) for _ in range(5)]
    assert [f.truncated for f in flags] == [False] * 4 + [True]
    assert not any(f.terminated for f in flags)
    vec = VectorSpaceworld(SpaceworldConfig(max_steps=30), 256)
    vec.reset(np.arange(256))
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, _, _, term, trunc = vec.step(rng.integers(0, 6, (256, 3)))
        assert not (term & trunc).any()
    assert (term | trunc).all()


# ------------------------------------------------------------------------------- views
def test_spec_obs_state_and_describe() -> None:
    env = make_env("spaceworld-10x10-3a", n_debris=2)
    assert isinstance(env, SpaceworldEnv)
    spec = env.spec
    assert (spec.obs_dim, spec.state_dim, spec.n_actions, spec.max_steps) == (46, 48, 6, 100)
    assert spec.kwargs == {"n_debris": 2} and spec.noop_action == 0
    obs = env.reset(3)
    assert obs.shape == (3, 46) and obs.dtype == np.float32 and env.state().shape == (48,)
    rng = np.random.default_rng(0)
    for _ in range(40):
        step = env.step(random_legal_actions(env.action_mask(), rng))
        assert np.abs(step.obs).max() <= 1.0 and np.abs(env.state()).max() <= 1.0
    d = json.loads(json.dumps(env.describe()))
    assert d["station"] == [5, 5] and len(d["docks"]) == 4 and d["t"] == 40
    assert {m["weight"] for m in d["modules"]} == {1, 2}


def test_feature_names_match_values() -> None:
    env = env_with()
    obs = env.reset(5)
    state, spec = env.state(), env.spec
    o, s = spec.obs_features.index, spec.state_features.index
    for i in range(3):
        assert obs[i, o("self.row")] == state[s(f"agent_{i}.row")]
        for m in range(3):
            rel = state[s(f"module_{m}.col")] - state[s(f"agent_{i}.col")]
            assert obs[i, o(f"module_{m}.dcol")] == pytest.approx(rel)
            assert obs[i, o(f"module_{m}.heavy")] == state[s(f"module_{m}.heavy")] == float(m == 2)
        other = next(j for j in range(3) if j != i)
        assert obs[i, o("other_1.drow")] == pytest.approx(state[s(f"agent_{other}.row")] - obs[i, o("self.row")])


def test_reset_is_a_pure_function_of_the_seed() -> None:
    env = env_with()
    env.reset(0)
    d = env.describe()
    # Golden values: the seed hash is numpy-version independent; changing them breaks replay.
    assert [a["pos"] for a in d["agents"]] == [[5, 1], [4, 7], [7, 1]]
    assert [m["pos"] for m in d["modules"]] == [[3, 7], [3, 8], [1, 8]]
    assert [(x["pos"], x["vel"]) for x in d["debris"]] == [([1, 1], [-1, 0]), ([5, 8], [0, -1])]
    other = env_with()
    assert np.array_equal(other.reset(12345), env.reset(12345))


def test_vectorised_equals_single_envs() -> None:
    seeds = [4, 8, 15, 16, 23, 42]
    vec = VectorSpaceworld(SpaceworldConfig(), len(seeds))
    vobs = vec.reset(np.array(seeds))
    singles = [env_with() for _ in seeds]
    sobs = np.stack([e.reset(s) for e, s in zip(singles, seeds, strict=True)])
    assert np.array_equal(vobs, sobs)
    rng = np.random.default_rng(7)
    live = np.ones(len(seeds), dtype=bool)
    for _ in range(100):
        mask = vec.action_mask()
        assert np.array_equal(
            mask[live], np.stack([e.action_mask() for e, ok in zip(singles, live, strict=True) if ok])
        )
        actions = np.stack([random_legal_actions(m, rng) for m in mask])  # [B, N]
        obs, rew, cost, term, trunc = vec.step(actions)
        for b in np.flatnonzero(live):
            st = singles[b].step(actions[b])
            assert np.array_equal(obs[b], st.obs) and np.array_equal(rew[b], st.reward_env)
            assert np.array_equal(cost[b], st.cost) and (term[b], trunc[b]) == (st.terminated, st.truncated)
            assert np.array_equal(vec.state()[b], singles[b].state())
        live &= ~(term | trunc)
        if not live.any():
            break


def test_snapshot_restore_is_exact() -> None:
    env = env_with(n_debris=4)
    env.reset(99)
    rng = np.random.default_rng(3)
    for _ in range(20):
        env.step(random_legal_actions(env.action_mask(), rng))
    snap = env.snapshot()
    actions = [random_legal_actions(np.ones((3, 6), bool), rng) for _ in range(80)]

    def play() -> list[tuple[Any, ...]]:
        out = []
        for a in actions:
            st = env.step(a)
            out.append((st.obs.copy(), st.reward_env.copy(), st.cost.copy(), env.state().copy(), env.action_mask()))
            if st.terminated or st.truncated:
                break
        return out

    first = play()
    for _ in range(2):  # the snapshot stays reusable
        env.restore(snap)
        assert env.snapshot().state.equals(snap.state)
        again = play()
        assert len(again) == len(first)
        for x, y in zip(first, again, strict=True):
            assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


def test_pettingzoo_parallel_api() -> None:
    from pettingzoo.test import parallel_api_test

    parallel_api_test(parallel_env(), num_cycles=150)
    env = parallel_env(env_id="spaceworld-8x6-2a", n_modules=2, render_mode="ansi")
    obs, infos = env.reset(seed=1)
    assert set(obs) == {"agent_0", "agent_1"} and infos["agent_0"]["action_mask"].shape == (6,)
    assert env.state().shape == env.state_space.shape
    _, rewards, _, _, infos = env.step({"agent_0": 1, "agent_1": 2})
    assert set(infos["agent_1"]) == {"action_mask", "cost"} and isinstance(rewards["agent_0"], float)
    assert isinstance(env.render(), str)


# ------------------------------------------------------------------------------- policies
def run_policy(policy: Any, episodes: int) -> tuple[float, float]:
    env = env_with()
    rng = np.random.default_rng(0)
    returns, collisions = [], []
    for ep in range(episodes):
        env.reset(10_000 + ep)
        policy.reset(env, rng)
        ret = cost = 0.0
        while True:
            actions = policy.act(env, rng)
            assert env.action_mask()[np.arange(3), actions].all()
            st = env.step(actions)
            ret, cost = ret + float(st.reward_env.sum()), cost + float(st.cost.sum())
            if st.terminated or st.truncated:
                break
        returns.append(ret)
        collisions.append(cost)
    return float(np.mean(returns)), float(np.mean(collisions))


def test_scripted_beats_random_with_few_collisions() -> None:
    scripted = scripted_policy("spaceworld-10x10-3a")
    assert scripted.policy_id == "spaceworld-scripted"
    ret_s, coll_s = run_policy(scripted, 15)
    ret_r, coll_r = run_policy(RandomPolicy(), 5)
    assert ret_s >= 0.9 and ret_r <= 0.4, (ret_s, ret_r)
    assert coll_s <= 0.2 < coll_r
