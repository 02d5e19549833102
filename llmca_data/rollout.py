"""Run one episode of a behaviour policy, and re-simulate a stored one exactly.

Input: an env id, a ``Policy`` and a seed. Output: an ``Episode`` (numpy arrays of every
step plus the metadata needed to replay it). ``replay`` takes an ``Episode`` back to a live
env, step by step, and refuses when the recomputed observations differ from the stored ones.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.errors import ReplayMismatchError
from llmca_data.policies.base import Policy

EVAL_SEED_BASE = 2**31
"""Data seeds are < 2**31; evaluation and reference seeds are >= 2**31, so they never overlap."""
REFERENCE_SEED_BASE = EVAL_SEED_BASE + 1_000_000


def episode_seed(base_seed: int, index: int) -> int:
    """The env seed of the ``index``-th episode of a collection run with ``--seed base_seed``."""
    state = np.random.SeedSequence([base_seed, index]).generate_state(1, np.uint32)
    return int(state[0]) & 0x7FFFFFFF


def eval_seed(index: int) -> int:
    """The ``index``-th evaluation seed (disjoint from every data seed)."""
    return EVAL_SEED_BASE + index


def policy_rng(seed: int) -> np.random.Generator:
    """The behaviour policy's random stream for the episode with env seed ``seed``."""
    return np.random.default_rng([seed, 0x5EED])


def tier_rng(seed: int) -> np.random.Generator:
    """The stream a tier draws its per-episode choices from (e.g. the replay tier's epsilon)."""
    return np.random.default_rng([seed, 0x71E5])


@cache
def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a trajectory (recorded in every episode)."""
    out = {}
    for name in ("llmca-data", "numpy", "gymnasium", "lbforaging", "rware"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Episode:
    """One episode; step arrays have a leading time axis of length T."""

    env_id: str
    seed: int
    policy_id: str
    tier: str
    obs: np.ndarray  # [T, N, obs_dim] float32, before the action of step t
    state: np.ndarray  # [T, state_dim] float32
    action: np.ndarray  # [T, N] int16
    action_mask: np.ndarray  # [T, N, A] bool
    reward_env: np.ndarray  # [T, N] float32
    cost: np.ndarray  # [T, N] float32
    terminated: np.ndarray  # [T] bool, only the last step may be true
    truncated: np.ndarray  # [T] bool, only the last step may be true
    final_obs: np.ndarray  # [N, obs_dim] observation after the last step
    final_state: np.ndarray  # [state_dim]
    final_action_mask: np.ndarray  # [N, A]
    success: bool
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    episode_id: int = -1
    """The dataset id once stored (-1 for a freshly played episode)."""

    @property
    def length(self) -> int:
        return int(self.action.shape[0])

    @property
    def reward_team(self) -> np.ndarray:  # [T]
        out: np.ndarray = self.reward_env.sum(axis=1, dtype=np.float32)
        return out

    @property
    def return_team(self) -> float:
        return float(self.reward_env.sum(dtype=np.float64))


def run_episode(env: MultiAgentEnv, policy: Policy, seed: int, tier: str) -> Episode:
    """Play one episode of ``policy`` in ``env`` from ``env.reset(seed)``."""
    spec = env.spec
    rng = policy_rng(seed)
    n, cap = spec.n_agents, spec.max_steps
    obs = np.empty((cap, n, spec.obs_dim), np.float32)
    state = np.empty((cap, spec.state_dim), np.float32)
    action = np.empty((cap, n), np.int16)
    mask = np.empty((cap, n, spec.n_actions), np.bool_)
    reward = np.empty((cap, n), np.float32)
    cost = np.empty((cap, n), np.float32)
    o = env.reset(seed)
    policy.reset(env, rng)
    info: dict[str, Any] = {}
    t = 0
    terminated = truncated = False
    while not (terminated or truncated):
        if t == cap:
            raise RuntimeError(f"{spec.env_id}: no episode end after max_steps={cap} steps")
        obs[t] = o
        state[t] = env.state()
        mask[t] = env.action_mask()
        a = policy.act(env, rng)
        action[t] = a
        o, reward[t], cost[t], terminated, truncated, info = env.step(a)
        t += 1
    ends = np.zeros(t, np.bool_)
    term, trunc = ends.copy(), ends.copy()
    term[-1], trunc[-1] = terminated, truncated
    return Episode(
        env_id=spec.env_id,
        seed=seed,
        policy_id=policy.policy_id,
        tier=tier,
        obs=obs[:t].copy(),
        state=state[:t].copy(),
        action=action[:t].copy(),
        action_mask=mask[:t].copy(),
        reward_env=reward[:t].copy(),
        cost=cost[:t].copy(),
        terminated=term,
        truncated=trunc,
        final_obs=np.asarray(o, np.float32).copy(),
        final_state=env.state().copy(),
        final_action_mask=env.action_mask().copy(),
        success=bool(info.get("success", terminated)),
        env_kwargs=dict(spec.kwargs),
        versions=package_versions(),
    )


def replay_iter(episode: Episode, env: MultiAgentEnv | None = None) -> Iterator[tuple[int, MultiAgentEnv]]:
    """Re-simulate ``episode``, yielding ``(t, env)`` with ``env`` just before the action of step t.

    The caller may snapshot/restore ``env`` while handling a step (critics do), but must leave it
    restored before resuming the iterator. After each logged action the recomputed observation and
    rewards are compared with the stored ones.

    Raises:
        ReplayMismatchError: the env does not reproduce the stored episode.
    """
    env = env if env is not None else make_env(episode.env_id, **episode.env_kwargs)
    obs = env.reset(episode.seed)
    _check(episode, 0, obs, episode.obs[0], "observation")
    for t in range(episode.length):
        yield t, env
        step = env.step(episode.action[t])
        expected = episode.obs[t + 1] if t + 1 < episode.length else episode.final_obs
        _check(episode, t + 1, step.obs, expected, "observation")
        _check(episode, t, step.reward_env, episode.reward_env[t], "reward_env")


def replay(episode: Episode, env: MultiAgentEnv | None = None) -> None:
    """Re-simulate ``episode`` completely; raises ``ReplayMismatchError`` on any difference."""
    for _ in replay_iter(episode, env):
        pass


def _check(episode: Episode, t: int, got: np.ndarray, want: np.ndarray, what: str) -> None:
    got = np.asarray(got, np.float32)
    if got.shape == want.shape and np.array_equal(got, want):
        return
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
    installed = package_versions()
    changed = {k: (v, installed.get(k)) for k, v in episode.versions.items() if installed.get(k) != v}
    hint = (
        f"recorded vs installed versions differ: {json.dumps(changed)}; install the recorded versions"
        if changed
        else "the stored data or the environment code was changed; re-collect this episode"
    )
    raise ReplayMismatchError(
        f"replay of {episode.env_id} seed {episode.seed}: {what} at step {t} differs from the stored one "
        f"(max abs diff {diff:.3g}); {hint}"
    )
