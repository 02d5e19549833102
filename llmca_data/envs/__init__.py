"""Environments behind one protocol (``MultiAgentEnv``), built from an env id.

Input: an env id (``llmca_data.envs.ids``) and keyword arguments. Output: a
``MultiAgentEnv``. Wrapped packages are imported lazily, inside ``make_env``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from llmca_data.envs.base import EnvSpec, MultiAgentEnv, Step
from llmca_data.envs.ids import CONTRACT_ENV_IDS, EnvId


def make_env(env_id: str, **kwargs: Any) -> MultiAgentEnv:
    """Build the environment named by ``env_id``.

    Raises:
        UnknownEnvError: the id does not parse; the message lists the contract ids.
    """
    parsed = EnvId.parse(env_id)
    if parsed.family == "lbf":
        from llmca_data.envs.lbf import LBFEnv

        return LBFEnv(parsed, **kwargs)
    if parsed.family == "rware":
        from llmca_data.envs.rware import RwareEnv

        return RwareEnv(parsed, **kwargs)
    from llmca_data.envs.spaceworld import SpaceworldEnv

    return SpaceworldEnv(parsed, **kwargs)


@cache
def env_spec(env_id: str) -> EnvSpec:
    """The spec of ``env_id`` with default kwargs (cached)."""
    return make_env(env_id).spec


__all__ = ["CONTRACT_ENV_IDS", "EnvId", "EnvSpec", "MultiAgentEnv", "Step", "env_spec", "make_env"]
