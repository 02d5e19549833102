"""Robotic Warehouse (``rware==2.0.0``) behind the ``MultiAgentEnv`` protocol.

Input: an env id ``rware-<size>-<N>ag`` plus keyword arguments for ``rware.warehouse.Warehouse``
(``max_steps`` is ours: the time limit, default 500), then joint actions ``int[N]``
(0 NOOP, 1 FORWARD, 2 LEFT, 3 RIGHT, 4 TOGGLE_LOAD).
Output: rware's flattened per-agent observations ``float32[N, 8 + 7·(2r+1)²]``, rewards
(rware's own reward type, default individual: +1 to the delivering agent), action masks,
a global state, an LLM-friendly ``describe()`` and exact snapshots.

Coordinates: rware stores ``x`` = column and ``y`` = row; ``obs`` keeps rware's ``(x, y)``,
while ``state()`` and ``describe()`` use ``(row, col)``. RWARE has no terminal state: the
wrapper builds rware with ``max_steps=None`` and ends every episode with ``truncated=True``
after ``spec.max_steps`` steps (``terminated`` is always False).

Caveat: rware numbers agents and shelves with the class-level counters ``Agent.counter`` and
``Shelf.counter``, reset to 0 in ``Warehouse.reset``. Resetting two rware envs from two threads
at once corrupts the ids; ``reset`` checks them and raises. Snapshots keep the same objects and
restore their attributes, so they never touch the counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmca_data.envs.base import BoolArray, EnvSpec, FloatArray, Step, WrappedEnv
from llmca_data.envs.ids import EnvId

ACTION_NAMES: tuple[str, ...] = ("NOOP", "FORWARD", "LEFT", "RIGHT", "TOGGLE_LOAD")
DIR_NAMES: tuple[str, ...] = ("up", "down", "left", "right")
"""Index = rware ``Direction`` value."""
DEFAULT_MAX_STEPS = 500
_DIR_DELTA: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""(d_row, d_col) of a FORWARD move per direction index."""


@dataclass(frozen=True)
class _Snapshot:
    """Everything ``Warehouse.step`` reads or writes, plus the wrapper's own fields."""

    agents: tuple[tuple[Any, ...], ...]  # (x, y, prev_x, prev_y, dir, req_action, canceled, delivered, shelf idx)
    shelves: tuple[tuple[int, int], ...]  # (x, y) per shelf
    grid: npt.NDArray[np.int32]  # [2, rows, cols], private copy
    requests: tuple[int, ...]  # shelf indices in request-queue order
    cur_steps: int
    cur_inactive_steps: int
    rng_state: dict[str, Any]
    obs: FloatArray  # [N, obs_dim], private copy
    t: int
    deliveries: int
    done: bool


