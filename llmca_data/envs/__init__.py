"""Environments behind one protocol (``MultiAgentEnv``), built from an env id.

Input: an env id (``llmca_data.envs.ids``) and keyword arguments. Output: a
``MultiAgentEnv``. Wrapped packages are imported lazily, inside ``make_env``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from llmca_data.envs.base import EnvSpec, MultiAgentEnv, Step
from llmca_data.envs.ids import CONTRACT_ENV_IDS, EnvId
from llmca_data.errors import UnknownEnvError


def make_env(env_id: str, **kwargs: Any) -> MultiAgentEnv:
    """Build the environment named by ``env_id``.

    Raises:
        UnknownEnvError: the id does not parse; the message lists the contract ids.
    """
    parsed = EnvId.parse(env_id)
    if parsed.family in ("lbf", "rware"):
        import gymnasium

        try:
            if parsed.family == "lbf":
                from llmca_data.envs.lbf import LBFEnv

                return LBFEnv(parsed, **kwargs)
            from llmca_data.envs.rware import RwareEnv

            return RwareEnv(parsed, **kwargs)
        except gymnasium.error.NameNotFound as exc:
            raise UnknownEnvError(
                f"{env_id!r} parses, but {parsed.gym_id} is not registered by the installed package ({exc}); "
                f"use a registered size, e.g. one of {', '.join(i for i in CONTRACT_ENV_IDS if i[:3] == env_id[:3])}"
            ) from None
    from llmca_data.envs.spaceworld import SpaceworldEnv

    return SpaceworldEnv(parsed, **kwargs)


@cache
def env_spec(env_id: str) -> EnvSpec:
    """The spec of ``env_id`` with default kwargs (cached)."""
    return make_env(env_id).spec


__all__ = ["CONTRACT_ENV_IDS", "EnvId", "EnvSpec", "MultiAgentEnv", "Step", "env_spec", "env_table", "make_env"]


def env_table() -> list[dict[str, Any]]:
    """One row per contract env id: what it wraps, agents, actions, observation and state sizes."""
    rows: list[dict[str, Any]] = []
    for env_id in CONTRACT_ENV_IDS:
        spec = env_spec(env_id)
        rows.append(
            {
                "env_id": env_id,
                "wraps": EnvId.parse(env_id).gym_id or "ours (numpy, vectorised)",
                "agents": spec.n_agents,
                "actions": spec.n_actions,
                "action_names": list(spec.action_names),
                "obs_dim": spec.obs_dim,
                "state_dim": spec.state_dim,
                "max_steps": spec.max_steps,
            }
        )
    return rows
