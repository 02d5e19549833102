"""Static Spaceworld tables: every rule that depends only on the grid, precomputed once.

Input: the grid size and the entity counts of a ``SpaceworldConfig``. Output: a ``Layout``
of numpy lookup tables indexed by flat cell id ``cell = row * width + col`` (moves, debris
bounces, docks, grab range, debris visibility), the observation and state feature names,
and ``start_cells``, the seeded placement used by ``VectorSpaceworld.reset``.

The placement uses a splitmix64 hash of ``(seed, index)`` written in numpy integer
arithmetic instead of a numpy ``Generator``: it is vectorised over seeds, needs no Python
loop over environments, and gives the same episode on every numpy version and platform,
so a stored episode can be replayed from its seed forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ACTION_NAMES: tuple[str, ...] = ("NOOP", "UP", "DOWN", "LEFT", "RIGHT", "GRAB")
NOOP, UP, DOWN, LEFT, RIGHT, GRAB = range(6)
DIR_VEC = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
"""``(drow, dcol)`` of actions 0..4; debris directions use the same codes 1..4."""
OPPOSITE = np.array([0, DOWN, UP, RIGHT, LEFT], dtype=np.int64)

_U64 = np.uint64
_MASK_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MUL1 = _U64(0xBF58476D1CE4E5B9)
_MUL2 = _U64(0x94D049BB133111EB)


def splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finaliser, elementwise (uint64 arithmetic wraps modulo 2**64)."""
    z = x + _MASK_GOLDEN
    z = (z ^ (z >> _U64(30))) * _MUL1
    z = (z ^ (z >> _U64(27))) * _MUL2
    return z ^ (z >> _U64(31))


def hash_draws(seeds: npt.ArrayLike, n: int) -> npt.NDArray[np.uint64]:
    """``n`` pseudo-random uint64 per seed: ``[B, n]``, a pure function of ``(seed, j)``."""
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)  # [B]
    base = splitmix64(s)[:, None]  # [B, 1]
    return splitmix64(base + np.arange(1, n + 1, dtype=np.uint64)[None, :] * _MASK_GOLDEN)  # [B, n]


@dataclass(frozen=True, eq=False)
class Layout:
    """Lookup tables of one grid; ``C = width * height`` cells, row-major."""

    width: int
    height: int
    station: int
    """Flat cell of the station (impassable centre cell)."""
    docks: npt.NDArray[np.int64]  # [4] cells above, below, left, right of the station
    move_to: npt.NDArray[np.int64]  # [C, 6] cell reached by action a (same cell when blocked)
    movable: npt.NDArray[np.bool_]  # [C, 6] action a changes the cell (False for NOOP and GRAB)
    movable_or_stay: npt.NDArray[np.bool_]  # [C, 6] like movable but True for NOOP: body checks
    deb_cell: npt.NDArray[np.int64]  # [C, 5] debris cell after one step in direction d
    deb_dir: npt.NDArray[np.int64]  # [C, 5] debris direction after that step (bounced)
    is_dock: npt.NDArray[np.bool_]  # [C]
    pos_norm: npt.NDArray[np.float32]  # [C, 2] row / (H - 1), col / (W - 1)
    dock_rel: npt.NDArray[np.float32]  # [C, 2] normalised offset to the nearest dock
    near: npt.NDArray[np.bool_]  # [C, C] Manhattan distance <= 1 (grab range)
    visible: npt.NDArray[np.bool_]  # [C, C] Chebyshev distance <= view_radius
    start: npt.NDArray[np.int64]  # [S] cells where entities may start (not station, not dock)

    @property
    def n_cells(self) -> int:
        return self.width * self.height

    def rc(self, cell: int) -> tuple[int, int]:
        """``(row, col)`` of a flat cell."""
        return divmod(int(cell), self.width)