class RwareEnv(WrappedEnv):
    """Robotic Warehouse with a proper 500-step truncation.

    Args:
        env_id: a parsed ``EnvId`` (or its string) of the ``rware`` family.
        max_steps: the time limit (``spec.max_steps``), 500 by default.
        fast_obs: build rware's flattened observations for all agents at once with numpy
            instead of rware's per-agent loop. Identical vectors (a test compares them);
            not recorded in ``spec.kwargs``.
        **kwargs: forwarded to ``gym.make`` and so to ``Warehouse`` (e.g. ``reward_type``,
            ``request_queue_size``, ``sensor_range``); recorded in ``spec.kwargs``.

    Raises:
        ValueError: not an rware id, or kwargs that change the action or observation type
            (``msg_bits``, ``observation_type``), which this wrapper does not describe.
    """

    def __init__(
        self, env_id: EnvId | str, *, max_steps: int = DEFAULT_MAX_STEPS, fast_obs: bool = True, **kwargs: Any
    ) -> None:
        parsed = EnvId.parse(env_id) if isinstance(env_id, str) else env_id
        if parsed.family != "rware" or parsed.gym_id is None:
            raise ValueError(f"RwareEnv needs an rware-... id, got {parsed}")
        if kwargs.get("msg_bits", 0) or "observation_type" in kwargs:
            raise ValueError(f"{parsed}: msg_bits and observation_type are not supported; drop them")
        import gymnasium as gym
        import rware  # noqa: F401  (registers the rware-* ids)

        raw: Any = gym.make(parsed.gym_id, disable_env_checker=True, max_steps=None, **kwargs).unwrapped
        self._raw = raw
        self.env_id = str(parsed)
        self.n_agents: int = int(raw.n_agents)
        self.rows, self.cols = (int(v) for v in raw.grid_size)
        self._highway: BoolArray = raw.highways.astype(np.bool_)  # [rows, cols]
        self.n_shelves = int((~self._highway).sum())
        rng = range(-raw.sensor_range, raw.sensor_range + 1)
        obs_features = ["self.x", "self.y", "self.carrying", *(f"self.dir_{d}" for d in DIR_NAMES), "self.on_highway"]
        for dy in rng:
            for dx in rng:
                cell = f"cell[{dy:+d},{dx:+d}]"
                obs_features += [f"{cell}.has_agent", *(f"{cell}.agent_dir_{d}" for d in DIR_NAMES)]
                obs_features += [f"{cell}.has_shelf", f"{cell}.shelf_requested"]
        state_features: list[str] = []
        for i in range(self.n_agents):
            state_features += [f"agent_{i}.{a}" for a in ("row", "col", *(f"dir_{d}" for d in DIR_NAMES), "carrying")]
        for j in range(self.n_shelves):
            state_features += [f"shelf_{j}.{a}" for a in ("row", "col", "requested")]
        state_features.append("t_frac")
        spec_kwargs = dict(kwargs)
        if max_steps != DEFAULT_MAX_STEPS:
            spec_kwargs["max_steps"] = max_steps
        self.spec = EnvSpec(
            env_id=self.env_id,
            n_agents=self.n_agents,
            n_actions=len(ACTION_NAMES),
            obs_dim=len(obs_features),
            state_dim=len(state_features),
            max_steps=int(max_steps),
            action_names=ACTION_NAMES,
            obs_features=tuple(obs_features),
            state_features=tuple(state_features),
            noop_action=0,
            kwargs=spec_kwargs,
        )
        if int(raw.observation_space[0].shape[0]) != self.spec.obs_dim:
            raise ValueError(f"{parsed}: rware obs has {raw.observation_space[0].shape[0]} features")
        self.goals: tuple[tuple[int, int], ...] = tuple((int(y), int(x)) for x, y in raw.goals)  # (row, col)
        self.t = 0
        self.deliveries = 0
        self._done = True
        self._obs: FloatArray = np.zeros((self.n_agents, self.spec.obs_dim), np.float32)  # [N, obs_dim]
        self._mask: BoolArray | None = None
        width = 2 * int(raw.sensor_range) + 1
        win_r, win_c = np.meshgrid(np.arange(width), np.arange(width), indexing="ij")
        self._win_dy, self._win_dx = win_r.reshape(-1), win_c.reshape(-1)  # [W], offsets into the padded grid
        self._pending: FloatArray | None = None
        self._padded = np.zeros((2, self.rows + width - 1, self.cols + width - 1), np.int32)  # [2, rows+2r, cols+2r]
        self.fast_obs = fast_obs
        if fast_obs:
            # An instance attribute shadows the class method, so rware's own step/reset call it.
            raw._make_obs = self._make_obs_fast

    # ------------------------------------------------------------------ protocol

    def highway_mask(self) -> BoolArray:
        """``bool[rows, cols]``: cells where a shelf can never be put down (corridors, goals)."""
        return self._highway.copy()

    def reset(self, seed: int) -> FloatArray:
        raw = self._raw
        nobs, _ = raw.reset(seed=int(seed))
        if [a.id for a in raw.agents] != list(range(1, self.n_agents + 1)) or raw.shelfs[-1].id != len(raw.shelfs):
            raise RuntimeError(
                f"{self.env_id}: rware ids are corrupt (its class-level counters were changed during reset); "
                "do not reset rware envs from several threads"
            )
        self.t = 0
        self.deliveries = 0
        self._done = False
        self._obs = self._take_obs(nobs)  # [N, obs_dim]
        self._mask = None
        return self._obs

    def step(self, actions: npt.ArrayLike) -> Step:
        nobs, rewards, done, _, _ = self._raw.step(self._checked_actions(actions))
        self.t += 1
        self._obs = self._take_obs(nobs)  # [N, obs_dim]
        self._mask = None
        # rware's own `done` can only come from max_inactivity_steps: a time limit as well.
        truncated = bool(done) or self.t >= self.spec.max_steps
        self._done = truncated
        reward = np.asarray(rewards, dtype=np.float32)  # [N]
        self.deliveries += int(np.count_nonzero(reward))
        # RWARE has no goal state: an episode counts as a success when it delivered at least once.
        info = {"deliveries": self.deliveries, "success": self.deliveries > 0}
        return Step(self._obs, reward, np.zeros(self.n_agents, np.float32), False, truncated, info)

    def action_mask(self) -> BoolArray:
        if self._mask is None:
            raw = self._raw
            shelf_layer, agent_layer = raw.grid[1], raw.grid[0]  # [rows, cols] ids, 0 = empty
            mask = np.zeros((self.n_agents, len(ACTION_NAMES)), np.bool_)  # [N, A]
            mask[:, [0, 2, 3]] = True
            for i, a in enumerate(raw.agents):
                dr, dc = _DIR_DELTA[a.dir.value]
                r, c = a.y + dr, a.x + dc
                inside = 0 <= r < self.rows and 0 <= c < self.cols
                if a.carrying_shelf is None:
                    mask[i, 1] = inside
                    mask[i, 4] = shelf_layer[a.y, a.x] > 0
                else:
                    # rware cancels a loaded move onto a standing shelf (one not carried by an agent there).
                    blocked = inside and shelf_layer[r, c] > 0
                    if blocked and agent_layer[r, c] and raw.agents[agent_layer[r, c] - 1].carrying_shelf is not None:
                        blocked = False
                    mask[i, 1] = inside and not blocked
                    mask[i, 4] = not self._highway[a.y, a.x]
            mask.flags.writeable = False
            self._mask = mask
        return self._mask

    def state(self) -> FloatArray:
        raw = self._raw
        n7 = 7 * self.n_agents
        s = np.zeros(self.spec.state_dim, np.float32)  # [state_dim]
        agents = np.zeros((self.n_agents, 7), np.float32)  # [N, 7]
        for i, a in enumerate(raw.agents):
            agents[i, 0], agents[i, 1] = a.y, a.x
            agents[i, 2 + a.dir.value] = 1.0
            agents[i, 6] = a.carrying_shelf is not None
        s[:n7] = agents.reshape(-1)
        shelves = s[n7:-1].reshape(self.n_shelves, 3)  # [S, 3] view
        shelves[:, :2] = [(sh.y, sh.x) for sh in raw.shelfs]
        shelves[[sh.id - 1 for sh in raw.request_queue], 2] = 1.0
        s[-1] = self.t / self.spec.max_steps
        return s

    def describe(self) -> dict[str, Any]:
        raw = self._raw
        requested = {sh.id for sh in raw.request_queue}
        return {
            "env_id": self.env_id,
            "t": self.t,
            "grid": [self.rows, self.cols],
            "agents": [
                {
                    "id": f"agent_{i}",
                    "pos": [int(a.y), int(a.x)],
                    "dir": DIR_NAMES[a.dir.value],
                    "carrying": None if a.carrying_shelf is None else f"shelf_{a.carrying_shelf.id - 1}",
                }
                for i, a in enumerate(raw.agents)
            ],
            "shelves": [
                {"id": f"shelf_{sh.id - 1}", "pos": [int(sh.y), int(sh.x)], "requested": sh.id in requested}
                for sh in raw.shelfs
            ],
            "goals": [list(g) for g in self.goals],
        }

    def snapshot(self) -> _Snapshot:
        raw = self._raw
        if not raw.agents:
            raise RuntimeError(f"{self.env_id}: call reset(seed) before snapshot()")
        return _Snapshot(
            agents=tuple(
                (
                    a.x,
                    a.y,
                    a.prev_x,
                    a.prev_y,
                    a.dir,
                    a.req_action,
                    a.canceled_action,
                    a.has_delivered,
                    -1 if a.carrying_shelf is None else a.carrying_shelf.id - 1,
                )
                for a in raw.agents
            ),
            shelves=tuple((sh.x, sh.y) for sh in raw.shelfs),
            grid=raw.grid.copy(),
            requests=tuple(sh.id - 1 for sh in raw.request_queue),
            cur_steps=raw._cur_steps,
            cur_inactive_steps=raw._cur_inactive_steps,
            rng_state=raw.np_random.bit_generator.state,
            obs=self._obs.copy(),
            t=self.t,
            deliveries=self.deliveries,
            done=self._done,
        )

    def rng_state(self) -> dict[str, Any]:
        """The RNG state rware draws new requests from (a copy); counterfactual branches share it."""
        state: dict[str, Any] = self._raw.np_random.bit_generator.state
        return state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._raw.np_random.bit_generator.state = state

    def restore(self, snap: _Snapshot) -> None:
        raw = self._raw
        if not raw.agents:
            raw.reset(seed=0)  # creates the Agent and Shelf objects the snapshot is written onto
        shelfs = raw.shelfs
        for sh, (x, y) in zip(shelfs, snap.shelves, strict=True):
            sh.x, sh.y = x, y
        for a, (x, y, px, py, d, req, canceled, delivered, carried) in zip(raw.agents, snap.agents, strict=True):
            a.x, a.y, a.prev_x, a.prev_y, a.dir = x, y, px, py, d
            a.req_action, a.canceled_action, a.has_delivered = req, canceled, delivered
            a.carrying_shelf = None if carried < 0 else shelfs[carried]
        np.copyto(raw.grid, snap.grid)
        raw.request_queue = [shelfs[j] for j in snap.requests]
        raw._cur_steps = snap.cur_steps
        raw._cur_inactive_steps = snap.cur_inactive_steps
        raw.np_random.bit_generator.state = snap.rng_state
        self._obs = snap.obs.copy()
        self.t = snap.t
        self.deliveries = snap.deliveries
        self._done = snap.done
        self._mask = None

    # ------------------------------------------------------------------ fast observations

    def _take_obs(self, nobs: tuple[FloatArray, ...]) -> FloatArray:
        if self.fast_obs and self._pending is not None:
            obs, self._pending = self._pending, None
            return obs
        return np.stack(nobs)

    def _make_obs_fast(self, agent: Any) -> FloatArray:
        """rware's ``_make_obs`` (flattened); all agents are built when the first one is asked."""
        raw = self._raw
        if agent is raw.agents[0] or self._pending is None:
            self._pending = self._all_obs()
        row: FloatArray = self._pending[agent.id - 1]
        return row

    def _all_obs(self) -> FloatArray:
        """rware's flattened observation of every agent, ``[N, obs_dim]``."""
        raw = self._raw
        r = raw.sensor_range
        padded = self._padded  # [2, rows+2r, cols+2r], zero border
        padded[:, r : r + self.rows, r : r + self.cols] = raw.grid
        agents = raw.agents
        xs = np.array([a.x for a in agents], np.int64)  # [N]
        ys = np.array([a.y for a in agents], np.int64)  # [N]
        dirs = np.array([a.dir.value for a in agents], np.int64)  # [N]
        rr, cc = ys[:, None] + self._win_dy, xs[:, None] + self._win_dx  # [N, W]
        agent_ids, shelf_ids = padded[0][rr, cc], padded[1][rr, cc]  # [N, W]
        dir_table = np.zeros((len(agents) + 1, 4), np.float32)  # [N+1, 4]; no agent -> "up"
        dir_table[0, 0] = 1.0
        dir_table[np.arange(1, len(agents) + 1), dirs] = 1.0
        requested = np.zeros(len(raw.shelfs) + 1, np.float32)  # [S+1]
        requested[[sh.id for sh in raw.request_queue]] = 1.0
        n, w = agent_ids.shape
        cells = np.empty((n, w, 7), np.float32)  # [N, W, 7]
        cells[:, :, 0] = agent_ids > 0
        cells[:, :, 1:5] = dir_table[agent_ids]
        cells[:, :, 5] = shelf_ids > 0
        cells[:, :, 6] = requested[shelf_ids]
        obs = np.empty((n, self.spec.obs_dim), np.float32)  # [N, obs_dim]
        if raw.normalised_coordinates:
            obs[:, 0], obs[:, 1] = xs / (raw.grid_size[1] - 1), ys / (raw.grid_size[0] - 1)
        else:
            obs[:, 0], obs[:, 1] = xs, ys
        obs[:, 2] = [a.carrying_shelf is not None for a in agents]
        obs[:, 3:7] = dir_table[1:]
        obs[:, 7] = raw.highways[ys, xs]
        obs[:, 8:] = cells.reshape(n, -1)
        return obs
