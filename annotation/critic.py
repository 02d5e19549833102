"""The critic protocol: one episode in, per-agent per-timestep credits out.

Input: an ``Episode`` (and, for critics that re-simulate, a live env to replay it in).
Output: a ``CriticOutput`` with ``credits`` ``float32[T, N]`` (NaN when the critic failed,
never zeros), an ``annotations`` status, and optional rationales, summary and tasks.
Critics are plugins: anything with ``critic_id``, ``needs_env``, ``params()`` and
``annotate()`` works with ``llmca annotate``; ``registry.py`` builds them by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from llmca_data.envs.base import MultiAgentEnv
from llmca_data.rollout import Episode
from llmca_data.schema import ANNOTATION_STATUSES

STATUSES = ANNOTATION_STATUSES


@dataclass
class CriticOutput:
    """What a critic says about one episode (one ``annotations`` row plus the credit column)."""

    credits: np.ndarray  # [T, N] float32; NaN where the critic failed
    status: str = "ok"
    error: str = ""
    rationale: list[str] | None = None
    """One string per agent; None stores N empty strings."""
    summary: str = ""
    tasks: np.ndarray | None = None  # [T, N] int16, LLM-TACA only
    model: str = ""
    prompt_version: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    raw_response: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, length: int, n_agents: int, error: str) -> CriticOutput:
        return cls(np.full((length, n_agents), np.nan, np.float32), status="failed", error=error)


class Critic(Protocol):
    """A credit-assignment critic."""

    critic_id: str
    """Hyphenated id; the column is ``credit_<id with - → _>``."""
    needs_env: bool
    """True when ``annotate`` re-simulates the episode (it then receives a live env)."""

    def params(self) -> dict[str, Any]:
        """Everything that determines the output (saved in ``meta/info.json`` and each annotations row)."""
        ...

    def annotate(self, episode: Episode, env: MultiAgentEnv | None) -> CriticOutput: ...
