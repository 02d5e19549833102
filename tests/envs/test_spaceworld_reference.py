"""The vectorised Spaceworld step equals a naive one-environment loop written from the rules.

``reference_step`` re-implements the module docstring of ``llmca_data.envs.spaceworld.core``
with plain Python, one environment at a time; random play (illegal actions included) over
many seeds and configs must give identical states, rewards, costs and flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from llmca_data.envs.spaceworld import SpaceworldConfig, VectorSpaceworld

Cell = tuple[int, int]
MOVES = {1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}
OPPOSITE = {1: 2, 2: 1, 3: 4, 4: 3}
FREE, CARRIED, DELIVERED = 0, 1, 2


@dataclass
class World:
    pos: list[Cell]
    carrying: list[int]
    disabled: list[int]
    mpos: list[Cell]
    status: list[int]
    dpos: list[Cell]
    ddir: list[int]
    t: int


def read(vec: VectorSpaceworld, b: int) -> World:
    s, w = vec.s, vec.config.width

    def rc(c: int) -> Cell:
        return (int(c) // w, int(c) % w)

    return World(
        [rc(c) for c in s.agent_cell[:, b]],
        [int(x) for x in s.carrying[:, b]],
        [int(x) for x in s.disabled[:, b]],
        [rc(c) for c in s.mod_cell[:, b]],
        [int(x) for x in s.mod_status[:, b]],
        [rc(c) for c in s.deb_cell[:, b]],
        [int(x) for x in s.deb_dir[:, b]],
        int(s.t[b]),
    )


def reference_step(cfg: SpaceworldConfig, w: World, actions: list[int]) -> tuple[list[float], list[float], bool, bool]:
    station = (cfg.height // 2, cfg.width // 2)
    docks = {(station[0] + dr, station[1] + dc) for dr, dc in MOVES.values()}
    weights = [int(x) for x in cfg.weights]
    n, m_count = cfg.n_agents, cfg.n_modules

    def valid(c: Cell) -> bool:
        return 0 <= c[0] < cfg.height and 0 <= c[1] < cfg.width and c != station

    def shift(c: Cell, a: int) -> Cell:
        return (c[0] + MOVES[a][0], c[1] + MOVES[a][1])

    acts = [0 if w.disabled[i] > 0 or not 0 <= a <= 5 else a for i, a in enumerate(actions)]
    # Grab.
    target = {}
    for i in range(n):
        if acts[i] == 5 and w.carrying[i] < 0:
            near = [
                k
                for k in range(m_count)
                if w.status[k] == FREE and sum(map(abs, np.subtract(w.pos[i], w.mpos[k]))) <= 1
            ]
            if near:
                target[i] = min(near)
    for k in range(m_count):
        team = [i for i, x in target.items() if x == k]
        if len(team) >= weights[k]:
            w.status[k] = CARRIED
            for i in team:
                w.carrying[i] = k
    carriers = {k: [i for i in range(n) if w.carrying[i] == k] for k in range(m_count)}
    # Move.
    new, new_m = list(w.pos), list(w.mpos)
    for k, team in carriers.items():
        chosen = {acts[i] for i in team}
        a = chosen.pop() if len(chosen) == 1 else 0
        if a in MOVES and all(valid(shift(c, a)) for c in [*(w.pos[i] for i in team), w.mpos[k]]):
            new_m[k] = shift(w.mpos[k], a)
            for i in team:
                new[i] = shift(w.pos[i], a)
    for i in range(n):
        if w.carrying[i] < 0 and acts[i] in MOVES and valid(shift(w.pos[i], acts[i])):
            new[i] = shift(w.pos[i], acts[i])
    # Agent collisions, bounce until consistent.
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    collided = {x for i, j in pairs if new[i] == new[j] or (new[i] == w.pos[j] and new[j] == w.pos[i]) for x in (i, j)}
    reverted = set(collided)
    while reverted:
        for k, team in carriers.items():
            if reverted & set(team):
                reverted |= set(team)
                new_m[k] = w.mpos[k]
        for i in reverted:
            new[i] = w.pos[i]
        conflict = {x for i, j in pairs if new[i] == new[j] for x in (i, j)}
        if not conflict:
            break
        collided |= conflict
        reverted |= conflict
    # Debris.
    for d in range(len(w.dpos)):
        old, direction = w.dpos[d], w.ddir[d]
        nxt = shift(old, direction)
        if not valid(nxt):
            direction = OPPOSITE[direction]
            nxt = shift(old, direction) if valid(shift(old, direction)) else old
        w.dpos[d], w.ddir[d] = nxt, direction
        collided |= {i for i in range(n) if new[i] == nxt or (new[i] == old and w.pos[i] == nxt)}
    cost = [1.0 if i in collided else 0.0 for i in range(n)]
    w.disabled = [cfg.disable_steps if i in collided else max(w.disabled[i] - 1, 0) for i in range(n)]
    for k, team in carriers.items():
        if w.status[k] == CARRIED and set(team) & collided:
            w.status[k] = FREE
            for i in team:
                w.carrying[i] = -1
    # Delivery.
    reward = [0.0] * n
    for k, team in carriers.items():
        if w.status[k] == CARRIED and (new_m[k] in docks or any(new[i] in docks for i in team)):
            w.status[k] = DELIVERED
            for i in team:
                reward[i] += weights[k] / sum(weights) / len(team)
                w.carrying[i] = -1
    w.pos, w.mpos, w.t = new, new_m, w.t + 1
    terminated = all(x == DELIVERED for x in w.status) or (cfg.terminate_on_collision and bool(collided))
    return reward, cost, terminated, w.t >= cfg.max_steps and not terminated


def reference_obs(cfg: SpaceworldConfig, w: World) -> np.ndarray:
    """Observations ``[N, obs_dim]`` written feature by feature from the docstring."""
    sh, sw = cfg.height - 1, cfg.width - 1
    station = (cfg.height // 2, cfg.width // 2)
    docks = [(station[0] + dr, station[1] + dc) for dr, dc in MOVES.values()]
    dis = max(cfg.disable_steps, 1)
    rows = []
    for i, (r, c) in enumerate(w.pos):
        x = [w.t / cfg.max_steps, r / sh, c / sw, float(w.carrying[i] >= 0), w.disabled[i] / dis]
        for j in range(cfg.n_agents):
            if j != i:
                x += [(w.pos[j][0] - r) / sh, (w.pos[j][1] - c) / sw, float(w.carrying[j] >= 0), w.disabled[j] / dis]
        for k, (mr, mc) in enumerate(w.mpos):
            rel = [0.0, 0.0] if w.status[k] == DELIVERED else [(mr - r) / sh, (mc - c) / sw]
            mine = w.carrying[i] == k
            x += [*rel, float(cfg.weights[k] == 2), float(w.status[k] == FREE), float(mine)]
            x += [float(w.status[k] == CARRIED and not mine), float(w.status[k] == DELIVERED)]
        dock = min(docks, key=lambda d: abs(d[0] - r) + abs(d[1] - c))  # ties: first in up, down, left, right
        x += [(dock[0] - r) / sh, (dock[1] - c) / sw]
        for (dr, dc), direction in zip(w.dpos, w.ddir, strict=True):
            if max(abs(dr - r), abs(dc - c)) <= cfg.view_radius:
                x += [1.0, (dr - r) / sh, (dc - c) / sw, *map(float, MOVES[direction])]
            else:
                x += [0.0] * 5
        rows.append(x)
    return np.array(rows)


def reference_state(cfg: SpaceworldConfig, w: World) -> np.ndarray:
    """Global state ``[state_dim]`` written from the docstring."""
    sh, sw, dis = cfg.height - 1, cfg.width - 1, max(cfg.disable_steps, 1)
    x = [w.t / cfg.max_steps]
    for i, (r, c) in enumerate(w.pos):
        x += [r / sh, c / sw, float(w.carrying[i] >= 0), w.disabled[i] / dis]
    for k, (r, c) in enumerate(w.mpos):
        x += [
            r / sh,
            c / sw,
            float(cfg.weights[k] == 2),
            *(float(w.status[k] == v) for v in (FREE, CARRIED, DELIVERED)),
        ]
        x += [float(w.carrying[i] == k) for i in range(cfg.n_agents)]
    for (r, c), direction in zip(w.dpos, w.ddir, strict=True):
        x += [r / sh, c / sw, *map(float, MOVES[direction])]
    return np.array(x)


@pytest.mark.parametrize(
    "config",
    [
        SpaceworldConfig(),
        SpaceworldConfig(n_debris=8, disable_steps=1),
        SpaceworldConfig(width=7, height=5, n_agents=4, n_modules=4, n_heavy=2, n_debris=3, max_steps=40),
        SpaceworldConfig(terminate_on_collision=True, max_steps=30),
    ],
)
def test_vector_step_equals_reference(config: SpaceworldConfig) -> None:
    b, n = 48, config.n_agents
    vec = VectorSpaceworld(config, b)
    vec.reset(np.arange(b) * 7 + 1)
    rng = np.random.default_rng(5)
    next_seed = 1000
    for _ in range(120):
        # Mostly legal actions, with GRAB favoured so that modules get carried; some illegal ones.
        mask = vec.action_mask()
        keys = rng.random(mask.shape) + 0.6 * mask
        keys[:, :, 5] += 0.3 * mask[:, :, 5]
        actions = keys.argmax(axis=2)
        actions[rng.random((b, n)) < 0.05] = 7
        worlds = [read(vec, i) for i in range(b)]
        obs, reward, cost, term, trunc = vec.step(actions)
        state = vec.state()
        for i, world in enumerate(worlds):
            r, c, te, tr = reference_step(config, world, [int(a) for a in actions[i]])
            assert read(vec, i) == world, f"env {i}"
            assert np.allclose(obs[i], reference_obs(config, world), atol=1e-6), f"env {i}"
            assert np.allclose(state[i], reference_state(config, world), atol=1e-6), f"env {i}"
            assert np.allclose(reward[i], r, atol=1e-6) and cost[i].tolist() == c
            assert (bool(term[i]), bool(trunc[i])) == (te, tr)
        done = np.flatnonzero(term | trunc)
        if done.size:
            vec.reset_envs(done, np.arange(next_seed, next_seed + done.size))
            next_seed += done.size
