"""Behaviour cloning (``bc``) and return-filtered BC (``filtered-bc``): imitate the dataset's actions.

Input: a dataset directory (or Hub repo id), one env id and some of its tiers. Output: a run
directory (``config.json``, ``model.safetensors``, ``metrics.jsonl``) whose policy
``load_policy`` rebuilds. Rewards are ignored: BC learns ``pi(a_i | o_i, i)`` by masked
cross-entropy, so it is only as good as the tiers it is given (use ``expert``).

``filtered-bc`` is the strong simple reference of offline RL ("%BC"): the same loss on the top
``top_fraction`` of episodes ranked by team return, ties broken by the shorter episode (reaching
the same return sooner), then by episode order; so on mixed data it imitates the best
behaviour only. The episodes kept and their lowest return go into
``config.json`` (``kept_episodes``, ``return_threshold``).

Example::

    from llmca_data.baselines.bc import BCConfig, train_bc
    from llmca_data.baselines.policy import load_policy

    run = train_bc("data/llmca", "lbf-8x8-2p-2f", ["expert"], Path("runs/bc"), BCConfig(steps=500))
    policy = load_policy(run)
    action = policy.act(obs, mask)  # [N]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmca_data.config import bounded

from .device import resolve_device
from .networks import AgentNet, GreedyPolicy, greedy_loader, masked_fill_illegal, net_tensors
from .policy import register, save_run
from .training import (
    MAX_WIDTH,
    Progress,
    TrainConfig,
    load_data,
    online_evaluator,
    run_config,
    train_loop,
)

ALGO = "bc"
FILTERED_ALGO = "filtered-bc"


@dataclass(frozen=True)
class BCConfig(TrainConfig):
    """Behaviour-cloning hyperparameters (the shared ``TrainConfig`` fields plus these)."""

    hidden: tuple[int, ...] = bounded((256, 256), low=1, high=MAX_WIDTH)
    """Hidden layer sizes (wider than the Q-learners': measured on LBF expert + medium data, 3,000
    steps, 256-256 scored 45.5 greedy / 71.5 sampled where 128-128 scored 32.9 / 57.4)."""
    weight_decay: float = bounded(0.0, low=0.0)
    """L2 penalty on the network weights, added to the loss (0 disables it)."""
    rnn_hidden: int = bounded(0, low=0, high=MAX_WIDTH)
    """> 0: a GRU of this width over each agent's observation history (for partial observations
    such as RWARE's local view); minibatches are then ``batch_size`` whole episodes."""


@dataclass(frozen=True)
class FilteredBCConfig(BCConfig):
    """Return-filtered BC: ``BCConfig`` plus the fraction of best episodes to imitate."""

    top_fraction: float = bounded(0.25, low=0.0, high=1.0, open_low=True)
    """Keep the ceil(top_fraction × episodes) episodes with the highest team return."""


