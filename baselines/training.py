"""The training plumbing every offline baseline shares: typed configs, data on the device, the loop.

Input: a dataset (directory or Hub repo id), an env id, tiers and a reward source, turned into
resident tensors (``obs`` [M, N, obs_dim], ``action`` [M, N], ``reward`` [M, N], ... or whole
episodes [S, T, N, ...] for the GRU variant). Output: a run directory (``config.json``,
``model.safetensors``, ``metrics.jsonl``) and the rows logged: training loss, held-out
validation loss (episodes split off, never steps) and periodic returns in the real env.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llmca_data.config import JsonConfig, bounded
from llmca_data.loaders import OfflineDataset, sample_batch

from .networks import AgentNet, GreedyPolicy
from .policy import RUN_METRICS


class Progress(Protocol):
    """``progress(step, total_steps, status)``, called at every logged step; ``status`` is a short
    line such as ``"loss 0.412 · eval return 0.83 (71)"``."""

    def __call__(self, done: int, total: int, status: str = "", /) -> None: ...


Evaluator = Callable[[], dict[str, float | None]]
"""Rolls the current policy out in the real env → ``{"eval_return", "eval_score"}``."""

PERIODIC_EVAL_OFFSET = 1_000_000
"""Evaluation seed index of the first periodic (during-training) episode: far from the final
evaluation's seeds ``eval_seed(0..)``, so training never looks at them."""

GUARD_WARMUP = 0.1
"""Fraction of the gradient steps, at the start, that the divergence guard does not judge."""
MAX_WIDTH = 4096
"""Largest hidden width accepted (configs and leaderboard architectures alike)."""

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
"""``loss_fn(batch) -> (scalar loss, extra metrics)``."""


@dataclass(frozen=True)
class LearnerConfig(JsonConfig):
    """What every offline learner is given, ours and the d3rlpy runners alike (same names, same
    defaults, so that the two compare like for like)."""

    steps: int = bounded(2000, low=1)
    """Gradient steps (of each agent's learner, for the d3rlpy runners)."""
    batch_size: int = bounded(256, low=1)
    """Transitions per minibatch (sampled uniformly with replacement)."""
    lr: float = bounded(3e-4, low=0.0, open_low=True)
    """Adam learning rate (d3rlpy's own default is 6.25e-5)."""
    hidden: tuple[int, ...] = bounded((128, 128), low=1, high=MAX_WIDTH)
    """Hidden layer sizes of the MLP (``AgentNet``; d3rlpy's ``VectorEncoderFactory``)."""
    seed: int = bounded(0, low=0)
    """Seeds initialisation, the train/validation split and sampling (d3rlpy's agent i: seed + i)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; the whole dataset is resident there."""


@dataclass(frozen=True)
class TrainConfig(LearnerConfig):
    """Hyperparameters every torch baseline shares (algorithms subclass it and add their own)."""

    eval_every: int = bounded(100, low=1)
    """Log a ``metrics.jsonl`` row (with the validation loss) every this many steps."""
    val_fraction: float = bounded(0.1, low=0.0, high=0.9)
    """Fraction of episodes held out for the validation loss (split by episode, never by step)."""
    eval_episodes: int = bounded(5, low=0)
    """Episodes of each periodic evaluation in the real env (0 turns it off); they use validation
    seeds (``PERIODIC_EVAL_OFFSET`` on), never the final evaluation's."""
    online_eval_every: int = bounded(500, low=1)
    """Roll the current greedy policy out every this many steps (and at the last step)."""


def online_evaluator(algo: str, net: AgentNet, info: dict[str, Any], config: TrainConfig) -> Evaluator | None:
    """Periodic evaluation of ``net``'s greedy policy on ``info``'s env, or None when turned off."""
    if config.eval_episodes < 1:
        return None
    from .evaluate import EvalConfig, evaluate_policy

    eval_config = EvalConfig(episodes=config.eval_episodes, seed_offset=PERIODIC_EVAL_OFFSET)

    def evaluate() -> dict[str, float | None]:
        device = str(next(net.parameters()).device)
        result = evaluate_policy(GreedyPolicy(algo, net, device), info["env_id"], info.get("env_kwargs"), eval_config)
        net.train()
        return {"eval_return": result["mean_return"], "eval_score": result["normalized_score"]}

    return evaluate


