"""The critic benchmark's own rows and its ``delayed`` view of an episode.

Input: stored ``Episode`` objects of the bench set (and, for the evidence, a live env to replay
them in). Output:

- ``delayed_view(episode)``: a copy whose ``reward_env`` holds each agent's episode total at the
  last step and 0 elsewhere, so its ``reward_team`` is the whole team return at the last step.
  This is what critics that do not need the env see in the ``delayed`` setting.
- ``episode_evidence(episode, env)``: per step, the agents the state change names as the cause
  of a reward event (``annotation.evidence``; read from ``describe()`` before and after each
  step of a replay of the true episode, never from rewards).
- Two bench-only critics (not registry ids; the ``Critic`` protocol, ``needs_env`` False):
  ``evidence-split`` splits each step's shown team reward equally among the agents the
  evidence names at that step (all agents when it names none); ``random-share`` splits it by
  random shares drawn per step from a generator seeded by (seed, episode id), so the same
  episode always gets the same split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llmca_data.envs.base import MultiAgentEnv
from llmca_data.rollout import Episode

from .critic import Critic, CriticOutput
from .evidence import episode_events, named_agents, replay_describes

BENCH_BASELINES = ("evidence-split", "random-share")
"""Critic names the benchmark accepts besides registry ids."""

Evidence = list[list[int]]
"""Per step, the indices of the agents the evidence names (empty: none)."""


def delayed_view(episode: Episode) -> Episode:
    """``episode`` with the team reward delayed: every agent's total at the last step, 0 elsewhere."""
    reward = np.zeros_like(episode.reward_env)  # [T, N]
    if episode.length:
        reward[-1] = episode.reward_env.sum(axis=0, dtype=np.float64).astype(np.float32)
    return replace(episode, reward_env=reward)


def episode_evidence(episode: Episode, env: MultiAgentEnv) -> Evidence:
    """The agents named at each step of ``episode`` (replayed in ``env``; ``ReplayMismatchError`` if it differs)."""
    events = episode_events(episode.env_id, replay_describes(episode, env), episode.action)
    return [named_agents(step, env.spec.agent_ids) for step in events]


def _split(reward: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``reward`` ``[T]`` split per step by non-negative ``weights`` ``[T, N]`` (each row sums to > 0)."""
    shares = weights / weights.sum(axis=1, keepdims=True)  # [T, N]
    out: np.ndarray = (shares * reward[:, None]).astype(np.float32)
    return out


class EvidenceSplitCritic:
    """``evidence-split``: each step's shown reward, equally to the agents the evidence names there."""

    critic_id = "evidence-split"
    needs_env = False

    def __init__(self, evidence: Mapping[int, Evidence]) -> None:
        self.evidence = evidence
        """Per episode id, the agents named at each step (``episode_evidence`` of the true episode)."""

    def params(self) -> dict[str, Any]:
        return {"type": "evidence-split"}

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        n = episode.reward_env.shape[1]
        named = self.evidence.get(episode.episode_id)
        if named is None or len(named) != episode.length:
            return CriticOutput.failed(episode.length, n, f"no evidence for episode {episode.episode_id}")
        weights = np.zeros((episode.length, n))  # [T, N]
        for t, agents in enumerate(named):
            if agents:
                weights[t, agents] = 1.0
            else:
                weights[t] = 1.0
        return CriticOutput(_split(episode.reward_team, weights))


class RandomShareCritic:
    """``random-share``: each step's shown reward split by random shares (seeded by episode id)."""

    critic_id = "random-share"
    needs_env = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {"type": "random-share", "seed": self.seed}

    def annotate(self, episode: Episode, env: MultiAgentEnv | None = None) -> CriticOutput:
        rng = np.random.default_rng([self.seed, max(0, episode.episode_id)])
        weights = rng.random(episode.reward_env.shape) + 1e-9  # [T, N], every row > 0
        return CriticOutput(_split(episode.reward_team, weights))


def bench_baseline(name: str, evidence: Mapping[int, Evidence] | None = None, seed: int = 0) -> Critic:
    """The bench-only critic ``name`` (``BENCH_BASELINES``); ``evidence-split`` needs ``evidence``."""
    if name == "evidence-split":
        if evidence is None:
            raise ValueError("evidence-split needs the evidence of every episode (episode_evidence)")
        return EvidenceSplitCritic(evidence)
    if name == "random-share":
        return RandomShareCritic(seed)
    raise ValueError(f"unknown bench baseline {name!r}; choose one of {', '.join(BENCH_BASELINES)}")


def evidence_of(episodes: Sequence[Episode], env: MultiAgentEnv) -> dict[int, Evidence]:
    """``episode_evidence`` of every episode, by episode id."""
    return {e.episode_id: episode_evidence(e, env) for e in episodes}
