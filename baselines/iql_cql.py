"""Independent Q-learning with a conservative penalty (``iql-cql``; not Implicit Q-Learning).

Input: a dataset directory (or Hub repo id), one env id, some tiers and a reward source:
``team`` (every agent gets ``reward_team``), ``env`` (per-agent env reward) or
``credit_<critic>`` (per-agent credits, e.g. LLM-MCA's). Output: a run directory
(``config.json``, ``model.safetensors``, ``metrics.jsonl``).

Every agent learns its own Q_i(o_i, ·) through one shared network (agent-id one-hot). Agent
i's TD target uses its *own* reward column::

    y_i = r_i + gamma * (1 - terminated) * Q'_i(o'_i, argmax_{legal a} Q_i(o'_i, a))   (Double DQN)
    loss = mean_i (Q_i(o_i, a_i) - y_i)^2
         + cql_alpha * mean_i [logsumexp_{legal a} Q_i(o_i, a) - Q_i(o_i, a_i)]

``rnn_hidden`` > 0 adds a GRU over each agent's own observation history (trained on whole
episodes, ``recurrent_iql_cql_loss``); the policy keeps one hidden state per agent.

LLM-TACA (``task_input="llm-taca"``): agent i's assigned task (one-hot) is appended to its
input and dropped with a probability ramped linearly to 1 (``TaskDropout``), so the final
policy acts without it.

Only ``terminated`` stops bootstrapping: a time-limit truncation bootstraps from ``next_obs``.
Credits may be put on the team reward's scale first (``credit_scale``: per step or per
episode). Rewards are scaled by ``reward_scale``; the target network is updated every ``target_period``
steps (rate ``tau``); a divergence guard marks runs whose Q leaves the data's return range
(``q_learning.py``).

Example::

    from llmca_data.baselines.iql_cql import IQLCQLConfig, train_iql_cql

    run = train_iql_cql("data/llmca", "lbf-8x8-2p-2f", None, Path("runs/iql"),
                        IQLCQLConfig(reward="credit_llm_mca"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmca_data.config import bounded
from llmca_data.loaders.arrays import CreditScale, check_credit_scale

from .device import resolve_device
from .networks import (
    AgentNet,
    GreedyPolicy,
    TaskDropout,
    cql_penalty,
    double_q_next,
    greedy_loader,
    masked_argmax,
    masked_fill_illegal,
    task_inputs,
)
from .policy import register
from .q_learning import QConfig, QNets, fit_q_learner
from .training import MAX_WIDTH, Progress, load_data

ALGO = "iql-cql"


@dataclass(frozen=True)
class IQLCQLConfig(QConfig):
    """Independent Q-learning + CQL hyperparameters (the shared ``QConfig`` fields plus these)."""

    reward: str = "team"
    """``team``, ``env`` or ``credit_<critic>``: the per-agent reward column agent i learns from."""
    credit_scale: CreditScale = "none"
    """How the ``reward`` column is put on the team reward's scale when loaded
    (``OfflineDataset.transitions``): ``none`` (as stored), ``step`` (each step's agents sum to
    ``reward_team``; unrewarded steps get 0) or ``episode`` (each episode's credits sum to its
    return, one factor per episode, so credit for steps that lead to reward survives)."""
    task_input: str | None = None
    """LLM-TACA: a task critic (``llm-taca``) whose task, one-hot, is appended to each agent's input."""
    task_dropout_end: float = bounded(0.8, low=0.0, high=1.0, open_low=True)
    """Fraction of training at which the task input's dropout probability (linear from 0) reaches 1."""
    rnn_hidden: int = bounded(0, low=0, high=MAX_WIDTH)
    """> 0: a GRU of this width over each agent's observation history; minibatches are then
    ``batch_size`` whole episodes instead of transitions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_credit_scale(self.credit_scale)


def td_targets(
    batch: dict[str, torch.Tensor],
    online: AgentNet,
    target: AgentNet,
    gamma: float,
    next_task: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-agent Double-DQN targets ``y`` [B, N]; column i uses only agent i's reward ``reward[:, i]``."""
    q_next = double_q_next(online, target, batch["next_obs"], batch["next_action_mask"], next_task)  # [B, N]
    not_done = (~batch["terminated"]).float().unsqueeze(-1)  # [B, 1]: truncation bootstraps
    # --- per-agent credit enters here: reward[:, i] is agent i's own team share / env reward / credit
    reward = batch["reward"]  # [B, N]
    return reward + gamma * not_done * q_next  # [B, N]


