"""Online evaluation of trained policies in the real environment (DESIGN.md §8).

Input: a ``DecentralisedPolicy`` (or a run directory, rebuilt with ``load_policy``), an env id
and its kwargs. Output: a dict of return, normalised score, cost and success over fixed
evaluation seeds ``eval_seed(seed_offset + i)`` — all >= 2**31, so disjoint from every data
seed — and, for a run directory, ``eval.json`` written atomically next to the weights.

Execution is decentralised: each step the policy sees the observations ``[N, obs_dim]`` and
the env's action mask ``[N, A]``, and must return one action per agent. The final checkpoint
is evaluated (there is no "best" checkpoint).

Example::

    from llmca_data.baselines.evaluate import EvalConfig, RandomPolicy, evaluate_policy, evaluate_run

    result = evaluate_policy(RandomPolicy(n_agents=2, seed=0), "lbf-8x8-2p-2f", {}, EvalConfig(episodes=5))
    result["normalized_score"]                       # ~0 for a random policy
    evaluate_run(Path("runs/iql-cql-0"), EvalConfig(episodes=20))   # also writes eval.json
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmca_data.envs import make_env
from llmca_data.policies.base import random_legal_actions
from llmca_data.reference import normalized_score
from llmca_data.rollout import eval_seed

from .policy import RUN_EVAL, DecentralisedPolicy, RunError, load_config, load_policy
from .training import resolve_device


@dataclass(frozen=True)
class EvalConfig:
    """How many evaluation episodes to play, and from which evaluation seed index on."""

    episodes: int = 20
    seed_offset: int = 0
    """Episode i is played from ``eval_seed(seed_offset + i)``."""
    epsilon: float = 0.0
    """Probability that each agent's action is replaced by a uniformly random legal one (0: the
    greedy policy itself). The draws are seeded by the episode's seed, so results reproduce."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"evaluation needs at least one episode, got {self.episodes}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.seed_offset < 0:
            raise ValueError(f"seed_offset must be >= 0, got {self.seed_offset}")


class RandomPolicy:
    """Uniform over each agent's legal actions (a seeded ``DecentralisedPolicy``).

    A reference point for baselines and a stand-in policy in tests. Agents draw independently
    from one ``numpy`` generator seeded with ``seed``.
    """

    algo = "random"

    def __init__(self, n_agents: int, seed: int = 0) -> None:
        self.n_agents = n_agents
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One uniformly drawn legal action per agent: ``obs`` [N, D], ``mask`` [N, A] → int64 [N]."""
        if obs.shape[0] != self.n_agents or mask.shape[0] != self.n_agents:
            raise ValueError(f"expected {self.n_agents} agents, got obs {obs.shape} and mask {mask.shape}")
        out = np.empty(self.n_agents, np.int64)  # [N]
        for i in range(self.n_agents):
            legal = np.flatnonzero(mask[i])  # [L]
            out[i] = int(self._rng.choice(legal)) if legal.size else 0
        return out


def evaluate_policy(
    policy: DecentralisedPolicy,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` out in ``make_env(env_id, **env_kwargs)`` on the evaluation seeds.

    Returns:
        ``env_id``, ``episodes``, ``seeds``, ``mean_return``/``std_return`` (team return, i.e. the
        sum of every agent's env reward), ``normalized_score`` (of ``mean_return``; None for an env
        without reference returns), ``mean_cost`` (summed over agents and steps),
        ``success_rate``, the per-episode ``returns``/``costs``/``successes`` and
        ``illegal_actions`` (actions outside the mask, which the env plays as no-ops).

    Raises:
        ValueError: the policy returned a joint action of the wrong shape.
        RuntimeError: an episode did not end within the env's ``max_steps``.
    """
    cfg = config or EvalConfig()
    env = make_env(env_id, **(env_kwargs or {}))
    spec = env.spec
    seeds = [eval_seed(cfg.seed_offset + i) for i in range(cfg.episodes)]
    returns: list[float] = []
    costs: list[float] = []
    successes: list[bool] = []
    illegal = 0
    reset = getattr(policy, "reset", None)  # recurrent policies forget their state per episode
    for seed in seeds:
        if callable(reset):
            reset()
        obs = env.reset(seed)  # [N, obs_dim]
        explore = np.random.default_rng([seed, 0xE95])
        ret = cost = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        steps = 0
        while not (terminated or truncated):
            if steps == spec.max_steps:
                raise RuntimeError(f"{env_id}: no episode end after max_steps={spec.max_steps} steps")
            mask = env.action_mask()  # [N, A] bool
            action = np.asarray(policy.act(np.asarray(obs, np.float32), mask), np.int64)  # [N]
            if action.shape != (spec.n_agents,):
                raise ValueError(f"{policy.algo}: act returned shape {action.shape}, expected ({spec.n_agents},)")
            if cfg.epsilon > 0:
                swap = explore.random(spec.n_agents) < cfg.epsilon  # [N]
                action = np.where(swap, random_legal_actions(mask, explore), action)
            illegal += int((~mask[np.arange(spec.n_agents), np.clip(action, 0, spec.n_actions - 1)]).sum())
            obs, reward, step_cost, terminated, truncated, info = env.step(action)
            ret += float(np.sum(reward, dtype=np.float64))
            cost += float(np.sum(step_cost, dtype=np.float64))
            steps += 1
        returns.append(ret)
        costs.append(cost)
        successes.append(bool(info.get("success", terminated)))
    mean_return = float(np.mean(returns))
    try:
        score: float | None = normalized_score(env_id, mean_return)
    except KeyError:
        score = None
    return {
        "env_id": env_id,
        "episodes": cfg.episodes,
        "seeds": seeds,
        "mean_return": mean_return,
        "std_return": float(np.std(returns)),
        "normalized_score": score,
        "mean_cost": float(np.mean(costs)),
        "success_rate": float(np.mean(successes)),
        "returns": returns,
        "costs": costs,
        "successes": successes,
        "illegal_actions": illegal,
    }


def evaluate_run(run_dir: Path, config: EvalConfig | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate the final checkpoint of ``run_dir`` and write its ``eval.json`` atomically.

    On CPU torch runs one thread: the per-step forward passes are tiny, and several threads
    on a busy machine make evaluation many times slower (measured: 16 min → 1 min).

    The env id and kwargs come from the run's ``config.json``; the result also names the
    ``algo`` and the ``eval_config`` used.

    Raises:
        RunError: the run directory is incomplete, names an unknown algorithm or has no env id.
    """
    run_dir = Path(run_dir)
    cfg = config or EvalConfig()
    run_config = load_config(run_dir)
    if "env_id" not in run_config:
        raise RunError(f"{run_dir}/config.json has no 'env_id'")
    policy = load_policy(run_dir, resolve_device(device))
    result = evaluate_policy(policy, str(run_config["env_id"]), dict(run_config.get("env_kwargs", {})), cfg)
    result = {"algo": run_config.get("algo"), "eval_config": asdict(cfg), **result}
    tmp = run_dir / f".{RUN_EVAL}.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / RUN_EVAL)
    return result
