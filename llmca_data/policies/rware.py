"""Scripted expert for the Robotic Warehouse.

Input: an RWARE env (``llmca_data.envs.rware.RwareEnv`` or anything with the same
``describe()``; ``highway_mask()`` is used when present) and a numpy Generator.
Output: a joint action ``int64[N]`` (0 NOOP, 1 FORWARD, 2 LEFT, 3 RIGHT, 4 TOGGLE_LOAD),
legal under ``env.action_mask()``.

Each agent runs a three-phase cycle, re-derived every step from the env so random
(epsilon) actions never confuse it:

* fetch: not carrying. Keep (or pick, nearest first) a requested shelf that no other agent
  targets or carries, drive to it (unloaded robots pass under shelves) and TOGGLE_LOAD.
* deliver: carrying a requested shelf. Drive to a goal cell; rware pays on arrival.
* return: carrying a shelf that is no longer requested. Reserve the nearest empty shelf cell
  (not a highway) and TOGGLE_LOAD there.

Navigation is a breadth-first search over (row, col, direction) with rware's motion model
(FORWARD one cell ahead, LEFT/RIGHT turn in place). Loaded robots treat standing shelves as
walls; other robots are walls too, and when no path avoids them the robot follows the path
that ignores them and waits when the next cell is taken. A robot that has wanted to move for
a few steps without moving takes a random legal move, which breaks deadlocks.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from llmca_data.envs.base import IntArray, MultiAgentEnv

NOOP, FORWARD, LEFT, RIGHT, TOGGLE = range(5)
_DIRS = ("up", "down", "left", "right")
_DELTA = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (d_row, d_col) per direction index
_TURN_LEFT = (2, 3, 1, 0)  # up->left, down->right, left->down, right->up (rware's wrap list)
_TURN_RIGHT = (3, 2, 0, 1)  # up->right, down->left, left->up, right->down
_STUCK_STEPS = 3

Cell = tuple[int, int]


class _Navigator:
    """BFS over (cell, direction) states of one warehouse grid."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols

    def plan(self, start: Cell, d0: int, goals: set[Cell], walls: set[Cell]) -> tuple[int, Cell] | None:
        """(first action, goal reached) of a shortest plan to any goal, None if unreachable.

        The first action is NOOP when ``start`` is already a goal.
        """
        if start in goals:
            return NOOP, start
        first: dict[tuple[int, int, int], int] = {(start[0], start[1], d0): NOOP}
        queue = deque([(start[0], start[1], d0)])
        while queue:
            state = queue.popleft()
            r, c, d = state
            dr, dc = _DELTA[d]
            nr, nc = r + dr, c + dc
            fwd_ok = 0 <= nr < self.rows and 0 <= nc < self.cols and (nr, nc) not in walls
            nxt = ((nr, nc, d, FORWARD),) if fwd_ok else ()
            for s2r, s2c, s2d, action in (*nxt, (r, c, _TURN_LEFT[d], LEFT), (r, c, _TURN_RIGHT[d], RIGHT)):
                key = (s2r, s2c, s2d)
                if key in first:
                    continue
                first[key] = action if state == (start[0], start[1], d0) else first[state]
                if (s2r, s2c) in goals:
                    return first[key], (s2r, s2c)
                queue.append(key)
        return None


