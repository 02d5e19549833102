"""The learner and the acting side of ``ddqn-online``: independent Double DQN over one shared AgentNet.

Input: episodes with one reward per agent per step (a critic's credits, or the team reward),
and for LLM-TACA the assigned tasks. Output: Q-network updates, ε-greedy behaviour episodes
(``Episode`` objects played through ``run_episode``), greedy evaluations, and the loader that
``load_policy`` uses for ``ddqn-online`` run directories.

Agent i's TD target uses only its own reward column::

    y_i = r_i + gamma * (1 - terminated) * Q'_i(o'_i, argmax_{legal a} Q_i(o'_i, a))
    loss = mean_i Huber(Q_i(o_i, a_i) - y_i)
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from llmca_data.annotation.critic import CriticOutput
from llmca_data.envs.base import BoolArray, FloatArray, IntArray, MultiAgentEnv, Step
from llmca_data.loaders.arrays import check_credit_scale, check_team_reward, delay_to_episode_end, rescale_credits
from llmca_data.policies.base import random_legal_actions
from llmca_data.reference import REFERENCE_RETURNS, normalized_score
from llmca_data.rollout import Episode, eval_seed, run_episode

from .iql_cql import td_targets
from .networks import (
    AgentNet,
    TaskDropout,
    greedy_loader,
    masked_argmax,
    net_tensors,
    soft_update,
    task_inputs,
)
from .policy import register
from .replay_buffer import ReplayBuffer
from .training import PERIODIC_EVAL_OFFSET

if TYPE_CHECKING:
    from .online import OnlineConfig

ALGO = "ddqn-online"


class DoubleDQN:
    """Online and target ``AgentNet``, Adam, the replay buffer, the ε schedule and task dropout."""

    def __init__(self, env: MultiAgentEnv, config: OnlineConfig, device: str) -> None:
        spec = self.spec = env.spec
        self.config, self.device = config, device
        self.n_tasks = _n_tasks(env) if config.critic == "llm-taca" else 0
        torch.manual_seed(config.seed)
        self.online = AgentNet(spec.obs_dim, spec.n_agents, spec.n_actions, config.hidden, self.n_tasks).to(device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optim = torch.optim.Adam(self.online.parameters(), lr=config.lr)
        self.buffer = ReplayBuffer(config.buffer_size, spec.n_agents, spec.obs_dim, spec.n_actions, self.n_tasks > 0)
        self.rng = np.random.default_rng([config.seed, 0xDD0])
        self.dropout = TaskDropout(config.episodes, config.task_dropout_end) if self.n_tasks else None
        self.updates = 0

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"online": self.online, "target": self.target}

    def policy_tensors(self) -> dict[str, torch.Tensor]:
        """The weights ``model.safetensors`` holds (the online net, ``NET_PREFIX`` names)."""
        return net_tensors(self.online)

    def state(self) -> dict[str, Any]:
        """JSON-ready learner state beyond the tensors (update count, minibatch RNG)."""
        return {"updates": self.updates, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.rng.bit_generator.state = state["rng"]

    def epsilon(self, episode: int) -> float:
        """ε of the ``episode``-th episode: linear from ``eps_start`` to ``eps_end``, then constant."""
        cfg = self.config
        frac = min(1.0, episode / max(1.0, cfg.eps_fraction * cfg.episodes))
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    def set_progress(self, episodes_done: int) -> None:
        """Advance the task-dropout schedule (it reaches 1 at ``task_dropout_end`` of the episodes)."""
        if self.dropout is not None:
            self.dropout.update(episodes_done)

    def task_dropout(self) -> float | None:
        return None if self.dropout is None else self.dropout.p

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        task, next_task = task_inputs(batch, self.dropout)  # [B, N] each, or None
        q = self.online(batch["obs"], task)  # [B, N, A]
        q_data = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # [B, N]
        # --- per-agent credit enters here: batch["reward"][:, i] is agent i's own credit (or the team reward)
        y = td_targets(batch, self.online, self.target, self.config.gamma, next_task)  # [B, N]
        return F.smooth_l1_loss(q_data, y)

    def update(self, n: int) -> float | None:
        """``n`` gradient updates (none before ``learning_starts`` transitions); the mean loss."""
        cfg = self.config
        if n < 1 or len(self.buffer) < max(cfg.learning_starts, 1):
            return None
        total = torch.zeros((), device=self.device)
        for _ in range(n):
            loss = self.loss(self.buffer.sample(cfg.batch_size, self.rng, self.device))
            self.optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
            self.optim.step()
            self.updates += 1
            if self.updates % cfg.target_every == 0:
                soft_update(self.target, self.online, cfg.tau)
            total += loss.detach()
        return float(total) / n


def rewards_from(
    episode: Episode,
    output: CriticOutput | None,
    credit_scale: str = "none",
    team_reward: str = "true",
    critic_delayed: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Per-agent rewards ``[T, N]``, tasks ``[T, N]`` (or None) and whether the team reward was a fallback.

    No critic (``team``): every agent gets ``reward_team``. A failed annotation (any NaN) falls
    back to the same. ``credit_scale`` puts a critic's credits on the team reward's scale as the
    offline loaders do (``rescale_credits``): ``none`` keeps them, ``step`` makes each step sum to
    ``reward_team``, ``episode`` makes the episode's credits sum to its return with one factor.
    ``team_reward="delayed"``: the learner sees the episode's return at its last step only; the team
    reward is moved there, and so are the credits unless ``critic_delayed`` (the critic saw only the
    delayed reward: ``shapley-delayed``, ``llm-mca-shares-delayed``, ...); ``env`` thus gives each
    agent's episode total at the end.

    Raises:
        ConfigError: an unknown ``credit_scale`` or ``team_reward``.
    """
    check_credit_scale(credit_scale)
    delayed = check_team_reward(team_reward) == "delayed"
    last = np.zeros(episode.length, np.int64)  # [T] one episode
    reward_team = delay_to_episode_end(episode.reward_team[:, None], last)[:, 0] if delayed else episode.reward_team
    team = np.repeat(reward_team[:, None], episode.reward_env.shape[1], axis=1)  # [T, N]
    if output is None:
        return team, None, False
    if output.status == "failed" or not np.isfinite(output.credits).all():
        return team, None, True
    credits = output.credits.astype(np.float32)  # [T, N]
    if delayed and not critic_delayed:
        credits = delay_to_episode_end(credits, last)
    return rescale_credits(credits, reward_team, None, credit_scale), output.tasks, False


