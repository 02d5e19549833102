"""Value decomposition networks with a conservative penalty (``vdn-cql``).

Input: a dataset directory (or Hub repo id), one env id and some tiers. Output: a run
directory (``config.json``, ``model.safetensors``, ``metrics.jsonl``).

VDN learns from the *team* reward only and does its own implicit credit assignment through
the additive decomposition (no per-agent credit column is used)::

    Q_tot(o, a) = sum_i Q_i(o_i, a_i)
    y = r_team + gamma * (1 - terminated) * sum_i Q'_i(o'_i, argmax_{legal a} Q_i(o'_i, a))   (Double DQN)
    loss = (Q_tot - y)^2 + cql_alpha * mean_i [logsumexp_{legal a} Q_i(o_i, a) - Q_i(o_i, a_i)]

Execution is decentralised: agent i acts greedily on its own Q_i. Truncated steps bootstrap;
reward scale, target updates and the divergence guard (on Q_tot) are ``q_learning.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .device import resolve_device
from .networks import AgentNet, GreedyPolicy, cql_penalty, double_q_next, greedy_loader
from .policy import register
from .q_learning import QConfig, QNets, fit_q_learner
from .training import Progress, load_data

ALGO = "vdn-cql"


@dataclass(frozen=True)
class VDNCQLConfig(QConfig):
    """VDN + CQL hyperparameters: the shared ``QConfig`` fields (``cql_alpha`` weighs the per-agent
    penalty; 0 gives plain offline VDN)."""


def vdn_targets(batch: dict[str, torch.Tensor], online: AgentNet, target: AgentNet, gamma: float) -> torch.Tensor:
    """Team Double-DQN target ``y`` [B] of the summed Q-values (from the team reward)."""
    q_next_tot = double_q_next(online, target, batch["next_obs"], batch["next_action_mask"]).sum(-1)  # [B]
    not_done = (~batch["terminated"]).float()  # [B]: truncation bootstraps
    r_team = batch["reward"][:, 0]  # [B]: loaded with reward="team", every column is reward_team
    return r_team + gamma * not_done * q_next_tot  # [B]


def vdn_cql_loss(
    batch: dict[str, torch.Tensor], nets: QNets, config: VDNCQLConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD loss of ``Q_tot = sum_i Q_i`` against the team target, plus the per-agent CQL penalty."""
    q = nets.online(batch["obs"])  # [B, N, A]
    q_tot = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1).sum(-1)  # [B]
    y = vdn_targets(batch, nets.online, nets.target, config.gamma)  # [B]
    td = F.mse_loss(q_tot, y)
    cql = cql_penalty(q, batch["action_mask"], batch["action"])
    return td + config.cql_alpha * cql, {"td_loss": td.item(), "cql": cql.item(), "q_tot_mean": q_tot.mean().item()}


def fit_vdn_cql(
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: VDNCQLConfig,
    progress: Progress | None = None,
) -> tuple[Path, GreedyPolicy]:
    """Train on resident transition tensors (team reward) and write the run directory."""
    return fit_q_learner(
        ALGO, data, info, out_dir, config, lambda b, nets: vdn_cql_loss(b, nets, config), progress, q_tot=True
    )


def train_vdn_cql(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    out_dir: Path,
    config: VDNCQLConfig,
    progress: Progress | None = None,
) -> Path:
    """VDN + CQL on ``env_id`` (``tiers``), always from the team reward (delayed if ``config.team_reward`` says so)."""
    device = resolve_device(config.device)
    data, info = load_data(dataset_path, env_id, tiers, "team", device, team_reward=config.team_reward)
    return fit_vdn_cql(data, info, Path(out_dir), config, progress)[0]


register(ALGO)(greedy_loader(ALGO))
