"""Online evaluation of trained policies in the real environment (DESIGN.md §8, protocol v2).

Input: a ``DecentralisedPolicy`` (or a run directory, rebuilt with ``load_policy``), an env id
and its kwargs. Output: a dict of return, normalised score, cost, success and frozen episodes
over fixed evaluation seeds ``eval_seed(seed_offset + i)`` — all >= 2**31, so disjoint from
every data seed, and (from offset 0) far from the periodic-validation seeds at
``PERIODIC_EVAL_OFFSET`` — and, for a run directory, ``eval.json`` written atomically next to
the weights.

Execution is decentralised: each step the policy sees the observations ``[N, obs_dim]`` and
the env's action mask ``[N, A]``, and must return one action per agent. The final checkpoint
is evaluated (there is no "best" checkpoint).

Protocol v2 (``PROTOCOL_VERSION``): 100 episodes by default; value-based learners act greedily;
the BC family (``SAMPLING_ALGOS``) may also act by sampling from the softmax of its legal
logits (``act="sample"``), each draw seeded by the episode's seed; every result records
``protocol``, ``act``, ``frozen_episodes`` (see ``FROZEN_STEPS``) and, for a run, ``diverged``
(read from its ``metrics.jsonl``).

Example::

    from llmca_data.baselines.evaluate import EvalConfig, RandomPolicy, evaluate_policy, evaluate_run

    result = evaluate_policy(RandomPolicy(n_agents=2, seed=0), "lbf-8x8-2p-2f", {}, EvalConfig(episodes=5))
    result["normalized_score"]                       # ~0 for a random policy
    evaluate_run(Path("runs/bc-0"), EvalConfig(act="sample"))   # also writes eval.json
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast, get_args

import numpy as np

from llmca_data.envs import MultiAgentEnv, make_env
from llmca_data.errors import LlmcaError
from llmca_data.policies.base import random_legal_actions
from llmca_data.reference import normalized_score
from llmca_data.rollout import eval_seed

from .device import resolve_device
from .policy import RUN_EVAL, RUN_METRICS, DecentralisedPolicy, RunError, load_config, load_policy
from .registry import ALGORITHMS, Act

PROTOCOL_VERSION = 2
"""Evaluation protocol (DESIGN.md §8) recorded as ``protocol`` in results; results without it are protocol 1."""
ACT_MODES: tuple[Act, ...] = get_args(Act)
SAMPLING_ALGOS = frozenset(algo for algo, spec in ALGORITHMS.items() if "sample" in spec.acts)
"""Algorithm ids (the BC family, from the registry) whose policies may act by sampling; every other
one acts greedily."""
FROZEN_STEPS = 10
"""An episode is frozen once no agent's position or held item changed for this many consecutive steps."""


class ActModeError(LlmcaError, ValueError):
    """An act mode the policy cannot use (e.g. ``sample`` for a value-based learner)."""


def as_act(value: str) -> Act:
    """``value`` checked as an act mode (``greedy`` | ``sample``).

    Raises:
        ActModeError: any other value.
    """
    if value not in ACT_MODES:
        raise ActModeError(f"unknown act mode {value!r}; use one of {', '.join(ACT_MODES)}")
    return value


