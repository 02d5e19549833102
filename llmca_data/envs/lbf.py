"""Level-Based Foraging (``lbforaging==2.0.0``) behind the ``MultiAgentEnv`` protocol.

Input: an env id ``lbf-<W>x<H>-<P>p-<F>f[-coop]`` (full observation) plus keyword arguments
for ``lbforaging.foraging.ForagingEnv``, then joint actions ``int[N]``
(0 NONE, 1 NORTH, 2 SOUTH, 3 WEST, 4 EAST, 5 LOAD).
Output: LBF's own per-agent observation vectors ``float32[N, 3F + 3N]``, rewards, masks,
a global state with stable food slots, an LLM-friendly ``describe()`` and exact snapshots.

LBF's observation of agent ``i`` (read from ``ForagingEnv._make_gym_obs``): first ``F`` food
slots ``(row, col, level)`` holding the food *still on the field in row-major order*
(``(-1, -1, 0)`` when fewer remain), then ``self`` ``(row, col, level)``, then every other
agent in index order. With full observation the coordinates are absolute.

LBF reports its 50-step limit as ``terminated``; here an episode ends with
``terminated=True`` only when every food has been collected, otherwise ``truncated=True``.
The simulator is stepped through ``.unwrapped`` (no gym wrapper chain). Snapshots are
hand-written: the field, every player's position/level/score/reward/history, the step
counter, the game-over flag, the food total used to normalise rewards, the valid-action
table and the ``np_random`` bit-generator state (LBF's ``step`` draws no random numbers;
``reset`` does). That is every attribute ``step`` reads or writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmca_data.envs.base import BoolArray, EnvSpec, FloatArray, Step, WrappedEnv
from llmca_data.envs.ids import EnvId

ACTION_NAMES: tuple[str, ...] = ("NONE", "NORTH", "SOUTH", "WEST", "EAST", "LOAD")


@dataclass(frozen=True)
class _Snapshot:
    """Everything ``ForagingEnv.step`` reads or writes, plus the wrapper's own fields."""

    field: npt.NDArray[np.int32]  # [rows, cols], private copy
    players: tuple[tuple[Any, Any, Any, Any, tuple[Any, ...]], ...]  # (position, level, score, reward, history)
    current_step: int
    game_over: bool
    food_spawned: float
    valid_actions: tuple[tuple[Any, ...], ...]  # per player, LBF ``Action`` members
    rng_state: dict[str, Any]
    food_slots: tuple[tuple[int, int, int], ...]
    obs: FloatArray  # [N, obs_dim], never mutated in place
    done: bool


