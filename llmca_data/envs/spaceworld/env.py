"""One Spaceworld environment behind the ``MultiAgentEnv`` protocol.

Input: an env id ``spaceworld-<W>x<H>-<N>a`` plus ``SpaceworldConfig`` keyword arguments,
then seeds and joint actions ``int[N]``. Output: ``Step`` tuples (obs ``float32[N, obs_dim]``,
``reward_env`` and ``cost`` ``float32[N]``, flags, info), global states, action masks, exact
snapshots and a JSON-serialisable ``describe()`` for the LLM critic. It is a
``VectorSpaceworld`` with ``B = 1``, so single and batched runs follow the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmca_data.envs.base import BoolArray, EnvSpec, FloatArray, Step
from llmca_data.envs.ids import EnvId
from llmca_data.envs.spaceworld.core import (
    CARRIED,
    DELIVERED,
    FREE,
    SpaceworldConfig,
    SpaceworldState,
    VectorSpaceworld,
)
from llmca_data.envs.spaceworld.layout import ACTION_NAMES, DIR_VEC

_STATUS = {FREE: "free", CARRIED: "carried", DELIVERED: "delivered"}
RowCol = tuple[int, int]


@dataclass(frozen=True)
class SpaceworldSnapshot:
    """What ``SpaceworldEnv.snapshot`` returns: the state (B = 1) and the episode bookkeeping."""

    state: SpaceworldState
    done: bool
    seed: int | None


class SpaceworldEnv:
    """A single Spaceworld episode at a time (rules: ``llmca_data.envs.spaceworld.core``).

    Args:
        parsed: the env id, parsed (``EnvId.parse("spaceworld-10x10-3a")``) or as a string.
        **kwargs: other ``SpaceworldConfig`` fields (not width, height, n_agents).
    """

    def __init__(self, parsed: EnvId | str, **kwargs: Any) -> None:
        env_id = str(parsed)
        self.config = SpaceworldConfig.from_env_id(env_id, **kwargs)
        self.vec = VectorSpaceworld(self.config, 1)
        cfg = self.config
        self.spec = EnvSpec(
            env_id=env_id,
            n_agents=cfg.n_agents,
            n_actions=len(ACTION_NAMES),
            obs_dim=self.vec.obs_dim,
            state_dim=self.vec.state_dim,
            max_steps=cfg.max_steps,
            action_names=ACTION_NAMES,
            obs_features=cfg.obs_features,
            state_features=cfg.state_features,
            noop_action=0,
            kwargs=dict(kwargs),
        )
        self._done = True
        self._seed: int | None = None

    # ------------------------------------------------------------------ MultiAgentEnv protocol
    def reset(self, seed: int) -> FloatArray:
        """Start an episode from ``seed``; returns obs ``[N, obs_dim]``."""
        self._seed = int(seed)
        self._done = False
        obs: FloatArray = self.vec.reset(np.array([seed]))[0]
        return obs

    def step(self, actions: npt.ArrayLike) -> Step:
        """Apply the joint action ``int[N]`` (illegal actions act as NOOP)."""
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset(seed) first")
        a = np.asarray(actions, dtype=np.int64).reshape(self.config.n_agents, 1)  # [N, 1]
        reward, cost, terminated, truncated = self.vec.step_nb(a)
        term, trunc = bool(terminated[0]), bool(truncated[0])
        self._done = term or trunc
        status = self.vec.s.mod_status[:, 0]  # [M]
        info = {
            "collisions": int(cost.sum()),
            "delivered": int((status == DELIVERED).sum()),
            "success": bool((status == DELIVERED).all()),
        }
        return Step(self.vec.observe()[0], reward[:, 0].copy(), cost[:, 0].copy(), term, trunc, info)

    def action_mask(self) -> BoolArray:
        """``bool[N, 6]``; NOOP is always legal."""
        return self.vec.action_mask_nab()[:, :, 0].copy()

    def state(self) -> FloatArray:
        """Global state ``float32[state_dim]``."""
        state: FloatArray = self.vec.state()[0]
        return state

    def observe(self) -> FloatArray:
        """Observations of the current state ``[N, obs_dim]``."""
        obs: FloatArray = self.vec.observe()[0]
        return obs

    def snapshot(self) -> SpaceworldSnapshot:
        """An independent copy of everything (there is no RNG inside an episode)."""
        return SpaceworldSnapshot(self.vec.get_state(), self._done, self._seed)

    def restore(self, snap: SpaceworldSnapshot) -> None:
        """Return to ``snap``; the snapshot stays reusable."""
        self.vec.set_state(snap.state)
        self._done, self._seed = snap.done, snap.seed

    @property
    def done(self) -> bool:
        """True when the episode has ended (or none started)."""
        return self._done

    # ------------------------------------------------------------------ views for critics and tests
    def _rc(self, cell: int) -> list[int]:
        return list(divmod(int(cell), self.config.width))

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable state: grid, station, docks, agents, modules, debris (``[row, col]``)."""
        s, lay = self.vec.s, self.vec.layout
        weights = self.config.weights
        return {
            "env_id": self.spec.env_id,
            "t": int(s.t[0]),
            "grid": [self.config.height, self.config.width],
            "station": self._rc(lay.station),
            "docks": [self._rc(c) for c in lay.docks],
            "agents": [
                {
                    "id": f"agent_{i}",
                    "pos": self._rc(s.agent_cell[i, 0]),
                    "carrying": f"module_{s.carrying[i, 0]}" if s.carrying[i, 0] >= 0 else None,
                    "disabled": int(s.disabled[i, 0]),
                }
                for i in range(self.config.n_agents)
            ],
            "modules": [
                {
                    "id": f"module_{m}",
                    "pos": self._rc(s.mod_cell[m, 0]),
                    "weight": int(weights[m]),
                    "status": _STATUS[int(s.mod_status[m, 0])],
                }
                for m in range(self.config.n_modules)
            ],
            "debris": [
                {"pos": self._rc(s.deb_cell[d, 0]), "vel": [int(v) for v in DIR_VEC[s.deb_dir[d, 0]]]}
                for d in range(self.config.n_debris)
            ],
        }

    def render_text(self) -> str:
        """ASCII picture: ``S`` station, ``+`` dock, ``0-9`` agents, ``a-z`` modules (``A-Z`` carried), ``*`` debris."""
        cfg, s, lay = self.config, self.vec.s, self.vec.layout
        grid = [["."] * cfg.width for _ in range(cfg.height)]
        for cell, ch in [(lay.station, "S"), *((c, "+") for c in lay.docks)]:
            r, c = divmod(int(cell), cfg.width)
            grid[r][c] = ch
        for m in range(cfg.n_modules):
            if s.mod_status[m, 0] != DELIVERED:
                r, c = divmod(int(s.mod_cell[m, 0]), cfg.width)
                letter = chr(ord("a") + m % 26)
                grid[r][c] = letter.upper() if s.mod_status[m, 0] == CARRIED else letter
        for d in range(cfg.n_debris):
            r, c = divmod(int(s.deb_cell[d, 0]), cfg.width)
            grid[r][c] = "*"
        for i in range(cfg.n_agents):
            r, c = divmod(int(s.agent_cell[i, 0]), cfg.width)
            grid[r][c] = str(i % 10)
        return "\n".join("".join(row) for row in grid)

    def set_scene(
        self,
        agents: Sequence[RowCol],
        modules: Sequence[RowCol],
        debris: Sequence[tuple[RowCol, RowCol]] = (),
        *,
        carrying: Sequence[int] | None = None,
        disabled: Sequence[int] | None = None,
        status: Sequence[int] | None = None,
        t: int = 0,
    ) -> None:
        """Place every entity by hand (for tests and examples) and start an episode there.

        Args:
            agents: ``(row, col)`` of each agent.
            modules: ``(row, col)`` of each module.
            debris: ``((row, col), (drow, dcol))`` of each debris, velocity a unit step.
            carrying: module id per agent, -1 for none (default: none). Status follows.
            disabled: disabled counter per agent (default: 0).
            status: module status codes (default: carried if an agent carries it, else free).
            t: the step counter.
        """
        cfg, w = self.config, self.config.width
        if (len(agents), len(modules), len(debris)) != (cfg.n_agents, cfg.n_modules, cfg.n_debris):
            raise ValueError(f"need {cfg.n_agents} agents, {cfg.n_modules} modules, {cfg.n_debris} debris")
        for r, c in [*agents, *modules, *(p for p, _ in debris)]:
            if not (0 <= r < cfg.height and 0 <= c < cfg.width) or r * w + c == self.vec.layout.station:
                raise ValueError(f"({r}, {c}) is outside the grid or the station")
        dirs = [int(np.flatnonzero((np.array(v) == DIR_VEC).all(axis=1))[0]) for _, v in debris]
        carry = np.array(carrying if carrying is not None else [-1] * cfg.n_agents, dtype=np.int64)
        if status is None:
            stat = np.array([CARRIED if m in carry else FREE for m in range(cfg.n_modules)], dtype=np.int64)
        else:
            stat = np.array(status, dtype=np.int64)

        def col(x: Any) -> npt.NDArray[np.int64]:
            return np.asarray(x, dtype=np.int64).reshape(-1, 1)

        self.vec.set_state(
            SpaceworldState(
                agent_cell=col([r * w + c for r, c in agents]),
                carrying=col(carry),
                disabled=col(disabled if disabled is not None else [0] * cfg.n_agents),
                mod_cell=col([r * w + c for r, c in modules]),
                mod_status=col(stat),
                deb_cell=col([r * w + c for (r, c), _ in debris]),
                deb_dir=col(dirs),
                t=np.array([t], dtype=np.int64),
            )
        )
        self._done, self._seed = False, None
