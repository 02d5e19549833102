"""The training plumbing every offline baseline shares: typed configs, data on the device, the loop.

Input: a dataset (directory or Hub repo id), an env id, tiers and a reward source, turned into
resident tensors (``obs`` [M, N, obs_dim], ``action`` [M, N], ``reward`` [M, N], ... or whole
episodes [S, T, N, ...] for the GRU variant). Output: a run directory (``config.json``,
``model.safetensors``, ``metrics.jsonl``) and the rows logged: training loss, held-out
validation loss (episodes split off, never steps) and periodic returns in the real env.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import torch
from torch import nn

from llmca_data.loaders import OfflineDataset, sample_batch

from .networks import AgentNet, GreedyPolicy, net_tensors, soft_update
from .policy import RUN_METRICS, save_run


class Progress(Protocol):
    """``progress(step, total_steps, status)``, called at every logged step; ``status`` is a short
    line such as ``"loss 0.412 · eval return 0.83 (71)"``."""

    def __call__(self, done: int, total: int, status: str = "", /) -> None: ...


Evaluator = Callable[[], dict[str, float | None]]
"""Rolls the current policy out in the real env → ``{"eval_return", "eval_score"}``."""

PERIODIC_EVAL_OFFSET = 1_000_000
"""Evaluation seed index of the first periodic (during-training) episode: far from the final
evaluation's seeds ``eval_seed(0..)``, so training never looks at them."""

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
"""``loss_fn(batch) -> (scalar loss, extra metrics)``."""


class JsonConfig:
    """``to_dict``/``from_dict`` for the frozen dataclass configs saved in ``config.json``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples such as ``hidden`` as lists)."""
        out: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild from ``to_dict`` output or a run's ``config.json`` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in data.items() if k in names}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(int(h) for h in kwargs["hidden"])
        return cls(**kwargs)


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Hyperparameters every baseline shares (algorithms subclass it and add their own)."""

    steps: int = 2000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per minibatch (sampled uniformly with replacement)."""
    lr: float = 3e-4
    """Adam learning rate."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer sizes of the shared ``AgentNet`` MLP."""
    seed: int = 0
    """Seeds the network initialisation, the train/validation split and minibatch sampling."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; the whole dataset is resident there."""
    eval_every: int = 100
    """Log a ``metrics.jsonl`` row (with the validation loss) every this many steps."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for the validation loss (split by episode, never by step)."""
    eval_episodes: int = 5
    """Episodes of each periodic evaluation in the real env (0 turns it off)."""
    online_eval_every: int = 500
    """Roll the current greedy policy out every this many steps (and at the last step)."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available else ``cpu``; on CPU torch uses one thread."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    return device


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
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Whole dataset resident on ``device``, and the run facts for ``config.json``.

    Transitions [M, ...], or with ``sequences`` whole episodes [S, T = max_steps, ...] with a
    ``mask`` [S, T] (for the GRU variant); ``task``/``next_task`` when ``tasks`` names a task critic.
    """
    ds = OfflineDataset.open(dataset_path, env_id, tiers)
    if sequences:
        data = ds.sequences(ds.spec.max_steps, reward=reward, device=device, tasks=tasks)
    else:
        data = ds.transitions(reward=reward, device=device, tasks=tasks)
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


def fit_q_learner(
    algo: str,
    data: dict[str, torch.Tensor],
    info: dict[str, Any],
    out_dir: Path,
    config: Any,
    loss: Callable[[dict[str, torch.Tensor], AgentNet, AgentNet], tuple[torch.Tensor, dict[str, float]]],
    progress: Progress | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Path, GreedyPolicy]:
    """Plumbing shared by the Q-learners with one agent net: seed, online and Polyak-updated target
    nets, the train loop, the run directory. ``loss(batch, online, target)`` is the algorithm;
    ``on_step(step)`` runs after each update (e.g. a schedule)."""
    torch.manual_seed(config.seed)
    body = run_config(algo, data, config, info)
    device = data["obs"].device
    online = AgentNet(
        body["obs_dim"], body["n_agents"], body["n_actions"], config.hidden, body["n_tasks"], body.get("rnn_hidden", 0)
    )
    online = online.to(device)
    target = copy.deepcopy(online).requires_grad_(False)

    def after_step(step: int) -> None:
        soft_update(target, online, config.tau)
        if on_step is not None:
            on_step(step)

    train_loop(
        lambda b: loss(b, online, target),
        list(online.parameters()),
        data,
        config,
        out_dir,
        progress,
        after_step,
        online_evaluator(algo, online, info, config),
    )
    save_run(out_dir, body, net_tensors(online))
    return out_dir, GreedyPolicy(algo, online, str(device))


def train_loop(
    loss_fn: LossFn,
    params: Sequence[nn.Parameter],
    data: dict[str, torch.Tensor],
    config: TrainConfig,
    out_dir: Path,
    progress: Progress | None = None,
    after_step: Callable[[int], None] | None = None,
    evaluate: Evaluator | None = None,
) -> list[dict[str, float | None]]:
    """Adam on ``loss_fn`` over minibatches of the training episodes; logs ``out_dir/metrics.jsonl``.

    Every ``eval_every`` steps (and at the last) a row ``{"step", "loss", "val_loss", ..., "time_s"}``
    is written, ``val_loss`` (null without validation episodes) computed on up to 4096 held-out
    transitions. Every ``online_eval_every`` steps (and at the last) ``evaluate()`` adds
    ``eval_return``/``eval_score`` to the row. ``after_step(step)`` runs after each update (e.g.
    target-network updates). ``progress`` gets the loss and the last evaluation as its status.
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
    status = f"loss {row['loss']:.4g}"
    if last_eval:
        score = last_eval.get("eval_score")
        status += f" · eval return {last_eval['eval_return']:.3g}" + ("" if score is None else f" ({score:.0f})")
    progress(step, total, status)