class LBFEnv(WrappedEnv):
    """Level-Based Foraging with full observation, wrapped without rewriting its rules.

    Args:
        env_id: a parsed ``EnvId`` (or its string) of the ``lbf`` family.
        fast_obs: build LBF's observation vectors with numpy instead of LBF's per-player
            Python loop (``_make_gym_obs``). The vectors are identical (a test compares them);
            it roughly halves the cost of a step. Not recorded in ``spec.kwargs``.
        **kwargs: forwarded to ``gym.make`` and so to ``ForagingEnv`` (e.g. ``penalty``,
            ``normalize_reward``); recorded in ``spec.kwargs``.

    Raises:
        ValueError: the id is not an LBF id, or the kwargs ask for a partial or grid
            observation (the obs feature names assume LBF's full vector observation).
    """

    def __init__(self, env_id: EnvId | str, *, fast_obs: bool = True, **kwargs: Any) -> None:
        parsed = EnvId.parse(env_id) if isinstance(env_id, str) else env_id
        if parsed.family != "lbf" or parsed.gym_id is None:
            raise ValueError(f"LBFEnv needs an lbf-... id, got {parsed}")
        import gymnasium as gym
        import lbforaging  # noqa: F401  (registers the Foraging-* ids)

        raw: Any = gym.make(parsed.gym_id, disable_env_checker=True, **kwargs).unwrapped
        self._raw = raw
        rows, cols = raw.field.shape
        if raw._grid_observation or not raw._observe_agent_levels:
            raise ValueError(f"{parsed}: only LBF's vector observation with agent levels is supported")
        if raw.sight < max(rows, cols) - 1:
            raise ValueError(f"{parsed}: sight={raw.sight} is a partial observation; {parsed} is full observation")
        self.env_id = str(parsed)
        self.n_agents: int = len(raw.players)
        self.n_food: int = int(raw.max_num_food)
        self.rows, self.cols = int(rows), int(cols)
        n, f = self.n_agents, self.n_food
        obs_features = [f"food_slot_{k}.{a}" for k in range(f) for a in ("row", "col", "level")]
        obs_features += [f"self.{a}" for a in ("row", "col", "level")]
        obs_features += [f"other_{k}.{a}" for k in range(n - 1) for a in ("row", "col", "level")]
        state_features = [f"agent_{i}.{a}" for i in range(n) for a in ("row", "col", "level")]
        state_features += [f"food_{j}.{a}" for j in range(f) for a in ("row", "col", "level", "present")]
        state_features.append("t_frac")
        self.spec = EnvSpec(
            env_id=self.env_id,
            n_agents=n,
            n_actions=len(ACTION_NAMES),
            obs_dim=len(obs_features),
            state_dim=len(state_features),
            max_steps=int(raw._max_episode_steps),
            action_names=ACTION_NAMES,
            obs_features=tuple(obs_features),
            state_features=tuple(state_features),
            noop_action=0,
            kwargs=dict(kwargs),
        )
        self._food_slots: tuple[tuple[int, int, int], ...] = ()
        self._obs: FloatArray = np.zeros((n, self.spec.obs_dim), np.float32)  # [N, obs_dim]
        self._mask: BoolArray | None = None
        self._done = True
        self._reset_called = False
        self._state_template = np.zeros(self.spec.state_dim, np.float32)  # [state_dim]
        self._present_rows = np.zeros(0, np.int64)  # [F_spawned]
        self._present_cols = np.zeros(0, np.int64)  # [F_spawned]
        self._present_idx = np.zeros(0, np.int64)  # [F_spawned]
        # Row i lists agent i first, then the others in index order (LBF's "self first").
        self._self_first = np.array([[i, *(j for j in range(n) if j != i)] for i in range(n)], np.int64)  # [N, N]
        self._food_template = np.tile(np.array([-1.0, -1.0, 0.0], np.float32), f)  # [3F]
        self.fast_obs = fast_obs
        if fast_obs:
            # An instance attribute shadows the class method, so LBF's own step/reset call it.
            raw._make_gym_obs = self._make_obs_fast

    # ------------------------------------------------------------------ protocol

    @property
    def t(self) -> int:
        """Steps taken in the current episode."""
        return int(self._raw.current_step or 0)

    def reset(self, seed: int) -> FloatArray:
        # lbforaging 2.0.0 spawns players by rejection sampling against every player's *current*
        # position, so without this its reset depends on where the previous episode ended.
        for player in self._raw.players:
            player.position = None
        nobs, _ = self._raw.reset(seed=int(seed))
        field = self._raw.field
        rows, cols = np.nonzero(field)
        self._food_slots = tuple((int(r), int(c), int(field[r, c])) for r, c in zip(rows, cols, strict=True))
        self._build_state_template()
        self._obs = nobs if self.fast_obs else np.stack(nobs)  # [N, obs_dim]
        self._mask = None
        self._done = False
        self._reset_called = True
        return self._obs

    def step(self, actions: npt.ArrayLike) -> Step:
        nobs, rewards, done, _, _ = self._raw.step(self._checked_actions(actions))
        self._obs = nobs if self.fast_obs else np.stack(nobs)  # [N, obs_dim]
        self._mask = None
        terminated = truncated = False
        if done:
            terminated = not self._raw.field.any()
            truncated = not terminated
            self._done = True
        reward = np.asarray(rewards, dtype=np.float32)  # [N]
        return Step(self._obs, reward, np.zeros(self.n_agents, np.float32), terminated, truncated, {})

    def action_mask(self) -> BoolArray:
        if self._mask is None:
            raw = self._raw
            mask = np.zeros((self.n_agents, len(ACTION_NAMES)), np.bool_)  # [N, A]
            for i, player in enumerate(raw.players):
                for action in raw._valid_actions[player]:
                    mask[i, action.value] = True
            mask.flags.writeable = False
            self._mask = mask
        return self._mask

    def state(self) -> FloatArray:
        s = self._state_template.copy()  # [state_dim]
        players = self._raw.players
        s[: 3 * self.n_agents] = [v for p in players for v in (p.position[0], p.position[1], p.level)]
        if len(self._present_idx):
            s[self._present_idx] = self._raw.field[self._present_rows, self._present_cols] > 0
        s[-1] = self.t / self.spec.max_steps
        return s

    def describe(self) -> dict[str, Any]:
        field = self._raw.field
        return {
            "env_id": self.env_id,
            "t": self.t,
            "grid": [self.rows, self.cols],
            "agents": [
                {"id": f"agent_{i}", "pos": [int(p.position[0]), int(p.position[1])], "level": int(p.level)}
                for i, p in enumerate(self._raw.players)
            ],
            "food": [
                {"id": f"food_{j}", "pos": [r, c] if field[r, c] > 0 else None, "level": lvl}
                for j, (r, c, lvl) in enumerate(self._food_slots)
            ],
        }

    def snapshot(self) -> _Snapshot:
        raw = self._raw
        if not self._reset_called:
            raise RuntimeError(f"{self.env_id}: call reset(seed) before snapshot()")
        return _Snapshot(
            field=raw.field.copy(),
            players=tuple((p.position, p.level, p.score, p.reward, tuple(p.history)) for p in raw.players),
            current_step=raw.current_step,
            game_over=raw._game_over,
            food_spawned=raw._food_spawned,
            valid_actions=tuple(tuple(raw._valid_actions[p]) for p in raw.players),
            rng_state=raw.np_random.bit_generator.state,
            food_slots=self._food_slots,
            obs=self._obs.copy(),
            done=self._done,
        )

    def restore(self, snap: _Snapshot) -> None:
        raw = self._raw
        raw.field = snap.field.copy()
        for p, (position, level, score, reward, history) in zip(raw.players, snap.players, strict=True):
            p.position, p.level, p.score, p.reward, p.history = position, level, score, reward, list(history)
        raw.current_step = snap.current_step
        raw._game_over = snap.game_over
        raw._food_spawned = snap.food_spawned
        raw._valid_actions = {p: list(va) for p, va in zip(raw.players, snap.valid_actions, strict=True)}
        raw.np_random.bit_generator.state = snap.rng_state
        if snap.food_slots is not self._food_slots:
            self._food_slots = snap.food_slots
            self._build_state_template()
        self._obs = snap.obs.copy()
        self._mask = None
        self._done = snap.done
        self._reset_called = True

    # ------------------------------------------------------------------ helpers

    def _build_state_template(self) -> None:
        """Fill the static food part of the state vector from the slots fixed at reset."""
        n3 = 3 * self.n_agents
        tmpl = np.zeros(self.spec.state_dim, np.float32)  # [state_dim]
        for j in range(self.n_food):
            tmpl[n3 + 4 * j : n3 + 4 * j + 4] = (
                (*self._food_slots[j], 0) if j < len(self._food_slots) else (-1, -1, 0, 0)
            )
        self._state_template = tmpl
        k = len(self._food_slots)
        self._present_rows = np.array([r for r, _, _ in self._food_slots], np.int64)  # [k]
        self._present_cols = np.array([c for _, c, _ in self._food_slots], np.int64)  # [k]
        self._present_idx = n3 + 4 * np.arange(k, dtype=np.int64) + 3  # [k]

    def _make_obs_fast(self) -> FloatArray:
        """LBF's ``_make_gym_obs`` for full observation, vectorised; returns ``[N, obs_dim]``."""
        raw = self._raw
        field = raw.field
        rows, cols = np.nonzero(field)  # row-major, as LBF enumerates them
        k = len(rows)
        food = self._food_template.copy()  # [3F]
        food[0 : 3 * k : 3] = rows
        food[1 : 3 * k : 3] = cols
        food[2 : 3 * k : 3] = field[rows, cols]
        agents = np.array([(p.position[0], p.position[1], p.level) for p in raw.players], np.float32)  # [N, 3]
        obs = np.empty((self.n_agents, self.spec.obs_dim), np.float32)  # [N, obs_dim]
        f3 = 3 * self.n_food
        obs[:, :f3] = food
        obs[:, f3:] = agents[self._self_first].reshape(self.n_agents, -1)
        return obs
