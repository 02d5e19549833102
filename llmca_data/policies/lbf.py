"""Scripted expert for Level-Based Foraging.

Input: an LBF env (``llmca_data.envs.lbf.LBFEnv`` or anything with the same ``describe()``)
and a numpy Generator. Output: a joint action ``int64[N]`` (0 NONE, 1 NORTH, 2 SOUTH,
3 WEST, 4 EAST, 5 LOAD), legal under ``env.action_mask()``.

Plan, recomputed every step from ``env.describe()``:

1. Teams. Greedy over (food, team) options, cheapest first: for each remaining food the
   unassigned agents sorted by path length to it, and the shortest prefix of them whose
   summed level reaches the food's level (one agent for food it can lift alone; several for
   heavy food, and all of them in ``-coop``). Cost = the slowest member's path length.
   Agents left over help at the nearest assigned food.
2. Moves. Each member walks (shortest path, other agents and food are walls) to its own
   free cell next to the food, and LOADs once the members standing next to it have enough
   summed level; until then it waits. Agents move in index order and never step into a
   cell another agent already claimed this step, so LBF's "same target cell → nobody
   moves" rule does not stall them. An agent that cannot move for a few steps moves at
   random to break deadlocks.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from llmca_data.envs.base import IntArray, MultiAgentEnv

NONE, NORTH, SOUTH, WEST, EAST, LOAD = range(6)
_MOVES: tuple[tuple[int, int, int], ...] = ((-1, 0, NORTH), (1, 0, SOUTH), (0, -1, WEST), (0, 1, EAST))
_UNREACHABLE = 10**6
_STUCK_STEPS = 3


def _bfs(rows: int, cols: int, start: tuple[int, int], walls: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Path lengths from ``start`` to every reachable cell (``start`` itself is never a wall)."""
    dist = {start: 0}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc, _ in _MOVES:
            nxt = (r + dr, c + dc)
            if 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and nxt not in dist and nxt not in walls:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    return dist


def _first_move(
    rows: int, cols: int, start: tuple[int, int], goals: set[tuple[int, int]], walls: set[tuple[int, int]]
) -> int | None:
    """The first move of a shortest path from ``start`` to any of ``goals``; None if none."""
    first: dict[tuple[int, int], int] = {start: NONE}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell in goals:
            return first[cell]
        for dr, dc, action in _MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and nxt not in first and nxt not in walls:
                first[nxt] = action if cell == start else first[cell]
                queue.append(nxt)
    return None