def bc_loss(
    net: AgentNet, batch: dict[str, torch.Tensor], weight_decay: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked cross-entropy of the data actions: illegal actions get no probability.

    Returns:
        The scalar loss and ``{"accuracy": ...}`` (greedy action == data action, over all agents).
    """
    logits = masked_fill_illegal(net(batch["obs"]), batch["action_mask"])  # [B, N, A] or [B, T, N, A]
    n_actions = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, n_actions), batch["action"].reshape(-1), reduction="none")  # [B*(T)*N]
    hit = (logits.argmax(-1) == batch["action"]).float().reshape(-1)  # [B*(T)*N]
    if "mask" in batch:  # whole episodes through the GRU: padding after an episode's end counts for nothing
        real = batch["mask"].unsqueeze(-1).expand(batch["action"].shape).reshape(-1).float()  # [B*T*N]
        count = real.sum().clamp(min=1.0)
        loss, accuracy = (ce * real).sum() / count, float((hit * real).sum() / count)
    else:
        loss, accuracy = ce.mean(), float(hit.mean())
    if weight_decay > 0:
        loss = loss + weight_decay * sum((p**2).sum() for p in net.parameters())
    return loss, {"accuracy": accuracy}


def top_episodes(data: dict[str, torch.Tensor], fraction: float) -> tuple[dict[str, torch.Tensor], float]:
    """The transitions of the best ``fraction`` of episodes by team return (ties: shorter first), and
    the lowest return kept.

    ``data`` holds transitions [M, ...] in episode order with the team reward in ``reward[:, 0]``,
    or whole episodes [S, T, ...] with ``mask`` (one row each, as the GRU variant loads them).
    """
    if "mask" in data:
        ep = data["episode_id"][:, 0]  # [S]
        row_return = (data["reward"][..., 0] * data["mask"]).double().sum(1)  # [S]
    else:
        ep, row_return = data["episode_id"], data["reward"][:, 0].double()  # [M], [M]
    ids, index = torch.unique_consecutive(ep, return_inverse=True)  # [E], [M] or [S]
    returns = torch.zeros(ids.numel(), dtype=torch.float64, device=ep.device)
    returns.index_add_(0, index, row_return)  # [E] team return per episode
    steps = data["mask"].sum(1) if "mask" in data else torch.ones_like(ep)  # [S] or [M]
    lengths = torch.zeros(ids.numel(), dtype=torch.long, device=ep.device).index_add_(0, index, steps.long())  # [E]
    n_keep = max(1, math.ceil(fraction * ids.numel()))
    by_length = torch.sort(lengths, stable=True).indices  # [E]: shorter first, then episode order
    order = by_length[torch.sort(returns[by_length], descending=True, stable=True).indices][:n_keep]  # [K]
    keep = torch.zeros(ids.numel(), dtype=torch.bool, device=ep.device)
    keep[order] = True
    rows = keep[index]  # [M] or [S]
    return {k: v[rows] for k, v in data.items()}, float(returns[order].min())


def _episodes(data: dict[str, torch.Tensor]) -> int:
    """Episodes in transitions [M] or in whole-episode rows [S, T] (whose padding is not an episode)."""
    ep = data["episode_id"][:, 0] if "mask" in data else data["episode_id"]
    return int(torch.unique(ep).numel())


def fit_bc(
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: BCConfig,
    progress: Progress | None = None,
) -> tuple[Path, GreedyPolicy]:
    """Train on resident transition tensors and write the run directory; returns it and the policy.

    A ``FilteredBCConfig`` first keeps the best episodes (``top_episodes``), as ``filtered-bc``.
    """
    torch.manual_seed(config.seed)
    algo = ALGO
    if isinstance(config, FilteredBCConfig):
        algo = FILTERED_ALGO
        total = _episodes(data)
        data, threshold = top_episodes(data, config.top_fraction)
        info = {**info, "return_threshold": threshold, "episodes_total": total, "kept_episodes": _episodes(data)}
    body = run_config(algo, data, config, info)
    net = AgentNet(body["obs_dim"], body["n_agents"], body["n_actions"], config.hidden, rnn_hidden=config.rnn_hidden)
    net = net.to(data["obs"].device)
    evaluate = online_evaluator(algo, net, info, config)
    loss = lambda b: bc_loss(net, b, config.weight_decay)  # noqa: E731
    train_loop(loss, list(net.parameters()), data, config, out_dir, progress, evaluate=evaluate)
    save_run(out_dir, body, net_tensors(net))
    return out_dir, GreedyPolicy(algo, net, str(data["obs"].device))


def train_bc(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    out_dir: Path,
    config: BCConfig,
    progress: Progress | None = None,
) -> Path:
    """Behaviour-clone ``env_id`` (``tiers``) of a dataset into the run directory ``out_dir``
    (with a ``FilteredBCConfig``: only its best episodes, as ``filtered-bc``)."""
    device = resolve_device(config.device)
    data, info = load_data(dataset_path, env_id, tiers, "team", device, sequences=config.rnn_hidden > 0)
    info["reward"] = None  # BC ignores rewards
    return fit_bc(data, info, Path(out_dir), config, progress)[0]


register(ALGO)(greedy_loader(ALGO))
register(FILTERED_ALGO)(greedy_loader(FILTERED_ALGO))
