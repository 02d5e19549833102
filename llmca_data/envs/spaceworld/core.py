"""Spaceworld rules, vectorised: B environments stepped at once in numpy.

Input: joint actions ``int[B, N]``. Output: observations ``float32[B, N, obs_dim]``, env
rewards and safety costs ``float32[B, N]``, and ``terminated`` / ``truncated`` ``bool[B]``.

Spaceworld is **our own design**. The LLM-MCA paper (Nagpal et al., AAMAS 2025) evaluates
on a "Spaceworld" whose rules are unpublished; this is not a reimplementation of it.

Rules (grid of ``height`` rows × ``width`` cols, positions ``(row, col)``, row 0 at the top):

* **Station**: the centre cell ``(height // 2, width // 2)``, impassable for agents, modules
  and debris. Its 4 neighbours are the **docks**.
* **Reset**: agents, modules and debris start on distinct cells that are neither the station
  nor a dock; each debris gets a direction in {up, down, left, right}. Placement is a pure
  function of the seed (see ``layout.py``); after reset a step is a deterministic function of
  state and actions: there is no randomness during an episode.
* **Modules**: ``n_modules``, the last ``n_heavy`` heavy (weight 2), the others light (weight 1).
  A module's value is ``weight / total weight``, so the team return is at most 1. Modules never
  block or collide with anything; they are free, carried, or delivered.
* **Actions** (6): 0 NOOP, 1 UP, 2 DOWN, 3 LEFT, 4 RIGHT, 5 GRAB. A step runs in this order:

  1. *Disabled* agents (counter > 0) play NOOP whatever they chose; illegal actions (see
     ``action_mask``) also act as NOOP.
  2. *Grab*: a GRAB by an agent that carries nothing targets the lowest-index free module
     within Manhattan distance 1 of it (its own cell or a 4-neighbour). A module is picked up
     when the number of agents targeting it this step is ≥ its weight; all of them become its
     carriers. Grabbing agents do not move this step.
  3. *Move*: a free agent moves one cell; a move into a wall or the station leaves it in place.
     A carried module and its carriers form a rigid body: it translates by direction d only
     when every carrier plays the same move d and every cell of the body (carriers and module)
     stays inside the grid and off the station; otherwise the whole body stays.
  4. *Agent collisions*: two agents ending in one cell, or two agents swapping cells, collide.
     Colliding agents go back to their previous cells (a body goes back whole when one of its
     carriers does); this repeats until no two agents share a cell (an agent that now meets a
     returned agent collides too).
  5. *Debris* moves one cell along its direction; a debris whose next cell is a wall or the
     station reverses its direction and moves one cell the other way (it stays if that cell is
     blocked too). Debris pass through each other and through modules. An agent whose cell
     after step 4 equals a debris' new cell, or that swapped cells with a debris, collides.
  6. *Consequences*: every colliding agent gets ``cost = 1`` for the step (never more), is
     disabled for the next ``disable_steps`` steps, and drops what it carries: the module
     becomes free where it is and all its carriers are released. Counters of other disabled
     agents decrease by 1.
  7. *Delivery*: a carried module whose cell, or one of whose carriers' cells, is a dock is
     delivered: its value is split equally among its carriers as ``reward_env`` and they are
     released.
  8. ``t += 1``. ``terminated`` when every module is delivered, or (``terminate_on_collision``)
     when any agent collided this step; otherwise ``truncated`` when ``t == max_steps``. Never
     both. Auto-reset is the caller's job.

* **Action mask**: NOOP always; a move when the agent is not disabled and the move changes its
  cell (for a carrier: when the whole body can translate that way); GRAB when the agent is not
  disabled, carries nothing, and a free module is within range.
* **Observation** (per agent, partial, every value in [-1, 1] while ``t <= max_steps``): time
  ``t / max_steps``; own normalised position ``row / (H-1), col / (W-1)``, carrying flag,
  disabled counter / ``disable_steps``; for each other agent (increasing id) its relative
  position (difference of normalised positions), carrying flag and disabled counter; for each
  module its relative position (zeros once delivered), heavy flag and status one-hot (free,
  carried by self, carried by another, delivered); the relative position of the nearest dock
  (Manhattan; ties: up, down, left, right); for each debris a visible flag (Chebyshev distance
  ≤ ``view_radius``), its relative position and velocity, all zeros when not visible.
* **State**: time; per agent position, carrying flag, disabled counter; per module position,
  heavy flag, status one-hot (free, carried, delivered), carried-by flag per agent; per debris
  position and velocity. Names of every column: ``obs_features`` / ``state_features``.

Implementation: the state is held batch-last (``[N, B]``) so that every rule is a handful of
elementwise numpy operations on long contiguous rows, with lookup tables from ``layout.py``
(``np.take`` on flat tables) instead of 2-d indexing. ``step_nb`` / ``action_mask_nab`` are the
batch-last fast paths; ``step`` / ``action_mask`` give the ``[B, N, ...]`` views.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from llmca_data.envs.spaceworld import layout as lay
from llmca_data.envs.spaceworld.observe import Observer

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SpaceworldConfig:
    """Parameters of a Spaceworld; the defaults give ``spaceworld-10x10-3a``."""

    width: int = 10
    """Number of grid columns (≥ 5; at most 4096 cells in all)."""
    height: int = 10
    """Number of grid rows (≥ 5)."""
    n_agents: int = 3
    """Number of spacecraft agents."""
    n_modules: int = 3
    """Number of modules to deliver."""
    n_heavy: int = 1
    """How many of the modules (the last ones) are heavy: weight 2, two agents must grab together."""
    n_debris: int = 2
    """Number of moving debris pieces."""
    max_steps: int = 100
    """Time limit; reaching it gives ``truncated=True``."""
    disable_steps: int = 3
    """Steps a collided agent can only play NOOP."""
    terminate_on_collision: bool = False
    """End the episode (``terminated=True``) on the first collision instead of disabling agents."""
    view_radius: int = 3
    """Debris within this Chebyshev distance of an agent are in its observation."""

    def __post_init__(self) -> None:
        problems = []
        if self.width < 5 or self.height < 5:
            problems.append(f"grid {self.width}x{self.height} is smaller than 5x5")
        if self.width * self.height > 4096:
            problems.append(f"grid {self.width}x{self.height} has more than 4096 cells")
        if self.n_agents < 1 or self.n_modules < 1 or self.n_debris < 0:
            problems.append("need n_agents >= 1, n_modules >= 1, n_debris >= 0")
        if not 0 <= self.n_heavy <= self.n_modules:
            problems.append(f"n_heavy={self.n_heavy} must be in [0, n_modules={self.n_modules}]")
        if self.n_heavy > 0 and self.n_agents < 2:
            problems.append("a heavy module needs at least 2 agents")
        if self.n_agents + self.n_modules + self.n_debris > self.width * self.height - 5:
            problems.append("more entities than free start cells")
        if self.max_steps < 1 or self.disable_steps < 0 or self.view_radius < 0:
            problems.append("need max_steps >= 1, disable_steps >= 0, view_radius >= 0")
        if problems:
            raise ValueError("invalid SpaceworldConfig: " + "; ".join(problems))

    @classmethod
    def from_env_id(cls, env_id: str, **kwargs: object) -> SpaceworldConfig:
        """The config of ``spaceworld-<W>x<H>-<N>a`` with other fields from ``kwargs``."""
        from llmca_data.envs.ids import EnvId

        parsed = EnvId.parse(env_id)
        if parsed.family != "spaceworld":
            raise ValueError(f"{env_id!r} is not a spaceworld env id")
        clash = {"width", "height", "n_agents"} & set(kwargs)
        if clash:
            raise ValueError(f"{sorted(clash)} are set by the env id {env_id!r}; do not pass them as kwargs")
        return cls(width=parsed.width, height=parsed.height, n_agents=parsed.n_agents, **kwargs)  # type: ignore[arg-type]

    @property
    def weights(self) -> IntArray:
        """Module weights ``[M]``: light modules first, then heavy ones."""
        return np.array([1] * (self.n_modules - self.n_heavy) + [2] * self.n_heavy, dtype=np.int64)

    @property
    def obs_features(self) -> tuple[str, ...]:
        return lay.obs_feature_names(self.n_agents, self.n_modules, self.n_debris)

    @property
    def state_features(self) -> tuple[str, ...]:
        return lay.state_feature_names(self.n_agents, self.n_modules, self.n_debris)


FREE, CARRIED, DELIVERED = 0, 1, 2


@dataclass
class SpaceworldState:
    """The complete simulator state of B environments (there is no RNG to save).

    Arrays are batch-last (``[N, B]``, not ``[B, N]``): every rule is then an elementwise
    operation over long contiguous rows, which is what makes the batch step fast.
    """

    agent_cell: IntArray  # [N, B] flat cell row * width + col
    carrying: IntArray  # [N, B] module id, -1 when free
    disabled: IntArray  # [N, B] remaining disabled steps
    mod_cell: IntArray  # [M, B]
    mod_status: IntArray  # [M, B] FREE, CARRIED or DELIVERED
    deb_cell: IntArray  # [D, B]
    deb_dir: IntArray  # [D, B] direction code 1..4 (UP, DOWN, LEFT, RIGHT)
    t: IntArray  # [B]

    def copy(self) -> SpaceworldState:
        """An independent deep copy."""
        return SpaceworldState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def equals(self, other: SpaceworldState) -> bool:
        """Exact equality of every array."""
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))


class VectorSpaceworld:
    """``B`` Spaceworld environments held as numpy arrays and stepped together.

    Args:
        config: the rules' parameters.
        batch_size: number of environments ``B``.

    Call ``reset(seeds)`` first. ``step`` never resets finished environments: use
    ``reset_envs(idx, seeds)`` for those. ``get_state`` / ``set_state`` give exact snapshots.
    """

    def __init__(self, config: SpaceworldConfig, batch_size: int) -> None:
        self.config = config
        self.batch_size = b = batch_size
        self.layout = L = lay.build_layout(config.width, config.height, config.view_radius)
        self.n_agents, self.n_modules, self.n_debris = n, m, d = config.n_agents, config.n_modules, config.n_debris
        self.weight = config.weights  # [M]
        self.value = (self.weight / self.weight.sum()).astype(np.float32)  # [M]
        self._mods = np.arange(m)[:, None, None]  # [M, 1, 1]
        self._mods_mid = np.arange(m)[None, :, None]  # [1, M, 1]
        self._off = ~np.eye(n, dtype=np.bool_)[:, :, None]  # [N, N, 1]
        self._b = np.arange(b)  # [B]
        # Flat tables for np.take (much faster than 2-d fancy indexing).
        self._move = L.move_to.ravel()  # [C * 6]
        self._movable = L.movable.ravel()  # [C * 6]
        self._mos = L.movable_or_stay.ravel()  # [C * 6]
        self._near = L.near.ravel()  # [C * C]
        self._deb_cell = L.deb_cell.ravel()  # [C * 5]
        self._deb_dir = L.deb_dir.ravel()  # [C * 5]
        self._observer = Observer(self)
        self.obs_dim, self.state_dim = self._observer.obs_dim, self._observer.state_dim
        z = np.zeros
        self.s = SpaceworldState(
            z((n, b), np.int64), z((n, b), np.int64) - 1, z((n, b), np.int64),
            z((m, b), np.int64), z((m, b), np.int64), z((d, b), np.int64), z((d, b), np.int64) + 1,
            z(b, np.int64),
        )  # fmt: skip

    # ----------------------------------------------------------------- reset and state access
    def reset(self, seeds: npt.ArrayLike) -> FloatArray:
        """Reset every environment from ``seeds`` ``int[B]``; returns obs ``[B, N, obs_dim]``."""
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if seeds.shape[0] != self.batch_size:
            raise ValueError(f"reset needs {self.batch_size} seeds, got {seeds.shape[0]}")
        self.reset_envs(self._b, seeds)
        return self.observe()

    def reset_envs(self, idx: npt.ArrayLike, seeds: npt.ArrayLike) -> None:
        """Reset only the environments ``idx`` ``int[K]`` from ``seeds`` ``int[K]`` (then call ``observe``)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n, m = self.n_agents, self.n_modules
        cells, dirs = lay.start_cells(self.layout, seeds, n + m + self.n_debris, self.n_debris)  # [K, E], [K, D]
        s = self.s
        s.agent_cell[:, idx] = cells[:, :n].T
        s.mod_cell[:, idx] = cells[:, n : n + m].T
        s.deb_cell[:, idx] = cells[:, n + m :].T
        s.deb_dir[:, idx] = dirs.T
        s.carrying[:, idx] = -1
        s.disabled[:, idx] = 0
        s.mod_status[:, idx] = FREE
        s.t[idx] = 0

    def get_state(self) -> SpaceworldState:
        """A copy of the full state (an exact snapshot)."""
        return self.s.copy()

    def set_state(self, state: SpaceworldState) -> None:
        """Replace the full state by a copy of ``state`` (same batch size and counts)."""
        want = {"agent_cell": (self.n_agents, self.batch_size), "mod_cell": (self.n_modules, self.batch_size)}
        for name, shape in want.items():
            if getattr(state, name).shape != shape:
                raise ValueError(f"state.{name} has shape {getattr(state, name).shape}, expected {shape}")
        self.s = state.copy()

    def observe(self) -> FloatArray:
        """Observations ``[B, N, obs_dim]`` of the current state."""
        return self._observer.obs()

    def state(self) -> FloatArray:
        """Global states ``[B, state_dim]``."""
        return self._observer.state()

    def action_mask(self) -> BoolArray:
        """Legal actions ``bool[B, N, 6]`` (see the module docstring)."""
        return np.ascontiguousarray(self.action_mask_nab().transpose(2, 0, 1))

    # ----------------------------------------------------------------------------- dynamics
    def action_mask_nab(self) -> BoolArray:
        """Legal actions, batch-last: ``bool[N, 6, B]``."""
        s = self.s
        active = s.disabled == 0  # [N, B]
        free_agent = s.carrying < 0  # [N, B]
        a6 = np.arange(6)[None, :, None]  # [1, 6, 1]
        mask = np.take(self._movable, s.agent_cell[:, None, :] * 6 + a6)  # [N, 6, B] moves of a free agent
        if not free_agent.all():
            carr = s.carrying[None] == self._mods  # [M, N, B]
            mod_ok = np.take(self._mos, s.mod_cell[:, None, :] * 6 + a6)  # [M, 6, B]
            body = mod_ok & (mask[None] | ~carr[:, :, None, :]).all(axis=1)  # [M, 6, B]
            b = self.batch_size
            flat = np.maximum(s.carrying, 0)[:, None, :] * (6 * b) + a6 * b + self._b  # [N, 6, B] into body
            mask = np.where(free_agent[:, None, :], mask, np.take(body, flat))
        mask &= active[:, None, :]
        in_range = np.take(self._near, s.agent_cell[:, None, :] * self.layout.n_cells + s.mod_cell[None])  # [N, M, B]
        in_range &= (s.mod_status == FREE)[None]
        mask[:, lay.GRAB] = in_range.any(axis=1) & active & free_agent
        mask[:, lay.NOOP] = True
        return mask

    def step(self, actions: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray, BoolArray]:
        """Apply joint actions ``int[B, N]``.

        Returns:
            ``(obs [B, N, obs_dim], reward [B, N], cost [B, N], terminated [B], truncated [B])``;
            the agents that collided are those with ``cost > 0``.
        """
        reward, cost, terminated, truncated = self.step_nb(np.asarray(actions).T)
        return self.observe(), np.ascontiguousarray(reward.T), np.ascontiguousarray(cost.T), terminated, truncated

    def step_nb(self, actions: npt.ArrayLike) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray]:
        """``step`` without observations, batch-last: actions ``int[N, B]`` → reward, cost ``[N, B]``, flags ``[B]``."""
        cfg, s, C = self.config, self.s, self.layout.n_cells
        a = np.asarray(actions, dtype=np.int64)  # [N, B]
        if a.shape != s.agent_cell.shape:
            raise ValueError(f"actions must have shape {s.agent_cell.shape[::-1]} ([B, N])")
        a = np.where((s.disabled > 0) | (a < 0) | (a > lay.GRAB), lay.NOOP, a)  # 1. disabled / unknown -> NOOP
        cell, carrying, status, mod_cell = s.agent_cell, s.carrying, s.mod_status, s.mod_cell
        mods = self._mods

        # 2. Grab: each grabbing free agent targets the lowest-index free module in range.
        grabbing = (a == lay.GRAB) & (carrying < 0)  # [N, B]
        if grabbing.any():
            in_range = np.take(self._near, cell[:, None, :] * C + mod_cell[None])  # [N, M, B]
            in_range &= (status == FREE)[None] & grabbing[:, None, :]
            target = np.where(in_range, self._mods_mid, self.n_modules).min(axis=1)  # [N, B]; M = none
            onehot = target[:, None, :] == self._mods_mid  # [N, M, B]
            picked = onehot.sum(axis=0) >= self.weight[:, None]  # [M, B]
            got = (onehot & picked[None]).any(axis=1)  # [N, B]
            carrying = np.where(got, target, carrying)
            status = np.where(picked, CARRIED, status)

        # 3. Move: free agents alone, carried modules as rigid bodies.
        any_carried = bool((carrying >= 0).any())
        if any_carried:
            carr = carrying[None] == mods  # [M, N, B]
            lo = np.where(carr, a[None], 99).min(axis=1)  # [M, B]
            hi = np.where(carr, a[None], -1).max(axis=1)  # [M, B]
            d = np.where((lo == hi) & (lo >= lay.UP) & (lo <= lay.RIGHT), lo, lay.NOOP)  # [M, B]
            agents_ok = (np.take(self._mos, cell[None] * 6 + d[:, None, :]) | ~carr).all(axis=1)  # [M, B]
            d = np.where(agents_ok & np.take(self._mos, mod_cell * 6 + d), d, lay.NOOP)  # [M, B]
            body_dir = np.take(d, np.maximum(carrying, 0) * self.batch_size + self._b)  # [N, B]
            eff = np.where(carrying >= 0, body_dir, a)  # [N, B]
            new_mod = np.take(self._move, mod_cell * 6 + d)  # [M, B]
        else:
            eff, new_mod = a, mod_cell
        new_cell = np.take(self._move, cell * 6 + eff)  # [N, B]; NOOP, GRAB and blocked moves stay

        # 4. Agent collisions: same cell or swap; colliders bounce back until consistent.
        off = self._off
        same = new_cell[:, None, :] == new_cell[None]  # [N, N, B]
        swap = (new_cell[:, None, :] == cell[None]) & (new_cell[None] == cell[:, None, :])  # [N, N, B]
        collided = ((same | swap) & off).any(axis=1)  # [N, B]
        if collided.any():
            reverted = collided
            for _ in range(self.n_agents):
                if any_carried:  # a body goes back whole
                    mod_back = (carr & reverted[None]).any(axis=1)  # [M, B]
                    reverted = reverted | (carr & mod_back[:, None, :]).any(axis=0)
                    new_mod = np.where(mod_back, mod_cell, new_mod)
                new_cell = np.where(reverted, cell, new_cell)
                conflict = ((new_cell[:, None, :] == new_cell[None]) & off).any(axis=1)  # [N, B]
                if not conflict.any():
                    break
                collided = collided | conflict
                reverted = reverted | conflict

        # 5. Debris move (bouncing), then agent-debris collisions (same cell or swap).
        if self.n_debris:
            didx = s.deb_cell * 5 + s.deb_dir  # [D, B]
            deb_new = np.take(self._deb_cell, didx)  # [D, B]
            hit = (new_cell[:, None, :] == deb_new[None]) | (
                (new_cell[:, None, :] == s.deb_cell[None]) & (cell[:, None, :] == deb_new[None])
            )  # [N, D, B]
            collided = collided | hit.any(axis=1)
            s.deb_dir = np.take(self._deb_dir, didx)
            s.deb_cell = deb_new

        # 6. Consequences: cost, disable, drop.
        cost = collided.astype(np.float32)  # [N, B]
        s.disabled = np.where(collided, cfg.disable_steps, np.maximum(s.disabled - 1, 0))
        any_collision = collided.any(axis=0)  # [B]
        if any_carried and any_collision.any():
            drop = (carr & collided[None]).any(axis=1) & (status == CARRIED)  # [M, B]
            carrying = np.where((carr & drop[:, None, :]).any(axis=0), -1, carrying)
            status = np.where(drop, FREE, status)
            carr = carr & ~drop[:, None, :]

        # 7. Delivery: module or one of its carriers on a dock.
        reward = np.zeros(cost.shape, dtype=np.float32)  # [N, B]
        if any_carried:
            is_dock = self.layout.is_dock
            at_dock = np.take(is_dock, new_mod) | (carr & np.take(is_dock, new_cell)[None]).any(axis=1)  # [M, B]
            deliver = at_dock & (status == CARRIED)  # [M, B]
            if deliver.any():
                n_carr = np.maximum(carr.sum(axis=1), 1)  # [M, B]
                share = np.where(deliver, self.value[:, None] / n_carr, 0.0).astype(np.float32)  # [M, B]
                reward = (carr * share[:, None, :]).sum(axis=0, dtype=np.float32)  # [N, B]
                carrying = np.where((carr & deliver[:, None, :]).any(axis=0), -1, carrying)
                status = np.where(deliver, DELIVERED, status)

        # 8. Time and episode end.
        s.agent_cell, s.carrying, s.mod_status, s.mod_cell = new_cell, carrying, status, new_mod
        s.t = s.t + 1
        terminated = (status == DELIVERED).all(axis=0)  # [B]
        if cfg.terminate_on_collision:
            terminated = terminated | any_collision
        truncated = (s.t >= cfg.max_steps) & ~terminated  # [B]
        return reward, cost, terminated, truncated
