"""The one protocol every environment implements, and its static description.

Input: joint actions ``int[N]``. Output: per-agent observations ``float32[N, obs_dim]``,
per-agent env rewards and safety costs ``float32[N]``, and the two episode-end flags,
which are never both true (time limits are ``truncated``, never ``terminated``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Step(NamedTuple):
    """What ``MultiAgentEnv.step`` returns."""

    obs: FloatArray  # [N, obs_dim]
    reward_env: FloatArray  # [N]
    cost: FloatArray  # [N]
    terminated: bool
    truncated: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment: sizes, names of features and actions.

    ``obs_features`` has ``obs_dim`` names and ``state_features`` has ``state_dim``
    names; they document the columns of ``obs`` and ``state`` in the dataset card.
    """

    env_id: str
    """Contract id, e.g. ``lbf-8x8-2p-2f``."""
    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int
    max_steps: int
    """Time limit; reaching it ends the episode with ``truncated=True``."""
    action_names: tuple[str, ...]
    obs_features: tuple[str, ...]
    state_features: tuple[str, ...]
    noop_action: int = 0
    """The action used by counterfactual and Shapley critics to remove an agent."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The keyword arguments the env was built with (recorded per episode)."""

    @property
    def agent_ids(self) -> tuple[str, ...]:
        return tuple(f"agent_{i}" for i in range(self.n_agents))

    def __post_init__(self) -> None:
        if len(self.action_names) != self.n_actions:
            raise ValueError(f"{self.env_id}: {len(self.action_names)} action names for {self.n_actions} actions")
        if len(self.obs_features) != self.obs_dim:
            raise ValueError(f"{self.env_id}: {len(self.obs_features)} obs feature names for obs_dim {self.obs_dim}")
        if len(self.state_features) != self.state_dim:
            raise ValueError(
                f"{self.env_id}: {len(self.state_features)} state feature names for state_dim {self.state_dim}"
            )


class WrappedEnv:
    """Shared read-only views of an env that wraps a third-party simulator (LBF, RWARE)."""

    _raw: Any
    _obs: FloatArray
    _done: bool
    env_id: str
    n_agents: int

    def _checked_actions(self, actions: npt.ArrayLike) -> list[int]:
        """The joint action as a list of N ints; refuses a step after the episode ended."""
        if self._done:
            raise RuntimeError(f"{self.env_id}: the episode has ended (or reset was never called); call reset(seed)")
        acts: list[int] = np.asarray(actions).reshape(-1).tolist()
        if len(acts) != self.n_agents:
            raise ValueError(f"{self.env_id}: expected {self.n_agents} actions, got {len(acts)}")
        return acts

    @property
    def raw(self) -> Any:
        """The unwrapped simulator of the wrapped package (read it, do not mutate it)."""
        return self._raw

    @property
    def last_obs(self) -> FloatArray:
        """The observation returned by the last ``reset``/``step`` (or restored), ``[N, obs_dim]``."""
        return self._obs


@runtime_checkable
class MultiAgentEnv(Protocol):
    """A cooperative multi-agent environment with a global state and exact snapshots.

    ``reward_team`` is always ``reward_env.sum()``. ``snapshot()`` captures everything,
    RNG included, so ``restore(snap)`` followed by the same actions gives identical steps.
    """

    spec: EnvSpec

    def reset(self, seed: int) -> FloatArray:
        """Start an episode; returns ``obs`` [N, obs_dim]."""
        ...

    def step(self, actions: npt.ArrayLike) -> Step:
        """Apply the joint action ``int[N]``."""
        ...

    def action_mask(self) -> BoolArray:
        """Legal actions now, ``bool[N, n_actions]``; the no-op is always legal."""
        ...

    def state(self) -> FloatArray:
        """Global state ``float32[state_dim]``."""
        ...

    def snapshot(self) -> Any:
        """An opaque, independent copy of the full simulator state (RNG included)."""
        ...

    def restore(self, snap: Any) -> None:
        """Return to a state captured by ``snapshot()``; the snapshot stays reusable."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable view of the current state for an LLM critic."""
        ...