@dataclass(frozen=True)
class EvalConfig:
    """How many evaluation episodes to play, from which evaluation seed index on, and how to act."""

    episodes: int = 100
    """Protocol v2: at least 100 per seed (per-episode std ≈ 0.4 makes 20 episodes ±12 points)."""
    seed_offset: int = 0
    """Episode i is played from ``eval_seed(seed_offset + i)``."""
    epsilon: float = 0.0
    """Probability that each agent's action is replaced by a uniformly random legal one (0: the
    policy itself). The draws are seeded by the episode's seed, so results reproduce."""
    act: Act = "greedy"
    """``greedy``: the policy's ``act``; ``sample``: draw from the softmax over legal logits
    (``SAMPLING_ALGOS`` only), seeded by the episode's seed."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"evaluation needs at least one episode, got {self.episodes}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.seed_offset < 0:
            raise ValueError(f"seed_offset must be >= 0, got {self.seed_offset}")
        as_act(self.act)

    @property
    def seeds(self) -> list[int]:
        """The env seeds of the episodes, in order: ``eval_seed(seed_offset + i)``."""
        return [eval_seed(self.seed_offset + i) for i in range(self.episodes)]


class SamplingPolicy(DecentralisedPolicy, Protocol):
    """A ``DecentralisedPolicy`` that can also act stochastically (the BC family)."""

    def act_sampled(self, obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each agent's action drawn from its legal-action distribution: [N, obs_dim], [N, A] → int64 [N]."""
        ...


def sampling_policy(policy: DecentralisedPolicy) -> SamplingPolicy:
    """``policy`` as a ``SamplingPolicy``.

    Raises:
        ActModeError: ``policy.algo`` is not in ``SAMPLING_ALGOS`` (value-based learners act
            greedily under protocol v2), or the policy has no ``act_sampled``.
    """
    if policy.algo not in SAMPLING_ALGOS:
        raise ActModeError(
            f"{policy.algo!r} policies act greedily under evaluation protocol v{PROTOCOL_VERSION} (value-based "
            f"learners take their best action); use --act greedy. Sampling is for {', '.join(sorted(SAMPLING_ALGOS))}"
        )
    if not callable(getattr(policy, "act_sampled", None)):
        raise ActModeError(f"{policy.algo!r} policy {type(policy).__name__} cannot sample; use --act greedy")
    return cast(SamplingPolicy, policy)


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


def agent_signature(env: MultiAgentEnv) -> tuple[tuple[tuple[int, ...], Any], ...]:
    """What frozen-episode detection compares: each agent's ``(pos, carrying)`` from ``env.describe()``.

    Time, direction, level, disabled counters and exogenous things (debris) are left out.
    """
    return tuple((tuple(a["pos"]), a.get("carrying")) for a in env.describe()["agents"])


@dataclass
class _Episode:
    """What one evaluation episode adds to the result."""

    ret: float
    cost: float
    success: bool
    frozen: bool
    illegal: int


def _play(
    env: MultiAgentEnv, policy: DecentralisedPolicy, sampler: SamplingPolicy | None, seed: int, cfg: EvalConfig
) -> _Episode:
    """One episode from ``env.reset(seed)``; epsilon and sampling draws come from streams seeded by ``seed``."""
    spec = env.spec
    reset = getattr(policy, "reset", None)  # recurrent policies forget their state per episode
    if callable(reset):
        reset()
    obs = env.reset(seed)  # [N, obs_dim]
    explore = np.random.default_rng([seed, 0xE95])
    draws = np.random.default_rng([seed, 0x5A3F])
    last, still, frozen = agent_signature(env), 0, False
    ret = cost = 0.0
    illegal = steps = 0
    terminated = truncated = False
    info: dict[str, Any] = {}
    while not (terminated or truncated):
        if steps == spec.max_steps:
            raise RuntimeError(f"{spec.env_id}: no episode end after max_steps={spec.max_steps} steps")
        mask = env.action_mask()  # [N, A] bool
        o = np.asarray(obs, np.float32)  # [N, obs_dim]
        raw = policy.act(o, mask) if sampler is None else sampler.act_sampled(o, mask, draws)
        action = np.asarray(raw, np.int64)  # [N]
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
        if not frozen:  # once frozen, describe() is not needed any more
            now = agent_signature(env)
            still = still + 1 if now == last else 0
            last, frozen = now, still >= FROZEN_STEPS
    return _Episode(ret, cost, bool(info.get("success", terminated)), frozen, illegal)


