"""Monotonic value factorisation (QMIX) with a conservative penalty (``qmix-cql``).

Input: a dataset directory (or Hub repo id), one env id and some tiers. Output: a run
directory (``config.json``, ``model.safetensors``, ``metrics.jsonl``).

QMIX learns from the *team* reward only. The chosen per-agent values are mixed by a network
whose weights come from hypernetworks on the global ``state`` and are made non-negative
(``abs``), so ``Q_tot`` is monotonic in every ``Q_i`` and each agent's greedy action is
consistent with the joint greedy action. The hypernetworks see the state standardised with the
training data's mean and std (saved with the mixer): raw LBF states reach 7, which made the
untrained mixer's ``Q_tot`` about 13 for rewards of at most 1::

    Q_tot(s, o, a) = Mix_s(Q_1(o_1, a_1), ..., Q_N(o_N, a_N)),   dQ_tot / dQ_i >= 0
    y = r_team + gamma * (1 - terminated) * Mix'_{s'}(Q'_i(o'_i, argmax_{legal a} Q_i(o'_i, a)))   (Double DQN)
    loss = (Q_tot - y)^2 + cql_alpha * mean_i [logsumexp_{legal a} Q_i(o_i, a) - Q_i(o_i, a_i)]

Execution is decentralised: agent i acts greedily on its own Q_i (the mixer is needed only
for training, but is saved too, under ``mixer.*``). Truncated steps bootstrap; reward scale,
target updates (agent net and mixer) and the divergence guard (on Q_tot) are ``q_learning.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmca_data.config import bounded

from .device import resolve_device
from .networks import AgentNet, GreedyPolicy, cql_penalty, double_q_next, greedy_loader
from .policy import register
from .q_learning import MIXER_PREFIX, QConfig, QNets, fit_q_learner
from .training import MAX_WIDTH, Progress, load_data

ALGO = "qmix-cql"
__all__ = ["ALGO", "MIXER_PREFIX", "QMIXCQLConfig", "QMixer", "fit_qmix_cql", "qmix_cql_loss", "train_qmix_cql"]


@dataclass(frozen=True)
class QMIXCQLConfig(QConfig):
    """QMIX + CQL hyperparameters: the shared ``QConfig`` fields (``cql_alpha`` weighs the
    per-agent penalty; 0 gives plain offline QMIX) plus these."""

    mixer_hidden: int = bounded(32, low=1, high=MAX_WIDTH)
    """Width of the mixing network's hidden layer (and of its hypernetworks)."""


class QMixer(nn.Module):
    """Mixes per-agent values ``[B, N]`` into ``Q_tot`` ``[B]``, monotonically, conditioned on ``state``."""

    def __init__(self, n_agents: int, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.n_agents, self.state_dim, self.hidden = n_agents, state_dim, hidden
        self.hyper_w1 = nn.Linear(state_dim, n_agents * hidden)
        self.hyper_b1 = nn.Linear(state_dim, hidden)
        self.hyper_w2 = nn.Linear(state_dim, hidden)
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("state_mean", torch.zeros(state_dim))  # standardises the hypernetworks' input
        self.register_buffer("state_std", torch.ones(state_dim))

    def fit_state(self, states: torch.Tensor) -> QMixer:
        """Standardise the state input with the training data's statistics (``states`` [M, S]); returns self."""
        with torch.no_grad():
            self.get_buffer("state_mean").copy_(states.float().mean(0))
            self.get_buffer("state_std").copy_(states.float().std(0).clamp(min=1e-3))
        return self

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``q`` [B, N] chosen per-agent values, ``state`` [B, S] → ``Q_tot`` [B]."""
        b = q.shape[0]
        state = (state - self.get_buffer("state_mean")) / self.get_buffer("state_std")  # [B, S]
        w1 = self.hyper_w1(state).abs().view(b, self.n_agents, self.hidden)  # [B, N, H] >= 0
        b1 = self.hyper_b1(state).unsqueeze(1)  # [B, 1, H]
        h = F.elu(torch.bmm(q.unsqueeze(1), w1) + b1)  # [B, 1, H]
        w2 = self.hyper_w2(state).abs().unsqueeze(-1)  # [B, H, 1] >= 0
        v = self.hyper_b2(state)  # [B, 1]: state-dependent bias V(s)
        out: torch.Tensor = torch.bmm(h, w2).view(b, 1) + v  # [B, 1]
        return out.squeeze(-1)  # [B]


def qmix_targets(
    batch: dict[str, torch.Tensor],
    online: AgentNet,
    target: AgentNet,
    target_mixer: nn.Module,
    gamma: float,
) -> torch.Tensor:
    """Team Double-DQN target ``y`` [B]: the target mixer over the target net's values of the online argmax."""
    q_next = double_q_next(online, target, batch["next_obs"], batch["next_action_mask"])  # [B, N]
    with torch.no_grad():
        q_next_tot: torch.Tensor = target_mixer(q_next, batch["next_state"])  # [B]
    not_done = (~batch["terminated"]).float()  # [B]: truncation bootstraps
    r_team = batch["reward"][:, 0]  # [B]: loaded with reward="team", every column is reward_team
    return r_team + gamma * not_done * q_next_tot  # [B]


def qmix_cql_loss(
    batch: dict[str, torch.Tensor], nets: QNets, config: QMIXCQLConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD loss of the mixed ``Q_tot`` against the team target, plus the per-agent CQL penalty."""
    assert nets.mixer is not None and nets.target_mixer is not None  # fit_qmix_cql builds both
    q = nets.online(batch["obs"])  # [B, N, A]
    q_chosen = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # [B, N]
    q_tot = nets.mixer(q_chosen, batch["state"])  # [B]
    y = qmix_targets(batch, nets.online, nets.target, nets.target_mixer, config.gamma)  # [B]
    td = F.mse_loss(q_tot, y)
    cql = cql_penalty(q, batch["action_mask"], batch["action"])
    return td + config.cql_alpha * cql, {"td_loss": td.item(), "cql": cql.item(), "q_tot_mean": q_tot.mean().item()}


def fit_qmix_cql(
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: QMIXCQLConfig,
    progress: Progress | None = None,
) -> tuple[Path, GreedyPolicy]:
    """Train on resident transition tensors (team reward, global ``state``) and write the run directory."""
    return fit_q_learner(
        ALGO,
        data,
        info,
        out_dir,
        config,
        lambda b, nets: qmix_cql_loss(b, nets, config),
        progress,
        mixer=lambda body: QMixer(body["n_agents"], body["state_dim"], config.mixer_hidden).fit_state(data["state"]),
        q_tot=True,
    )


def train_qmix_cql(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    out_dir: Path,
    config: QMIXCQLConfig,
    progress: Progress | None = None,
) -> Path:
    """QMIX + CQL on ``env_id`` (``tiers``), always from the team reward (delayed if ``config.team_reward`` says so)."""
    device = resolve_device(config.device)
    data, info = load_data(dataset_path, env_id, tiers, "team", device, team_reward=config.team_reward)
    return fit_qmix_cql(data, info, Path(out_dir), config, progress)[0]


register(ALGO)(greedy_loader(ALGO))
