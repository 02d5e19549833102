"""What the offline Q-learners (``iql-cql``, ``vdn-cql``, ``qmix-cql``) share: config, guard, fit.

Input: resident training tensors (``reward`` [M, N] already chosen: team, env or a credit),
the run facts, a ``QConfig`` and the algorithm's loss. Output: a run directory
(``config.json`` with ``q_bound``/``q_limit``, ``model.safetensors``, ``metrics.jsonl`` whose
rows carry ``diverged``) and the greedy policy.

Stabilisers, all recorded in ``config.json``:

- **reward scale**: every reward is multiplied by ``reward_scale`` before training;
- **periodic target updates**: the target net (and target mixer) move towards the online one
  with rate ``tau`` every ``target_period`` steps (``tau = 1``: a hard copy);
- **divergence guard**: ``q_bound`` is the largest |discounted return-to-go| of the training
  data under the training reward, in the same scaled units (of the team reward for Q_tot);
  every ``metrics.jsonl`` row says whether the mean Q on dataset actions exceeds
  ``DIVERGENCE_FACTOR × q_bound`` in magnitude (``diverged``); the last row, the final
  checkpoint's, goes into ``eval.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmca_data.config import bounded
from llmca_data.loaders.arrays import TeamReward, check_team_reward

from .networks import AgentNet, GreedyPolicy, net_tensors, soft_update
from .policy import save_run
from .training import Progress, TrainConfig, online_evaluator, run_config, train_loop

DIVERGENCE_FACTOR = 1.5
"""A run whose |mean Q on dataset actions| exceeds this × ``q_bound`` is marked ``diverged``."""
MIN_BOUND = 1e-2
"""Floor of ``q_bound`` (in scaled reward units), so reward-free data does not flag noise around 0."""


@dataclass(frozen=True)
class QConfig(TrainConfig):
    """What the offline Q-learners add to ``TrainConfig``.

    The defaults come from the recorded sweep on validation seeds (``benchmarks/sweep_q.py``,
    BENCHMARKS.md "Q-learner sweep").
    """

    gamma: float = bounded(0.8, low=0.0, high=1.0)
    """Discount factor."""
    cql_alpha: float = bounded(0.1, low=0.0)
    """Weight of the conservative penalty (0 gives plain offline Double DQN). It is measured in
    (scaled) reward units, so it acts together with ``reward_scale``."""
    tau: float = bounded(1.0, low=0.0, high=1.0, open_low=True)
    """Rate of each target update (1.0 copies the online net)."""
    target_period: int = bounded(200, low=1)
    """Update the target net every this many gradient steps (with ``tau``)."""
    reward_scale: float = bounded(1.0, low=0.0, open_low=True)
    """Every reward is multiplied by this before training (Q-values are in scaled units)."""
    team_reward: TeamReward = "true"
    """What the learner sees of the team reward: ``true`` (every step's) or ``delayed`` (each
    episode's return at its last step; ``env`` and ``team`` rewards are moved there too, and
    credits must come from a critic that saw only that, e.g. ``shapley-delayed``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_team_reward(self.team_reward)


def q_bound(data: dict[str, torch.Tensor], gamma: float, team: bool = False) -> float:
    """The largest |discounted return-to-go| of the training data (the divergence guard's bound).

    ``data`` holds transitions [M, ...] in episode order (or whole episodes [S, T, ...] with
    ``mask``) and the training ``reward`` [..., N]; ``team`` bounds Q_tot instead, from
    ``reward[..., 0]`` (VDN/QMIX load the team reward into every column). A time-limit
    truncation ends the return there (the data's return, not a bootstrapped one).
    """
    reward = data["reward"].double().cpu().numpy()
    if team:
        reward = reward[..., :1]
    if "mask" in data:  # already whole episodes [S, T, N], zero-padded
        padded = reward * data["mask"].cpu().numpy()[..., None]
    else:  # transitions [M, N] in episode order → [E, T, N], zero-padded
        ep = data["episode_id"].cpu().numpy()  # [M]
        if ep.size == 0:
            return 0.0
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])  # [E]
        lengths = np.diff(np.r_[starts, ep.size])  # [E]
        row = np.repeat(np.arange(starts.size), lengths)  # [M] episode index
        col = np.arange(ep.size) - starts[row]  # [M] step within the episode
        padded = np.zeros((starts.size, int(lengths.max()), reward.shape[-1]))
        padded[row, col] = reward
    if padded.size == 0:
        return 0.0
    running = np.zeros_like(padded[:, 0])  # [E, N] discounted return-to-go from step t on
    largest = 0.0
    for t in range(padded.shape[1] - 1, -1, -1):
        running = padded[:, t] + gamma * running
        largest = max(largest, float(np.abs(running).max()))
    return largest


