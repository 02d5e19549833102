"""Spaceworld: our own cooperative, safety-constrained multi-agent grid world.

Spacecraft agents on a grid assemble a structure at a central station: they grab floating
modules (a heavy module needs two agents grabbing in the same step), carry them to one of
the four dock cells around the station (the delivery reward, ``weight / total weight``, is
split among the carriers, so a team return is at most 1), and avoid moving debris and each
other (a collision costs 1, disables the agent for a few steps and makes it drop its load).
The LLM-MCA paper's Spaceworld is unpublished; this one is our design. The exact rules are
in the docstring of ``llmca_data.envs.spaceworld.core``.

Input: an env id ``spaceworld-<W>x<H>-<N>a`` and ``SpaceworldConfig`` fields. Output:
``VectorSpaceworld`` (B environments in numpy, the fast path), ``SpaceworldEnv`` (one
environment, the ``MultiAgentEnv`` protocol) and ``parallel_env`` (PettingZoo).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmca_data.envs.spaceworld.core import SpaceworldConfig, SpaceworldState, VectorSpaceworld
from llmca_data.envs.spaceworld.env import SpaceworldEnv, SpaceworldSnapshot

if TYPE_CHECKING:
    from llmca_data.envs.spaceworld.pettingzoo_env import SpaceworldParallelEnv


def parallel_env(**kwargs: Any) -> SpaceworldParallelEnv:
    """PettingZoo ``ParallelEnv`` (imports pettingzoo only when called); see ``pettingzoo_env``."""
    from llmca_data.envs.spaceworld.pettingzoo_env import parallel_env as make

    return make(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "SpaceworldParallelEnv":
        from llmca_data.envs.spaceworld.pettingzoo_env import SpaceworldParallelEnv

        return SpaceworldParallelEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SpaceworldConfig",
    "SpaceworldEnv",
    "SpaceworldParallelEnv",
    "SpaceworldSnapshot",
    "SpaceworldState",
    "VectorSpaceworld",
    "parallel_env",
]