class LBFScripted:
    """Greedy team-forming forager with shortest-path moves (policy id ``lbf-scripted``)."""

    policy_id = "lbf-scripted"

    def __init__(self) -> None:
        self._last_pos: list[tuple[int, int]] = []
        self._stuck: list[int] = []

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self._last_pos = []
        self._stuck = []

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        desc = env.describe()
        rows, cols = desc["grid"]
        pos = [tuple(a["pos"]) for a in desc["agents"]]
        levels = [int(a["level"]) for a in desc["agents"]]
        foods = [(tuple(f["pos"]), int(f["level"])) for f in desc["food"] if f["pos"] is not None]
        n = len(pos)
        if len(self._stuck) != n:
            self._last_pos, self._stuck = list(pos), [0] * n
        food_cells = {cell for cell, _ in foods}
        # Path lengths ignoring agents (they move); food cells are walls.
        dists = [_bfs(rows, cols, p, food_cells) for p in pos]
        reach = [[self._reach(dists[i], cell, rows, cols) for cell, _ in foods] for i in range(n)]  # [N][F]
        team_of = self._assign(foods, levels, reach)
        actions = np.zeros(n, np.int64)  # [N]
        claimed: set[tuple[int, int]] = set()
        for i in range(n):
            f = team_of[i]
            if f < 0:
                claimed.add(pos[i])
                continue
            cell, level = foods[f]
            if self._adjacent(pos[i], cell):
                team_here = sum(levels[j] for j in range(n) if team_of[j] == f and self._adjacent(pos[j], cell))
                actions[i] = LOAD if team_here >= level else NONE
                claimed.add(pos[i])
                continue
            # Free cells next to the food, minus the ones teammates already stand on or head for.
            others = {pos[j] for j in range(n) if j != i}
            goals = {c for c in self._neighbours(cell, rows, cols) if c not in food_cells and c not in others}
            move = _first_move(rows, cols, pos[i], goals, food_cells | others | claimed) if goals else None
            if move is None:
                move = NONE
            target = self._target(pos[i], move)
            if target in claimed:
                move, target = NONE, pos[i]
            actions[i] = move
            claimed.add(target)
        self._unstick(actions, pos, env, rng)
        return actions

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _neighbours(cell: tuple[int, int], rows: int, cols: int) -> list[tuple[int, int]]:
        r, c = cell
        return [(r + dr, c + dc) for dr, dc, _ in _MOVES if 0 <= r + dr < rows and 0 <= c + dc < cols]

    @staticmethod
    def _adjacent(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1

    @classmethod
    def _reach(cls, dist: dict[tuple[int, int], int], food: tuple[int, int], rows: int, cols: int) -> int:
        """Steps until standing next to ``food``."""
        return min((dist.get(c, _UNREACHABLE) for c in cls._neighbours(food, rows, cols)), default=_UNREACHABLE)

    @staticmethod
    def _assign(foods: list[tuple[Any, int]], levels: list[int], reach: list[list[int]]) -> list[int]:
        """Food index per agent (-1: nothing to do), cheapest feasible team first."""
        n = len(levels)
        team_of = [-1] * n
        free = set(range(n))
        open_food = set(range(len(foods)))
        while free and open_food:
            best: tuple[int, int, int, list[int]] | None = None  # (cost, size, food, members)
            for f in sorted(open_food):
                members: list[int] = []
                total = 0
                for i in sorted(free, key=lambda i: (reach[i][f], i)):
                    if reach[i][f] >= _UNREACHABLE:
                        break
                    members.append(i)
                    total += levels[i]
                    if total >= foods[f][1]:
                        break
                if total < foods[f][1]:
                    continue
                option = (max(reach[i][f] for i in members), len(members), f, members)
                if best is None or option[:3] < best[:3]:
                    best = option
            if best is None:
                break
            for i in best[3]:
                team_of[i] = best[2]
                free.discard(i)
            open_food.discard(best[2])
        assigned = {f for f in team_of if f >= 0}
        for i in free:  # leftovers help at the nearest food someone is working on (or any food)
            pool = assigned or set(range(len(foods)))
            if pool:
                team_of[i] = min(pool, key=lambda f: (reach[i][f], f))
        return team_of

    @staticmethod
    def _target(p: tuple[int, int], move: int) -> tuple[int, int]:
        for dr, dc, action in _MOVES:
            if action == move:
                return (p[0] + dr, p[1] + dc)
        return p

    def _unstick(
        self, actions: IntArray, pos: list[tuple[Any, ...]], env: MultiAgentEnv, rng: np.random.Generator
    ) -> None:
        """Random legal move for an agent that wanted to move but has not for a few steps."""
        mask = env.action_mask()  # [N, A]
        for i, p in enumerate(pos):
            wants_move = actions[i] not in (NONE, LOAD)
            self._stuck[i] = self._stuck[i] + 1 if (p == self._last_pos[i] and wants_move) else 0
            if self._stuck[i] > _STUCK_STEPS:
                legal = [a for a in (NORTH, SOUTH, WEST, EAST) if mask[i, a]]
                if legal:
                    actions[i] = rng.choice(legal)
                self._stuck[i] = 0
            if not mask[i, actions[i]]:
                actions[i] = NONE
        self._last_pos = [tuple(p) for p in pos]
