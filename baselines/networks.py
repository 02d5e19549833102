"""The agent network and the pieces every baseline's loss and policy share.

Input: observation tensors ``obs`` [..., N, obs_dim] (optionally with a time axis for the GRU
variant, and LLM-TACA task ids), legal-action masks [..., N, A]. Output: per-agent action
values, masked argmaxes, Double-DQN next values, the CQL penalty, Polyak updates, the greedy
``DecentralisedPolicy`` (which can also sample from legal logits) and the safetensors naming of
the weights.

One ``AgentNet`` is shared by all agents: agent i sees ``[obs_i, onehot(i)]`` (plus its task
one-hot) only, so its greedy action depends on nothing but its own observation history, its
legal actions and its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .policy import DecentralisedPolicy, Loader

ILLEGAL = -1e9
"""Value given to illegal actions before an argmax / softmax (finite, so 0 * ILLEGAL stays 0)."""


class AgentNet(nn.Module):
    """Shared by all agents: ``[obs_i, onehot(i), onehot(task_i)]`` → one value (logit or Q) per action.

    ``n_tasks`` > 0 adds an LLM-TACA task input; task −1 (or no ``task`` at all, as at
    evaluation) is the all-zero vector, so a policy trained with task dropout runs without it.
    ``rnn_hidden`` > 0 puts a GRU of that width between the MLP encoder and the output layer:
    inputs then carry a time axis (``obs`` [B, T, N, obs_dim]) and each agent's hidden state
    runs over its own observations only; ``step`` advances it by one step when acting.
    """

    def __init__(
        self,
        obs_dim: int,
        n_agents: int,
        n_actions: int,
        hidden: Sequence[int],
        n_tasks: int = 0,
        rnn_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.n_agents, self.n_actions = obs_dim, n_agents, n_actions
        self.n_tasks, self.rnn_hidden = n_tasks, rnn_hidden
        layers: list[nn.Module] = []
        width = obs_dim + n_agents + n_tasks
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        if rnn_hidden:
            self.gru = nn.GRU(width, rnn_hidden, batch_first=True)
            self.head = nn.Linear(rnn_hidden, n_actions)
        else:
            layers.append(nn.Linear(width, n_actions))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)

    def _inputs(self, obs: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """``[obs, agent id one-hot, task one-hot]`` [..., N, obs_dim + N + K]."""
        ids = self.get_buffer("agent_ids").expand(*obs.shape[:-1], self.n_agents)  # [..., N, N]
        parts = [obs, ids]
        if self.n_tasks:
            if task is None:
                parts.append(obs.new_zeros(*obs.shape[:-1], self.n_tasks))  # [..., N, K]
            else:
                onehot = F.one_hot(task.clamp(min=0), self.n_tasks).to(obs.dtype)  # [..., N, K]
                parts.append(onehot * (task >= 0).unsqueeze(-1).to(obs.dtype))
        return torch.cat(parts, dim=-1)

    def forward(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``obs`` [..., N, obs_dim], ``task`` int64 [..., N] (−1 = none) → values [..., N, A].

        With a GRU, ``obs`` is [B, T, N, obs_dim] and every sequence starts from a zero state.
        """
        x: torch.Tensor = self.mlp(self._inputs(obs, task))  # [..., N, A] or [B, T, N, W]
        if not self.rnn_hidden:
            return x
        return self._recur(x, None)[0]

    def _recur(self, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU over time per agent: ``x`` [B, T, N, W], ``h`` [1, B*N, H] → values [B, T, N, A], state."""
        b, t, n, w = x.shape
        out, h = self.gru(x.transpose(1, 2).reshape(b * n, t, w), h)  # [B*N, T, H]
        q: torch.Tensor = self.head(out).reshape(b, n, t, self.n_actions).transpose(1, 2)  # [B, T, N, A]
        return q, h

    def step(self, obs: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One acting step: ``obs`` [N, obs_dim] and the state (None at an episode's start) → [N, A], state."""
        x = self.mlp(self._inputs(obs, None))  # [N, W] or [N, A]
        if not self.rnn_hidden:
            return x, None
        q, h = self._recur(x[None, None], h)  # [1, 1, N, A]
        return q[0, 0], h


def masked_fill_illegal(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` [..., A] with illegal actions (``mask`` False) set to ``ILLEGAL``."""
    return values.masked_fill(~mask, ILLEGAL)


def masked_argmax(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the best legal action: ``values``/``mask`` [..., A] → int64 [...]."""
    return masked_fill_illegal(values, mask).argmax(dim=-1)


def double_q_next(
    online: AgentNet,
    target: AgentNet,
    next_obs: torch.Tensor,
    next_mask: torch.Tensor,
    next_task: torch.Tensor | None = None,
) -> torch.Tensor:
    """Double-DQN next values: ``target`` evaluates the online net's best legal action → [B, N]."""
    with torch.no_grad():
        best = masked_argmax(online(next_obs, next_task), next_mask)  # [B, N]
        out: torch.Tensor = target(next_obs, next_task).gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [B, N]
        return out


def cql_penalty(q: torch.Tensor, mask: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Per-agent CQL term ``logsumexp_{legal a} Q(o, a) - Q(o, a_data)``, averaged → scalar."""
    lse = torch.logsumexp(masked_fill_illegal(q, mask), dim=-1)  # [B, N]
    q_data = q.gather(-1, action.unsqueeze(-1)).squeeze(-1)  # [B, N]
    return (lse - q_data).mean()


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging ``target ← (1 - tau) target + tau online`` (tau = 1 copies)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)


def sample_legal(logits: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per agent drawn from the softmax of its legal logits: [N, A], bool [N, A] → int64 [N].

    Illegal actions have probability exactly 0; an agent without a legal action gets 0 (as the
    greedy rule does). Draws one ``rng.random()`` per agent, so a seeded ``rng`` reproduces.
    """
    mask = np.asarray(mask, np.bool_)
    z = np.where(mask, np.asarray(logits, np.float64), -np.inf)  # [N, A]
    top = np.max(z, axis=1, keepdims=True)  # [N, 1]
    p = np.where(mask, np.exp(z - np.where(np.isfinite(top), top, 0.0)), 0.0)  # [N, A] unnormalised
    cdf = np.cumsum(p, axis=1)  # [N, A]
    u = rng.random(mask.shape[0]) * cdf[:, -1]  # [N]
    above = cdf > u[:, None]  # [N, A]: the first True is a legal action (p > 0 there)
    last_legal = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)  # [N] (rounding guard)
    out = np.where(above.any(axis=1), np.argmax(above, axis=1), last_legal)
    return np.where(mask.any(axis=1), out, 0).astype(np.int64)


class GreedyPolicy:
    """``DecentralisedPolicy``: each agent takes the masked argmax of the shared net on its own obs + id
    (and, for a GRU net, its own observation history since ``reset``).

    ``act_sampled`` instead draws from the softmax of the legal outputs: meaningful when they are
    logits (BC family); evaluation refuses it for Q-learners, which act greedily.
    """

    def __init__(self, algo: str, net: AgentNet, device: str = "cpu") -> None:
        self.algo = algo
        self.n_agents = net.n_agents
        self.net = net.to(device).eval()
        self.device = device
        self._state: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the recurrent state: call at the start of every episode."""
        self._state = None

    def _step(self, obs: np.ndarray) -> torch.Tensor:
        """The net's outputs for one acting step (advancing the GRU state): [N, obs_dim] → [N, A]."""
        with torch.no_grad():
            o = torch.tensor(np.asarray(obs, np.float32), device=self.device)  # [N, obs_dim]
            values, self._state = self.net.step(o, self._state)  # [N, A]
            return values

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``obs`` float32 [N, obs_dim], ``mask`` bool [N, A] → int64 [N]."""
        values = self._step(obs)  # [N, A]
        m = torch.tensor(np.asarray(mask, np.bool_), device=self.device)  # [N, A]
        return masked_argmax(values, m).cpu().numpy().astype(np.int64)

    def act_sampled(self, obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each agent's action drawn from softmax over its legal logits (``sample_legal``) → int64 [N]."""
        return sample_legal(self._step(obs).cpu().numpy(), mask, rng)


class TaskDropout:
    """LLM-TACA task input dropout whose probability ramps linearly from 0 to 1.

    ``p`` reaches 1 at step ``end_fraction * total_steps`` and stays there, so the final policy
    is trained (and evaluated) without the task, as it must act in the real env. A dropped task
    is −1 (the zero one-hot) for that agent in both the step and its successor.
    """

    def __init__(self, total_steps: int, end_fraction: float) -> None:
        if not 0 < end_fraction <= 1:
            raise ValueError(f"task dropout must reach 1 within training: end fraction in (0, 1], got {end_fraction}")
        self.end_step = max(1.0, end_fraction * total_steps)
        self.p = 0.0

    def update(self, step: int) -> None:
        """Set ``p`` for the next update (``step`` updates done)."""
        self.p = min(1.0, step / self.end_step)

    def apply(self, task: torch.Tensor, next_task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``task``/``next_task`` int64 [B, N] with each (sample, agent) dropped with probability ``p``."""
        drop = torch.rand(task.shape, device=task.device) < self.p  # [B, N]
        return task.masked_fill(drop, -1), next_task.masked_fill(drop, -1)


def task_inputs(
    batch: dict[str, torch.Tensor], dropout: TaskDropout | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``batch``'s ``task``/``next_task`` after ``dropout`` (each [B, ..., N]); (None, None) without a task input."""
    if dropout is None:
        return None, None
    return dropout.apply(batch["task"], batch["next_task"])


NET_PREFIX = "agent_net."
"""Safetensors names of the shared network: ``agent_net.<state_dict key>``."""


def net_tensors(net: AgentNet) -> dict[str, torch.Tensor]:
    """The network's weights under ``NET_PREFIX`` names, for ``save_run``."""
    return {NET_PREFIX + k: v for k, v in net.state_dict().items()}


def load_agent_net(config: dict[str, Any], tensors: dict[str, Any], device: str) -> AgentNet:
    """Rebuild the shared ``AgentNet`` of a run from ``config.json`` and its safetensors weights."""
    n_tasks, rnn_hidden = int(config.get("n_tasks", 0)), int(config.get("rnn_hidden", 0))
    net = AgentNet(
        int(config["obs_dim"]), int(config["n_agents"]), int(config["n_actions"]), config["hidden"], n_tasks, rnn_hidden
    )
    state = {k.removeprefix(NET_PREFIX): v for k, v in tensors.items() if k.startswith(NET_PREFIX)}
    net.load_state_dict(state, strict=True)
    return net.to(device)


def greedy_loader(algo: str) -> Loader:
    """The ``load_policy`` loader of ``algo`` runs whose policy is greedy over the shared ``AgentNet``
    (``bc``, the Q-learners, ``ddqn-online``; QMIX's mixer is not needed to act)."""

    def load(config: dict[str, Any], tensors: dict[str, Any], device: str) -> DecentralisedPolicy:
        return GreedyPolicy(algo, load_agent_net(config, tensors, device), device)

    return load