class _ObservedEnv:
    """A ``MultiAgentEnv`` view that remembers the observation it last returned."""

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env, self.spec = env, env.spec
        self.obs: FloatArray | None = None

    def reset(self, seed: int) -> FloatArray:
        self.obs = self.env.reset(seed)
        return self.obs

    def step(self, actions: npt.ArrayLike) -> Step:
        step = self.env.step(actions)
        self.obs = step.obs
        return step

    def action_mask(self) -> BoolArray:
        return self.env.action_mask()

    def state(self) -> FloatArray:
        return self.env.state()

    def snapshot(self) -> Any:
        return (self.env.snapshot(), self.obs)

    def restore(self, snap: Any) -> None:
        self.env.restore(snap[0])
        self.obs = snap[1]

    def describe(self) -> dict[str, Any]:
        return self.env.describe()


class GreedyAgents:
    """ε-greedy behaviour of the shared net: a ``Policy`` for ``run_episode`` that reads only each
    agent's own observation, legal actions and id (decentralised, never the task)."""

    def __init__(self, net: AgentNet, device: str, epsilon: float) -> None:
        self.net, self.device, self.epsilon = net, device, epsilon
        self.policy_id = f"{ALGO}/eps={epsilon:.2f}"
        self._env: _ObservedEnv | None = None

    def play(self, env: MultiAgentEnv, seed: int, tier: str) -> Episode:
        """One episode from ``env.reset(seed)`` (exploration draws from the episode's policy stream)."""
        self._env = _ObservedEnv(env)
        return run_episode(self._env, self, seed, tier)

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        return None

    def act(self, env: MultiAgentEnv, rng: np.random.Generator) -> IntArray:
        assert self._env is not None and self._env.obs is not None, "play() an episode; act() is called by it"
        mask = env.action_mask()  # [N, A]
        with torch.no_grad():
            obs = torch.tensor(self._env.obs, dtype=torch.float32, device=self.device)  # [N, obs_dim]
            greedy = masked_argmax(self.net(obs), torch.tensor(mask, device=self.device))  # [N]
        actions: IntArray = greedy.cpu().numpy().astype(np.int64)
        if self.epsilon > 0:
            explore = rng.random(actions.shape[0]) < self.epsilon  # [N]
            actions = np.where(explore, random_legal_actions(mask, rng), actions)
        return actions


def evaluate_greedy(learner: DoubleDQN, env: MultiAgentEnv, config: OnlineConfig) -> dict[str, Any]:
    """Greedy episodes on the periodic evaluation seeds → ``eval_return``, ``eval_score``, ``eval_cost``,
    ``eval_success``."""
    agents = GreedyAgents(learner.online, learner.device, 0.0)
    episodes = [agents.play(env, eval_seed(PERIODIC_EVAL_OFFSET + k), "eval") for k in range(config.eval_episodes)]
    mean = float(np.mean([e.return_team for e in episodes]))
    env_id = env.spec.env_id
    return {
        "eval_return": mean,
        "eval_score": normalized_score(env_id, mean) if env_id in REFERENCE_RETURNS else None,
        "eval_cost": float(np.mean([e.cost.sum() for e in episodes])),
        "eval_success": float(np.mean([e.success for e in episodes])),
    }


def _n_tasks(env: MultiAgentEnv) -> int:
    """LLM-TACA's task count for ``env`` (its foods, shelves or modules)."""
    from llmca_data.annotation.llm.prompt import n_task_targets

    env.reset(eval_seed(0))
    return int(n_task_targets(env.describe()))


register(ALGO)(greedy_loader(ALGO))