@dataclass
class QNets:
    """The modules a Q-learner's loss sees: the online/target agent nets and, for QMIX, mixers."""

    online: AgentNet
    target: AgentNet
    mixer: nn.Module | None = None
    target_mixer: nn.Module | None = None


QLoss = Callable[[dict[str, torch.Tensor], QNets], tuple[torch.Tensor, dict[str, float]]]
"""``loss(batch, nets) -> (scalar loss, extras)``; extras hold ``q_mean`` or ``q_tot_mean``."""

MIXER_PREFIX = "mixer."
"""Safetensors names of a mixing network: ``mixer.<state_dict key>``."""


def fit_q_learner(
    algo: str,
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: QConfig,
    loss: QLoss,
    progress: Progress | None = None,
    on_step: Callable[[int], None] | None = None,
    mixer: Callable[[dict[str, Any]], nn.Module] | None = None,
    q_tot: bool = False,
) -> tuple[Path, GreedyPolicy]:
    """Seed, scale rewards, build online and target nets, train with the guard, write the run.

    ``loss(batch, nets)`` is the algorithm; ``on_step(step)`` runs after each update (e.g. a
    schedule); ``mixer(body)`` builds a mixing network (QMIX); ``q_tot``: the loss reports the
    joint value (VDN/QMIX), so the guard bounds it by the team return.
    """
    torch.manual_seed(config.seed)
    data = {**data, "reward": data["reward"] * config.reward_scale}
    body = run_config(algo, data, config, info)
    if mixer is not None:
        body["state_dim"] = int(data["state"].shape[-1])
    body["q_bound"] = q_bound(data, config.gamma, team=q_tot)
    body["q_limit"] = DIVERGENCE_FACTOR * max(body["q_bound"], MIN_BOUND)
    device = data["obs"].device
    online = AgentNet(
        body["obs_dim"], body["n_agents"], body["n_actions"], config.hidden, body["n_tasks"], body.get("rnn_hidden", 0)
    ).to(device)
    nets = QNets(online, copy.deepcopy(online).requires_grad_(False))
    if mixer is not None:
        nets.mixer = mixer(body).to(device)
        nets.target_mixer = copy.deepcopy(nets.mixer).requires_grad_(False)
    params = [*online.parameters(), *([] if nets.mixer is None else nets.mixer.parameters())]

    def after_step(step: int) -> None:
        if step % config.target_period == 0:
            soft_update(nets.target, nets.online, config.tau)
            if nets.mixer is not None and nets.target_mixer is not None:
                soft_update(nets.target_mixer, nets.mixer, config.tau)
        if on_step is not None:
            on_step(step)

    evaluate = online_evaluator(algo, online, info, config)
    train_loop(lambda b: loss(b, nets), params, data, config, out_dir, progress, after_step, evaluate, body["q_limit"])
    tensors = net_tensors(online)
    if nets.mixer is not None:
        tensors.update({MIXER_PREFIX + k: v for k, v in nets.mixer.state_dict().items()})
    save_run(out_dir, body, tensors)
    return out_dir, GreedyPolicy(algo, online, str(device))