def iql_cql_loss(
    batch: dict[str, torch.Tensor],
    nets: QNets,
    config: IQLCQLConfig,
    dropout: TaskDropout | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD loss of every agent against its own target, plus the per-agent CQL penalty.

    With a task input (``batch["task"]`` and a ``dropout`` schedule) each agent's task is
    dropped with the schedule's current probability before both Q evaluations.
    """
    task, next_task = task_inputs(batch, dropout)  # [B, N] each, or None
    extras: dict[str, float] = {} if dropout is None else {"task_dropout": dropout.p}
    q = nets.online(batch["obs"], task)  # [B, N, A]
    q_data = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # [B, N]
    y = td_targets(batch, nets.online, nets.target, config.gamma, next_task)  # [B, N]
    td = F.mse_loss(q_data, y)
    cql = cql_penalty(q, batch["action_mask"], batch["action"])
    extras.update(td_loss=td.item(), cql=cql.item(), q_mean=q_data.mean().item())
    return td + config.cql_alpha * cql, extras


def recurrent_iql_cql_loss(
    batch: dict[str, torch.Tensor],
    nets: QNets,
    config: IQLCQLConfig,
    dropout: TaskDropout | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``iql_cql_loss`` over whole episodes through the GRU (``batch`` [B, T, ...], ``mask`` [B, T]).

    The net runs once over ``o_0 … o_T`` (``obs[:, 0]`` then every ``next_obs``), so step t's
    Q comes from the state after ``o_0 … o_t`` and its target from the state after ``o_{t+1}``;
    padding after an episode's end is masked out of both terms.
    """
    task, next_task = task_inputs(batch, dropout)  # [B, T, N] each, or None
    extras: dict[str, float] = {} if dropout is None else {"task_dropout": dropout.p}
    obs = torch.cat([batch["obs"][:, :1], batch["next_obs"]], dim=1)  # [B, T+1, N, obs_dim]
    tasks = None if task is None or next_task is None else torch.cat([task[:, :1], next_task], dim=1)  # [B, T+1, N]
    q_all = nets.online(obs, tasks)  # [B, T+1, N, A]
    q = q_all[:, :-1]  # [B, T, N, A]
    with torch.no_grad():
        best = masked_argmax(q_all[:, 1:], batch["next_action_mask"])  # [B, T, N]
        q_next = nets.target(obs, tasks)[:, 1:].gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [B, T, N]
    not_done = (~batch["terminated"]).float().unsqueeze(-1)  # [B, T, 1]: truncation bootstraps
    y = batch["reward"] + config.gamma * not_done * q_next  # [B, T, N]: agent i's own reward
    q_data = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # [B, T, N]
    real = batch["mask"].unsqueeze(-1).expand_as(q_data).float()  # [B, T, N]
    count = real.sum().clamp(min=1.0)
    td = ((q_data - y) ** 2 * real).sum() / count
    lse = torch.logsumexp(masked_fill_illegal(q, batch["action_mask"]), dim=-1)  # [B, T, N]
    cql = ((lse - q_data) * real).sum() / count
    q_mean = (q_data * real).sum() / count
    extras.update(td_loss=td.item(), cql=cql.item(), q_mean=q_mean.item())
    return td + config.cql_alpha * cql, extras


def fit_iql_cql(
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: IQLCQLConfig,
    progress: Progress | None = None,
) -> tuple[Path, GreedyPolicy]:
    """Train on resident transition tensors (``reward`` already chosen; ``task``/``next_task``
    present when ``config.task_input`` is set; whole episodes [S, T, ...] with ``mask`` when
    ``config.rnn_hidden`` > 0) and write the run directory."""
    if config.rnn_hidden and "mask" not in data:
        raise ValueError("rnn_hidden > 0 trains on whole episodes: load them with load_data(..., sequences=True)")
    if config.task_input is not None and "task" not in data:
        raise ValueError(f"task_input={config.task_input!r} needs 'task'/'next_task' tensors in the data")
    dropout = TaskDropout(config.steps, config.task_dropout_end) if config.task_input is not None else None
    loss = recurrent_iql_cql_loss if config.rnn_hidden else iql_cql_loss
    return fit_q_learner(
        ALGO,
        data if dropout is not None else {k: v for k, v in data.items() if k not in ("task", "next_task")},
        info,
        out_dir,
        config,
        lambda b, nets: loss(b, nets, config, dropout),
        progress,
        on_step=None if dropout is None else dropout.update,
    )


def train_iql_cql(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    out_dir: Path,
    config: IQLCQLConfig,
    progress: Progress | None = None,
) -> Path:
    """Independent Q-learning + CQL on ``env_id`` (``tiers``) with reward source ``config.reward``
    (scaled as ``config.credit_scale`` says)."""
    device = resolve_device(config.device)
    data, info = load_data(dataset_path, env_id, tiers, config.reward, device, config.task_input,
                           config.rnn_hidden > 0, config.credit_scale, config.team_reward)  # fmt: skip
    return fit_iql_cql(data, info, Path(out_dir), config, progress)[0]


register(ALGO)(greedy_loader(ALGO))