def load_data(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    reward: str,
    device: str,
    tasks: str | None = None,
    sequences: bool = False,
    credit_scale: str = "none",
    team_reward: str = "true",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Whole dataset resident on ``device``, and the run facts for ``config.json``.

    Transitions [M, ...], or with ``sequences`` whole episodes [S, T = max_steps, ...] with a
    ``mask`` [S, T] (for the GRU variant); ``task``/``next_task`` when ``tasks`` names a task critic.
    ``credit_scale`` (``none``, ``step``, ``episode``) rescales the reward and ``team_reward``
    (``true``, ``delayed``) delays it, as ``transitions`` does.
    """
    ds = OfflineDataset.open(dataset_path, env_id, tiers)
    if sequences:
        data = ds.sequences(ds.spec.max_steps, reward, device, credit_scale, tasks, team_reward)
    else:
        data = ds.transitions(reward, device, credit_scale, tasks, team_reward)
    info = {
        "env_id": env_id,
        "env_kwargs": dict(ds.spec.kwargs),
        "tiers": list(ds.tiers),
        "dataset": str(dataset_path),
        "reward": reward,
    }
    return data, info


def run_config(algo: str, data: dict[str, torch.Tensor], config: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` body: algorithm, sizes read off the data, run facts and hyperparameters."""
    n, d = data["obs"].shape[-2:]  # [M, N, obs_dim] or [S, T, N, obs_dim]
    return {
        **info,
        **config.to_dict(),
        "algo": algo,
        "n_agents": int(n),
        "obs_dim": int(d),
        "n_actions": int(data["action_mask"].shape[-1]),
        "n_tasks": int(data["task"].max().clamp(min=0)) + 1 if "task" in data else 0,
    }


def split_episodes(
    data: dict[str, torch.Tensor], val_fraction: float, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Hold out whole episodes: (train, validation); validation is empty when there is one episode.

    Rows are transitions (``episode_id`` [M]) or whole episodes (``episode_id`` [S, T]).
    """
    ep = data["episode_id"] if data["episode_id"].dim() == 1 else data["episode_id"][:, 0]  # [M] or [S]
    ids = torch.unique(ep)  # [E]
    n_val = min(round(val_fraction * ids.numel()), ids.numel() - 1)
    if val_fraction > 0 and ids.numel() > 1:
        n_val = max(n_val, 1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ids.numel(), generator=gen).to(ids.device)
    is_val = torch.isin(ep, ids[perm[:n_val]])  # [M] or [S]
    return {k: v[~is_val] for k, v in data.items()}, {k: v[is_val] for k, v in data.items()}


def train_loop(
    loss_fn: LossFn,
    params: Sequence[nn.Parameter],
    data: dict[str, torch.Tensor],
    config: TrainConfig,
    out_dir: Path,
    progress: Progress | None = None,
    after_step: Callable[[int], None] | None = None,
    evaluate: Evaluator | None = None,
    q_limit: float | None = None,
) -> list[dict[str, float | None]]:
    """Adam on ``loss_fn`` over minibatches of the training episodes; logs ``out_dir/metrics.jsonl``.

    Every ``eval_every`` steps (and at the last) a row ``{"step", "loss", "val_loss", ..., "time_s"}``
    is written, ``val_loss`` (null without validation episodes) computed on up to 4096 held-out
    transitions. Every ``online_eval_every`` steps (and at the last) ``evaluate()`` adds
    ``eval_return``/``eval_score`` to the row. ``after_step(step)`` runs after each update (e.g.
    target-network updates). ``progress`` gets the loss and the last evaluation as its status.

    Divergence guard (Q-learners): with ``q_limit``, every row has ``diverged``: whether the mean Q
    on dataset actions (``q_tot_mean`` or ``q_mean`` of ``loss_fn``'s extras) exceeds ``q_limit``
    in magnitude at that step. The last row speaks for the final checkpoint (``eval.json``). The
    first ``GUARD_WARMUP`` of training is not judged: an untrained net's values say nothing yet.
    """
    train, val = split_episodes(data, config.val_fraction, config.seed)
    if train["obs"].shape[0] == 0:
        raise ValueError("no training transitions: the dataset is empty or val_fraction too large")
    device = train["obs"].device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    val_batch = sample_batch(val, 4096, gen) if val["obs"].shape[0] > 4096 else val
    optim = torch.optim.Adam(params, lr=config.lr)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, float | None]] = []
    last_eval: dict[str, float | None] = {}
    start = time.monotonic()
    with (out_dir / RUN_METRICS).open("w") as log:
        for step in range(1, config.steps + 1):
            loss, extras = loss_fn(sample_batch(train, config.batch_size, gen))
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optim.step()
            if after_step is not None:
                after_step(step)
            last = step == config.steps
            evaluate_now = evaluate is not None and (step % config.online_eval_every == 0 or last)
            if step % config.eval_every == 0 or last or evaluate_now:
                val_loss: float | None = None
                if val_batch["obs"].shape[0] > 0:
                    with torch.no_grad():
                        val_loss = float(loss_fn(val_batch)[0])
                row: dict[str, float | None] = {"step": step, "loss": float(loss.detach()), "val_loss": val_loss}
                row.update(extras)
                if q_limit is not None:
                    q_mean = extras.get("q_tot_mean", extras.get("q_mean"))
                    judged = step > GUARD_WARMUP * config.steps
                    row["diverged"] = judged and q_mean is not None and abs(q_mean) > q_limit
                if evaluate is not None and evaluate_now:
                    last_eval = evaluate()
                    row.update(last_eval)
                row["time_s"] = round(time.monotonic() - start, 3)
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                if progress is not None:
                    _report(progress, step, config.steps, row, last_eval)
    return rows


def _report(
    progress: Progress, step: int, total: int, row: dict[str, float | None], last_eval: dict[str, float | None]
) -> None:
    """Call ``progress`` with a ``loss … · eval return … (normalised score)`` status."""
    status = f"loss {row['loss']:.4g}" + (" · DIVERGED" if row.get("diverged") else "")
    if last_eval:
        score = last_eval.get("eval_score")
        status += f" · eval return {last_eval['eval_return']:.3g}" + ("" if score is None else f" ({score:.0f})")
    progress(step, total, status)