class RwareScripted:
    """Fetch → deliver → return cycle with (row, col, direction) BFS (policy id ``rware-scripted``)."""

    policy_id = "rware-scripted"

    def __init__(self) -> None:
        self._highway: np.ndarray | None = None  # bool [rows, cols]
        self._shelf_cells: set[Cell] = set()  # cells where a shelf may stand
        self._target: dict[int, str] = {}  # agent -> shelf id being fetched
        self._drop: dict[int, Cell] = {}  # agent -> reserved cell to put its shelf back
        self._last: list[tuple[Cell, int]] = []
        self._stuck: list[int] = []

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        desc = env.describe()
        rows, cols = desc["grid"]
        highway_mask = getattr(env, "highway_mask", None)
        if callable(highway_mask):
            self._highway = np.asarray(highway_mask(), dtype=bool)
        else:  # rware puts a shelf on every non-highway cell at reset
            hw = np.ones((rows, cols), dtype=bool)
            for sh in desc["shelves"]:
                hw[sh["pos"][0], sh["pos"][1]] = False
            self._highway = hw
        self._shelf_cells = {(int(r), int(c)) for r, c in zip(*np.nonzero(~self._highway), strict=True)}
        self._target, self._drop, self._last, self._stuck = {}, {}, [], []

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        desc = env.describe()
        if self._highway is None:
            self.reset(env, rng)
        assert self._highway is not None
        rows, cols = desc["grid"]
        nav = _Navigator(rows, cols)
        agents = desc["agents"]
        n = len(agents)
        pos: list[Cell] = [(a["pos"][0], a["pos"][1]) for a in agents]
        dirs = [_DIRS.index(a["dir"]) for a in agents]
        carrying = [a["carrying"] for a in agents]
        shelf_pos: dict[str, Cell] = {s["id"]: (s["pos"][0], s["pos"][1]) for s in desc["shelves"]}
        requested = {s["id"] for s in desc["shelves"] if s["requested"]}
        carried = {c for c in carrying if c is not None}
        standing = {p for sid, p in shelf_pos.items() if sid not in carried}  # cells with a shelf on the floor
        goals = {(g[0], g[1]) for g in desc["goals"]}
        if len(self._stuck) != n:
            self._last, self._stuck = [(p, d) for p, d in zip(pos, dirs, strict=True)], [0] * n
        self._refresh_plans(n, carrying, requested, carried, standing)

        actions = np.zeros(n, np.int64)  # [N]
        has_dest = [False] * n
        claimed: set[Cell] = set()
        for i in range(n):
            others = {pos[j] for j in range(n) if j != i}
            dest, at_dest_action, idle = self._destination(i, carrying, requested, carried, standing, shelf_pos, goals)
            if idle:  # nothing to fetch: park under a shelf no one else wants, off the corridors
                targets = {shelf_pos[t] for j, t in self._target.items() if j != i}
                dest = self._shelf_cells - others - targets
            action = NOOP
            walls = standing if carrying[i] is not None else set()
            if dest:
                step = nav.plan(pos[i], dirs[i], dest, walls | others | claimed)
                if step is None:  # blocked by robots: follow the robot-free path and wait if needed
                    step = nav.plan(pos[i], dirs[i], dest, walls)
                if step is not None:
                    action, reached = step
                    has_dest[i] = reached != pos[i]
                    if reached == pos[i] and action == NOOP and not idle:
                        action = at_dest_action
                    if not idle:
                        self._commit(i, carrying[i], requested, reached, shelf_pos)
            if action == FORWARD:
                dr, dc = _DELTA[dirs[i]]
                ahead = (pos[i][0] + dr, pos[i][1] + dc)
                if ahead in claimed or ahead in others:
                    action = NOOP
                else:
                    claimed.add(ahead)
            actions[i] = action
            if action != FORWARD:
                claimed.add(pos[i])
        self._unstick(actions, pos, dirs, has_dest, env, rng)
        return actions

    def _destination(
        self,
        i: int,
        carrying: list[Any],
        requested: set[str],
        carried: set[str],
        standing: set[Cell],
        shelf_pos: dict[str, Cell],
        goals: set[Cell],
    ) -> tuple[set[Cell], int, bool]:
        """(cells to reach, action once there, idle) for agent ``i``."""
        if carrying[i] is None:
            if i in self._target:
                return {shelf_pos[self._target[i]]}, TOGGLE, False
            taken = {t for j, t in self._target.items() if j != i}
            options = {shelf_pos[s] for s in requested - carried - taken}
            return options, TOGGLE, not options
        if carrying[i] in requested:
            return goals, NOOP, False
        if i in self._drop:
            return {self._drop[i]}, TOGGLE, False
        reserved = {c for j, c in self._drop.items() if j != i}
        return self._shelf_cells - standing - reserved, TOGGLE, False

    # ------------------------------------------------------------------ helpers

    def _refresh_plans(
        self, n: int, carrying: list[Any], requested: set[str], carried: set[str], standing: set[Cell]
    ) -> None:
        """Drop targets and reservations that no longer make sense."""
        for i in list(self._target):
            sid = self._target[i]
            if i >= n or carrying[i] is not None or sid not in requested or sid in carried:
                del self._target[i]
        for i in list(self._drop):
            if i >= n or carrying[i] is None or carrying[i] in requested or self._drop[i] in standing:
                del self._drop[i]

    def _commit(self, i: int, carrying: Any, requested: set[str], reached: Cell, shelf_pos: dict[str, Cell]) -> None:
        """Remember the fetch target or drop cell the plan chose."""
        if carrying is None and i not in self._target:
            for sid, p in shelf_pos.items():
                if p == reached and sid in requested:
                    self._target[i] = sid
                    break
        elif carrying is not None and carrying not in requested:
            self._drop[i] = reached

    def _unstick(
        self,
        actions: IntArray,
        pos: list[Cell],
        dirs: list[int],
        has_dest: list[bool],
        env: MultiAgentEnv,
        rng: np.random.Generator,
    ) -> None:
        """Random legal move for a robot that wanted to move but has not for a few steps."""
        mask = env.action_mask()  # [N, A]
        for i in range(len(pos)):
            still = self._last[i] == (pos[i], dirs[i])
            self._stuck[i] = self._stuck[i] + 1 if (still and has_dest[i] and actions[i] in (NOOP, FORWARD)) else 0
            if self._stuck[i] > _STUCK_STEPS:
                legal = [a for a in (FORWARD, LEFT, RIGHT) if mask[i, a]]
                actions[i] = rng.choice(legal)
                self._stuck[i] = 0
            if not mask[i, actions[i]]:
                actions[i] = NOOP
            self._last[i] = (pos[i], dirs[i])