def build_layout(width: int, height: int, view_radius: int) -> Layout:
    """Precompute every table of a ``width`` × ``height`` grid."""
    n = width * height
    rows, cols = np.divmod(np.arange(n, dtype=np.int64), width)  # [C], [C]
    station = (height // 2) * width + width // 2
    docks = np.array([station - width, station + width, station - 1, station + 1], dtype=np.int64)

    # Moves: blocked by the walls and the station.
    tr = rows[:, None] + DIR_VEC[None, :, 0]  # [C, 5]
    tc = cols[:, None] + DIR_VEC[None, :, 1]  # [C, 5]
    inside = (tr >= 0) & (tr < height) & (tc >= 0) & (tc < width)
    target = np.where(inside, tr * width + tc, -1)
    ok = inside & (target != station)  # [C, 5]
    move5 = np.where(ok, target, np.arange(n)[:, None])  # [C, 5]
    move_to = np.concatenate([move5, np.arange(n)[:, None]], axis=1)  # [C, 6]; GRAB stays
    movable = move_to != np.arange(n)[:, None]  # [C, 6]
    movable_or_stay = movable.copy()
    movable_or_stay[:, NOOP] = True

    # Debris: one step along its direction; blocked -> reverse and step back instead.
    back = move5[np.arange(n)[:, None], OPPOSITE[None, :]]  # [C, 5]
    deb_cell = np.where(ok, move5, back)
    deb_dir = np.where(ok, np.arange(5)[None, :], OPPOSITE[None, :])
    deb_dir[:, 0] = 0

    is_dock = np.zeros(n, dtype=np.bool_)
    is_dock[docks] = True
    scale = np.array([max(height - 1, 1), max(width - 1, 1)], dtype=np.float64)
    pos_norm = (np.stack([rows, cols], axis=1) / scale).astype(np.float32)
    drow = rows[docks][None, :] - rows[:, None]  # [C, 4]
    dcol = cols[docks][None, :] - cols[:, None]  # [C, 4]
    nearest = np.argmin(np.abs(drow) + np.abs(dcol), axis=1)  # [C]; ties -> first dock
    idx = np.arange(n)
    dock_rel = (np.stack([drow[idx, nearest], dcol[idx, nearest]], axis=1) / scale).astype(np.float32)

    adr = np.abs(rows[:, None] - rows[None, :])  # [C, C]
    adc = np.abs(cols[:, None] - cols[None, :])  # [C, C]
    near = adr + adc <= 1
    visible = np.maximum(adr, adc) <= view_radius
    start = np.setdiff1d(idx, np.concatenate([[station], docks]))
    return Layout(
        width=width,
        height=height,
        station=int(station),
        docks=docks,
        move_to=move_to,
        movable=movable,
        movable_or_stay=movable_or_stay,
        deb_cell=deb_cell,
        deb_dir=deb_dir,
        is_dock=is_dock,
        pos_norm=pos_norm,
        dock_rel=dock_rel,
        near=near,
        visible=visible,
        start=start,
    )


def start_cells(
    layout: Layout, seeds: npt.ArrayLike, n_entities: int, n_debris: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Seeded placement: distinct start cells ``[B, n_entities]`` and debris directions ``[B, n_debris]``.

    Cells are the first ``n_entities`` of a hash-keyed permutation of ``layout.start``;
    directions are ``1 + draw % 4`` from further draws of the same seed.
    """
    s = layout.start.size
    draws = hash_draws(seeds, s + n_debris)  # [B, S + D]
    order = np.argsort(draws[:, :s], axis=1, kind="stable")[:, :n_entities]  # [B, E]
    cells = layout.start[order]  # [B, E]
    dirs = 1 + (draws[:, s:] % np.uint64(4)).astype(np.int64)  # [B, D]
    return cells, dirs


def obs_feature_names(n_agents: int, n_modules: int, n_debris: int) -> tuple[str, ...]:
    """Names of the ``obs_dim`` columns of one agent's observation, in order."""
    names = ["t_frac", "self.row", "self.col", "self.carrying", "self.disabled"]
    for k in range(1, n_agents):
        names += [f"other_{k}.drow", f"other_{k}.dcol", f"other_{k}.carrying", f"other_{k}.disabled"]
    for m in range(n_modules):
        names += [
            f"module_{m}.drow",
            f"module_{m}.dcol",
            f"module_{m}.heavy",
            f"module_{m}.free",
            f"module_{m}.carried_by_self",
            f"module_{m}.carried_by_other",
            f"module_{m}.delivered",
        ]
    names += ["dock.drow", "dock.dcol"]
    for d in range(n_debris):
        names += [f"debris_{d}.visible", f"debris_{d}.drow", f"debris_{d}.dcol", f"debris_{d}.vrow", f"debris_{d}.vcol"]
    return tuple(names)


def state_feature_names(n_agents: int, n_modules: int, n_debris: int) -> tuple[str, ...]:
    """Names of the ``state_dim`` columns of the global state, in order."""
    names = ["t_frac"]
    for i in range(n_agents):
        names += [f"agent_{i}.row", f"agent_{i}.col", f"agent_{i}.carrying", f"agent_{i}.disabled"]
    for m in range(n_modules):
        names += [
            f"module_{m}.row",
            f"module_{m}.col",
            f"module_{m}.heavy",
            f"module_{m}.free",
            f"module_{m}.carried",
            f"module_{m}.delivered",
        ]
        names += [f"module_{m}.carried_by_agent_{i}" for i in range(n_agents)]
    for d in range(n_debris):
        names += [f"debris_{d}.row", f"debris_{d}.col", f"debris_{d}.vrow", f"debris_{d}.vcol"]
    return tuple(names)
