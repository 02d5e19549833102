"""The critic protocol: one episode in, per-agent per-timestep credits out.

Input: an ``Episode`` (and, for critics that re-simulate, a live env to replay it in).
Output: a ``CriticOutput`` with ``credits`` ``float32[T, N]`` (NaN when the critic failed,
never zeros), an ``annotations`` status, and optional rationales, summary and tasks.
Critics are plugins: anything with ``critic_id``, ``needs_env``, ``params()`` and
``annotate()`` works with ``llmca annotate``; ``registry.py`` builds them by id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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


def stored_output(output: CriticOutput, length: int, n_agents: int) -> CriticOutput:
    """``output`` as it may be stored for an episode of ``length`` steps: credits ``float32[T, N]``.

    An ``ok`` (or ``repaired``) output whose credits have another shape, or are not finite once cast to float32
    (``1e308`` becomes ``inf``), becomes ``failed`` with NaN credits and the reason; a ``failed``
    output always gets NaN credits; an unknown status is a failure too. Negative or non-finite
    token counts and costs are stored as 0 (they are reports of the server, not of the episode).
    """

    def usage(value: float) -> Any:
        return value if isinstance(value, int | float) and math.isfinite(value) and value >= 0 else 0

    output = replace(
        output,
        tokens_in=usage(output.tokens_in),
        tokens_out=usage(output.tokens_out),
        latency_s=usage(output.latency_s),
        cost_usd=usage(output.cost_usd),
    )
    nan = np.full((length, n_agents), np.nan, np.float32)
    credits = np.asarray(output.credits)
    problem = ""
    if output.status not in STATUSES:
        problem = f"unknown status {output.status!r}"
    elif output.status == "failed":
        return replace(output, credits=nan)
    elif credits.shape != (length, n_agents):
        problem = f"credits of shape {credits.shape}, need ({length}, {n_agents})"
    elif output.tasks is not None and np.shape(output.tasks) != (length, n_agents):
        problem = f"tasks of shape {np.shape(output.tasks)}, need ({length}, {n_agents})"
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            stored = credits.astype(np.float32)  # [T, N]
        bad = np.argwhere(~np.isfinite(stored))
        if bad.size:
            t, agent = bad[0].tolist()
            problem = (
                f"{len(bad)} credit(s) not finite as float32 (first: t={t}, agent={agent}, "
                f"value {credits[t, agent]!r}); credits must be finite and within ±3.4e38"
            )
        else:
            return replace(output, credits=stored)
    error = f"{output.error}; {problem}" if output.error else problem
    return replace(output, credits=nan, status="failed", error=error, tasks=None)


def run_critic(critic: Critic, episodes: list[Episode], env: MultiAgentEnv | None) -> list[CriticOutput]:
    """One critic call for a block of episodes: ``annotate_batch(episodes, env)`` when the critic
    has it (critics with their own concurrency, the LLM critic), else ``annotate`` per episode
    (``env`` only to a critic that ``needs_env``); each output as it may be stored (``stored_output``)."""
    batch = getattr(critic, "annotate_batch", None)
    outputs: list[CriticOutput] = (
        batch(episodes, env)
        if batch is not None
        else [critic.annotate(e, env if critic.needs_env else None) for e in episodes]
    )
    return [stored_output(o, e.length, e.reward_env.shape[1]) for e, o in zip(episodes, outputs, strict=True)]


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
