"""Scripted expert for Spaceworld: assign modules, grab together, carry to a dock, stay safe.

Input: a ``SpaceworldEnv`` in its current state (read whole: a centralised behaviour policy)
and a numpy Generator (used only to break deadlocks). Output: a legal joint action
``int64[N]``.

Each step:

1. **Assignment.** Free, enabled agents keep their module while it stays free; modules still
   short of agents (a heavy one needs two) get the nearest unassigned agents, greedily by
   shortest-path distance.
2. **Grab.** An agent heads for a grab cell of its module (the module's cell or a neighbour
   whose lowest-index free module in range is that module, so GRAB picks the right one; the
   partners of a heavy module take distinct cells). A light module is grabbed on arrival;
   the partners of a heavy module wait until all are in place and then GRAB in the same step.
3. **Carry.** Carriers move their body (carriers + module) in the direction that brings a
   body cell closest to a dock; every carrier of a body plays the same move.
4. **Safety.** Bodies are planned first, then the other agents. A plan is safe when the agent's
   next cell is not a cell a debris will occupy (debris motion is deterministic and predicted
   exactly), is not a swap with a debris, is not another agent's current cell and is not
   claimed by an agent planned before. The best safe option is taken (staying put when none
   is safe); when the preferred move is blocked by an agent, a random safe move is taken
   with probability 0.3 so that two agents facing each other do not wait forever.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmca_data.envs.base import IntArray, MultiAgentEnv
from llmca_data.envs.spaceworld.core import FREE
from llmca_data.envs.spaceworld.env import SpaceworldEnv
from llmca_data.envs.spaceworld.layout import DIR_VEC, GRAB, NOOP

Cell = tuple[int, int]
_DELTAS = [(int(dr), int(dc)) for dr, dc in DIR_VEC]  # index = action 0..4
_UNSTICK = 0.3
_HORIZON = 4  # steps of debris look-ahead for the escape check


class SpaceworldScripted:
    """Centralised scripted expert for every Spaceworld size (see the module docstring)."""

    policy_id = "spaceworld-scripted"

    def __init__(self) -> None:
        self._assign: dict[int, int] = {}

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self._assign = {}

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        if not isinstance(env, SpaceworldEnv):
            raise TypeError(f"SpaceworldScripted needs a SpaceworldEnv, got {type(env).__name__}")
        return _Planner(env, self._assign, rng).plan()


class _Planner:
    """One step of planning over a snapshot of the env read into Python tuples."""

    def __init__(self, env: SpaceworldEnv, assign: dict[int, int], rng: np.random.Generator) -> None:
        cfg, s, lay = env.config, env.vec.s, env.vec.layout
        self.h, self.w, self.rng, self.assign = cfg.height, cfg.width, rng, assign
        rc = lay.rc
        self.station = rc(lay.station)
        self.docks = [rc(c) for c in lay.docks]
        self.n, self.m = cfg.n_agents, cfg.n_modules
        self.pos = [rc(c) for c in s.agent_cell[:, 0]]
        self.carrying = [int(x) for x in s.carrying[:, 0]]
        self.disabled = [int(x) > 0 for x in s.disabled[:, 0]]
        self.mpos = [rc(c) for c in s.mod_cell[:, 0]]
        self.free = [int(x) == FREE for x in s.mod_status[:, 0]]
        self.weight = [int(x) for x in cfg.weights]
        # Debris timeline: cells at steps 0.._HORIZON (debris motion is deterministic).
        cells, dirs = s.deb_cell[:, 0], s.deb_dir[:, 0]
        self.deb_at: list[list[Cell]] = [[rc(c) for c in cells]]
        for _ in range(_HORIZON):
            cells, dirs = lay.deb_cell[cells, dirs], lay.deb_dir[cells, dirs]
            self.deb_at.append([rc(c) for c in cells])
        self.danger = set(self.deb_at[1])
        self.no_swap = {(b, a) for a, b in zip(self.deb_at[0], self.deb_at[1], strict=True)}  # (from, to)
        self.later = [*self.deb_at[2], *self.deb_at[3]]
        self.occupied = set(self.pos)
        self.reserved: set[Cell] = set()
        self.vacated: set[Cell] = set()  # current cells of agents already planned to move away
        self.actions = [NOOP] * self.n

    # -------------------------------------------------------------------------- geometry
    def valid(self, c: Cell) -> bool:
        return 0 <= c[0] < self.h and 0 <= c[1] < self.w and c != self.station

    def dist(self, a: Cell, b: Cell) -> int:
        """Shortest path length on the grid around the station (closed form: one obstacle)."""
        (r1, c1), (r2, c2), (sr, sc) = a, b, self.station
        d = abs(r1 - r2) + abs(c1 - c2)
        if r1 == r2 == sr and min(c1, c2) < sc < max(c1, c2):
            d += 2
        if c1 == c2 == sc and min(r1, r2) < sr < max(r1, r2):
            d += 2
        return d

    def dock_dist(self, c: Cell) -> int:
        return min(self.dist(c, d) for d in self.docks)

    @staticmethod
    def shift(c: Cell, a: int) -> Cell:
        return (c[0] + _DELTAS[a][0], c[1] + _DELTAS[a][1])

    def in_range(self, c: Cell, m: int) -> bool:
        return abs(c[0] - self.mpos[m][0]) + abs(c[1] - self.mpos[m][1]) <= 1

    # -------------------------------------------------------------------------- safety
    def safe(self, frm: Cell, to: Cell, own: set[Cell]) -> bool:
        """Safe next cell for an agent of a body whose current agent cells are ``own``."""
        if to in self.danger or (frm, to) in self.no_swap or to in self.reserved:
            return False
        return to in own or to not in self.occupied or to in self.vacated

    def debris_safe(self, frm: Cell, to: Cell, k: int) -> bool:
        """No debris collision when moving ``frm -> to`` during step ``k`` (1 = this step)."""
        before, after = self.deb_at[k - 1], self.deb_at[k]
        return all(to != b and not (to == a and frm == b) for a, b in zip(before, after, strict=True))

    def escapable(self, agents: list[Cell], extra: list[Cell], k: int) -> bool:
        """Whether a body (agent cells + module cells) can avoid debris from step ``k`` to the horizon."""
        if k > _HORIZON:
            return True
        for a in range(5):
            moved = [self.shift(c, a) for c in agents]
            if a and not all(self.valid(c) for c in [*moved, *(self.shift(c, a) for c in extra)]):
                continue
            if all(self.debris_safe(c, m, k) for c, m in zip(agents, moved, strict=True)) and self.escapable(
                moved, [self.shift(c, a) for c in extra], k + 1
            ):
                return True
        return False

    def choose(self, agents: list[int], options: list[tuple[Any, int]], extra: tuple[Cell, ...] = ()) -> None:
        """Give ``agents`` (one body, carrying ``extra`` module cells) the best safe option.

        ``options`` are ``(key, action)``, lower key first; options from which the body can
        still dodge debris for ``_HORIZON`` steps come before the others.
        """

        def trapped(a: int) -> int:
            nxt = [self.shift(self.pos[i], a) for i in agents]
            return int(not self.escapable(nxt, [self.shift(c, a) for c in extra], 2))

        moves = sorted(options, key=lambda o: (trapped(o[1]), o[0]))

        own = {self.pos[i] for i in agents}

        def ok(a: int) -> bool:
            return all(self.safe(self.pos[i], self.shift(self.pos[i], a), own) for i in agents)

        chosen = next((a for _, a in moves if ok(a)), None)
        best = moves[0][1]
        blocked_by_agent = (
            best != NOOP and not ok(best) and all(self.shift(self.pos[i], best) not in self.danger for i in agents)
        )
        if (chosen is None or chosen == NOOP) and blocked_by_agent and self.rng.random() < _UNSTICK:
            alternatives = [a for _, a in moves if a != NOOP and ok(a)]
            if alternatives:
                chosen = alternatives[int(self.rng.integers(len(alternatives)))]
        if chosen is None:
            chosen = NOOP
        for i in agents:
            self.actions[i] = chosen
            self.reserved.add(self.shift(self.pos[i], chosen))
            if chosen != NOOP:
                self.vacated.add(self.pos[i])

    # -------------------------------------------------------------------------- behaviours
    def plan(self) -> IntArray:
        for i in range(self.n):
            if self.disabled[i]:
                self.reserved.add(self.pos[i])
        self.update_assignment()
        goals = self.grab_goals()
        body_cells = {self.pos[i] for i in range(self.n) if self.carrying[i] >= 0}
        body_cells |= {self.mpos[m] for m in range(self.m) if any(k == m for k in self.carrying)}
        for i in range(self.n):  # idle agents first: they clear the way (docks, bodies)
            if not self.disabled[i] and self.carrying[i] < 0 and i not in goals:
                self.choose([i], self.idle_options(i, body_cells))
        for m in range(self.m):
            carriers = [i for i in range(self.n) if self.carrying[i] == m]
            if carriers:
                self.carry(m, carriers)
        ready = self.ready_modules(goals)
        for i in sorted(goals, key=lambda i: self.dist(self.pos[i], goals[i])):
            if self.assign[i] in ready and self.pos[i] not in self.danger:
                self.actions[i] = GRAB
                self.reserved.add(self.pos[i])
            else:
                self.go(i, goals[i])
        return np.array(self.actions, dtype=np.int64)

    def idle_options(self, i: int, body_cells: set[Cell]) -> list[tuple[Any, int]]:
        """Stay unless on or next to a dock or a carried body; then step away."""
        opts: list[tuple[Any, int]] = []
        for a in range(5):
            nxt = self.shift(self.pos[i], a)
            if self.valid(nxt):
                in_way = max(0, 2 - self.dock_dist(nxt)) + sum(self.dist(nxt, c) <= 1 for c in body_cells)
                opts.append(((in_way, self.risk(nxt), int(a != NOOP)), a))
        return opts

    def risk(self, c: Cell) -> int:
        """How many debris will be at ``c`` in 2 or 3 steps (a debris lane to leave)."""
        return sum(c == x for x in self.later)

    def step_options(self, i: int, goal: Cell) -> list[tuple[Any, int]]:
        here = self.pos[i]
        opts: list[tuple[Any, int]] = [((self.dist(here, goal), self.risk(here), 0), NOOP)]
        for a in range(1, 5):
            nxt = self.shift(here, a)
            if self.valid(nxt):
                opts.append(((self.dist(nxt, goal), self.risk(nxt), 1), a))
        return opts

    def go(self, i: int, goal: Cell) -> None:
        self.choose([i], self.step_options(i, goal))

    def carry(self, m: int, carriers: list[int]) -> None:
        body = [self.pos[i] for i in carriers] + [self.mpos[m]]
        agents = [self.pos[i] for i in carriers]
        here = (min(self.dock_dist(c) for c in body), sum(self.risk(c) for c in agents), 0)
        opts: list[tuple[Any, int]] = [(here, NOOP)]
        for a in range(1, 5):
            moved = [self.shift(c, a) for c in body]
            if all(self.valid(c) for c in moved):
                key = (min(self.dock_dist(c) for c in moved), sum(self.risk(self.shift(c, a)) for c in agents), 1)
                opts.append((key, a))
        self.choose(carriers, opts, (self.mpos[m],))

    def update_assignment(self) -> None:
        idle = [i for i in range(self.n) if self.carrying[i] < 0 and not self.disabled[i]]
        kept = {i: m for i, m in self.assign.items() if i in idle and self.free[m]}
        self.assign.clear()
        self.assign.update(kept)  # the policy's dict: assignments persist across steps
        need = {m: self.weight[m] for m in range(self.m) if self.free[m]}
        for m in self.assign.values():
            need[m] -= 1
        pairs = sorted((self.dist(self.pos[i], self.mpos[m]), i, m) for i in idle if i not in self.assign for m in need)
        for _, i, m in pairs:
            if i not in self.assign and need[m] > 0:
                self.assign[i] = m
                need[m] -= 1

    def grab_cells(self, m: int) -> list[Cell]:
        """Cells from which GRAB picks module ``m``: in range, and no lower-index free module in range."""
        r, c = self.mpos[m]
        cells = [(r, c)] + [(r + dr, c + dc) for dr, dc in _DELTAS[1:]]
        return [x for x in cells if self.valid(x) and not any(self.free[k] and self.in_range(x, k) for k in range(m))]

    def grab_goals(self) -> dict[int, Cell]:
        """A distinct grab cell per assigned agent (its current cell when already good)."""
        goals: dict[int, Cell] = {}
        for m in sorted(set(self.assign.values())):
            team = sorted(
                (i for i, k in self.assign.items() if k == m), key=lambda i: self.dist(self.pos[i], self.mpos[m])
            )
            cells = self.grab_cells(m) or [self.mpos[m]]
            taken: set[Cell] = set()
            for i in team:
                free_cells = [x for x in cells if x not in taken and (x == self.pos[i] or x not in self.occupied)]
                if not free_cells:
                    free_cells = [x for x in cells if x not in taken] or cells
                goal = min(free_cells, key=lambda x: (self.dist(self.pos[i], x), x))
                goals[i] = goal
                taken.add(goal)
        return goals

    def ready_modules(self, goals: dict[int, Cell]) -> set[int]:
        """Modules whose assigned agents all stand on their grab cells in enough numbers."""
        ready = set()
        for m in set(self.assign.values()):
            team = [i for i, k in self.assign.items() if k == m]
            here = [i for i in team if self.pos[i] == goals[i] and self.pos[i] not in self.danger]
            if len(here) >= self.weight[m] and len(here) == len(team):
                ready.add(m)
        return ready