def evaluate_policy(
    policy: DecentralisedPolicy,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` out in ``make_env(env_id, **env_kwargs)`` on the evaluation seeds.

    Returns:
        ``env_id``, ``protocol`` (``PROTOCOL_VERSION``), ``act``, ``episodes``, ``seeds``,
        ``mean_return``/``std_return`` (team return, i.e. the sum of every agent's env reward),
        ``normalized_score`` (of ``mean_return``; None for an env without reference returns),
        ``mean_cost`` (summed over agents and steps), ``success_rate``, ``frozen_episodes``
        (episodes where no agent's position or held item changed for ``FROZEN_STEPS``
        consecutive steps), the per-episode ``returns``/``costs``/``successes``/``frozen`` and
        ``illegal_actions`` (actions outside the mask, which the env plays as no-ops).

    Raises:
        ActModeError: ``act="sample"`` for a policy outside ``SAMPLING_ALGOS``.
        ValueError: the policy returned a joint action of the wrong shape.
        RuntimeError: an episode did not end within the env's ``max_steps``.
    """
    cfg = config or EvalConfig()
    sampler = sampling_policy(policy) if cfg.act == "sample" else None
    env = make_env(env_id, **(env_kwargs or {}))
    seeds = cfg.seeds
    episodes = [_play(env, policy, sampler, seed, cfg) for seed in seeds]
    returns = [e.ret for e in episodes]
    mean_return = float(np.mean(returns))
    try:
        score: float | None = normalized_score(env_id, mean_return)
    except KeyError:
        score = None
    frozen = [e.frozen for e in episodes]
    return {
        "env_id": env_id,
        "protocol": PROTOCOL_VERSION,
        "act": cfg.act,
        "episodes": cfg.episodes,
        "seeds": seeds,
        "mean_return": mean_return,
        "std_return": float(np.std(returns)),
        "normalized_score": score,
        "mean_cost": float(np.mean([e.cost for e in episodes])),
        "success_rate": float(np.mean([e.success for e in episodes])),
        "frozen_episodes": int(sum(frozen)),
        "returns": returns,
        "costs": [e.cost for e in episodes],
        "successes": [e.success for e in episodes],
        "frozen": frozen,
        "illegal_actions": sum(e.illegal for e in episodes),
    }


def run_diverged(run_dir: Path) -> bool:
    """Whether the last row of the run's ``metrics.jsonl`` (the evaluated, final checkpoint) says
    ``"diverged": true``; False without the file or the key.

    Q-learners log ``diverged`` on every row (mean Q on dataset actions above 1.5 × the largest
    discounted return-to-go of the training data); other runs never do. Unparseable lines are skipped.
    """
    path = Path(run_dir) / RUN_METRICS
    if not path.is_file():
        return False
    last: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            last = row
    return last.get("diverged") is True


def evaluate_run(run_dir: Path, config: EvalConfig | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate the final checkpoint of ``run_dir`` and write its ``eval.json`` atomically.

    On CPU torch runs one thread: the per-step forward passes are tiny, and several threads
    on a busy machine make evaluation many times slower (measured: 16 min → 1 min).

    The env id and kwargs come from the run's ``config.json``; the result also names the
    ``algo``, the ``eval_config`` used and whether training ``diverged`` (``run_diverged``).

    Raises:
        RunError: the run directory is incomplete, names an unknown algorithm or has no env id.
        ActModeError: ``act="sample"`` for a run outside ``SAMPLING_ALGOS``.
    """
    run_dir = Path(run_dir)
    cfg = config or EvalConfig()
    run_config = load_config(run_dir)
    if "env_id" not in run_config:
        raise RunError(f"{run_dir}/config.json has no 'env_id'")
    policy = load_policy(run_dir, resolve_device(device))
    result = evaluate_policy(policy, str(run_config["env_id"]), dict(run_config.get("env_kwargs", {})), cfg)
    result = {"algo": run_config.get("algo"), "eval_config": asdict(cfg), **result, "diverged": run_diverged(run_dir)}
    tmp = run_dir / f".{RUN_EVAL}.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / RUN_EVAL)
    return result
