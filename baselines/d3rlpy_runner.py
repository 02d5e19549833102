"""d3rlpy's discrete BC / CQL / BCQ as independent learners, saved without pickle (DESIGN.md §8).

Input: an env's tiers of a dataset. Each agent i gets its own d3rlpy algorithm, trained on
``OfflineDataset.to_d3rlpy(agent=i, reward=...)`` (its own observations, actions and reward;
the other agents are part of its environment). Output: a run directory with ``config.json``
(the d3rlpy config as a dict, sizes, env id/kwargs), ``model.safetensors`` holding every
agent's torch modules as ``agent{i}.<module>.<param>`` (e.g. ``agent0.q_funcs.0.fc.weight``),
and ``metrics.jsonl`` (one row per agent and epoch). No d3rlpy ``save``/``pickle`` is used:
the loaders rebuild each algorithm with ``create_impl`` and ``load_state_dict``.

d3rlpy knows no action masks: its greedy action may be illegal. ``D3rlpyPolicy.act`` scores
every action the way d3rlpy's greedy rule does (BC: imitator logits; CQL: expected Q; BCQ:
min-shifted Q over the actions the imitator finds likely enough) and takes the best *legal*
one, so with every action legal it returns exactly ``algo.predict``. Observation scalers are
not used (d3rlpy's default ``none``). Algorithm ids (CONTRACT): ``d3rlpy-bc``,
``d3rlpy-cql``, ``d3rlpy-bcq``.

Configured like ours (``D3rlpyConfig``): the same learning rate, batch, hidden sizes, γ, CQL
weight, reward scale and target-copy period as ``QConfig``'s defaults, so "ours vs d3rlpy" compares
implementations, not settings. What d3rlpy cannot match: action masks in training (its BC and
its Q targets range over every action) and Polyak target updates (it copies).

Example::

    run = train_d3rlpy("data/ds", "lbf-8x8-2p-2f", ["expert"], Path("runs/cql"), D3rlpyCQLConfig(steps=10_000))
    policy = load_policy(run)                    # D3rlpyPolicy
    actions = policy.act(obs, env.action_mask())  # [N] int64
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from llmca_data.config import bounded
from llmca_data.loaders import OfflineDataset
from llmca_data.loaders.arrays import CreditScale, check_credit_scale

from .device import resolve_device
from .networks import sample_legal
from .policy import RUN_METRICS, RunError, register, save_run
from .training import MAX_WIDTH, LearnerConfig

Progress = Callable[[int, int], None]
"""``progress(step, total_steps)``; steps count over all agents (``n_agents * steps`` in all)."""

LOG_EVERY = 1000
"""Largest d3rlpy epoch (steps per ``metrics.jsonl`` row and per ``progress`` call)."""


@dataclass(frozen=True)
class D3rlpyConfig(LearnerConfig):
    """Settings of a d3rlpy runner: ``LearnerConfig``'s, named and defaulted like our own
    baselines' (``TrainConfig``/``QConfig``); ``d3rlpy_params`` maps them to d3rlpy."""

    ALGO: ClassVar[str] = ""
    D3RLPY_CLASS: ClassVar[str] = ""
    """The d3rlpy config class (in ``d3rlpy.algos``) that builds the learners."""

    def d3rlpy_params(self) -> dict[str, Any]:
        """Keyword arguments of the d3rlpy config class (besides the encoder)."""
        return {"batch_size": self.batch_size, "learning_rate": self.lr}


@dataclass(frozen=True)
class D3rlpyBCConfig(D3rlpyConfig):
    """``d3rlpy-bc``: d3rlpy's ``DiscreteBC`` (it trains without action masks; acting masks them)."""

    ALGO: ClassVar[str] = "d3rlpy-bc"
    D3RLPY_CLASS: ClassVar[str] = "DiscreteBCConfig"
    hidden: tuple[int, ...] = bounded((256, 256), low=1, high=MAX_WIDTH)
    """Hidden layer sizes, as our ``bc``'s."""


@dataclass(frozen=True)
class D3rlpyQConfig(D3rlpyConfig):
    """The Q-learning runners' settings, defaulted like ``QConfig``. d3rlpy copies its target
    net every ``target_period`` steps (no Polyak rate) and learns from ``reward`` scaled by
    ``reward_scale`` (``MultiplyRewardScaler``)."""

    reward: str = "team"
    """``team``, ``env`` or ``credit_<critic>``: the reward column agent i learns from."""
    credit_scale: CreditScale = "none"
    """How the ``reward`` column is put on the team reward's scale when loaded
    (``OfflineDataset.to_d3rlpy``): ``none`` (as stored), ``step`` (each step's agents sum to
    ``reward_team``; unrewarded steps get 0) or ``episode`` (each episode's credits sum to its
    return, one factor per episode, so credit for steps that lead to reward survives)."""
    gamma: float = bounded(0.8, low=0.0, high=1.0)
    """Discount factor."""
    target_period: int = bounded(200, low=1)
    """Copy the target net every this many steps (d3rlpy's default is 8000)."""
    reward_scale: float = bounded(1.0, low=0.0, open_low=True)
    """Every reward is multiplied by this before training."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_credit_scale(self.credit_scale)

    def d3rlpy_params(self) -> dict[str, Any]:
        params = {**super().d3rlpy_params(), "gamma": self.gamma, "target_update_interval": self.target_period}
        if self.reward_scale != 1.0:
            from d3rlpy.preprocessing import MultiplyRewardScaler

            params["reward_scaler"] = MultiplyRewardScaler(self.reward_scale)
        return params


@dataclass(frozen=True)
class D3rlpyCQLConfig(D3rlpyQConfig):
    """``d3rlpy-cql``: d3rlpy's ``DiscreteCQL``."""

    ALGO: ClassVar[str] = "d3rlpy-cql"
    D3RLPY_CLASS: ClassVar[str] = "DiscreteCQLConfig"
    cql_alpha: float = bounded(0.1, low=0.0)
    """Weight of the conservative penalty (d3rlpy's ``alpha``; its default is 1.0)."""

    def d3rlpy_params(self) -> dict[str, Any]:
        return {**super().d3rlpy_params(), "alpha": self.cql_alpha}


@dataclass(frozen=True)
class D3rlpyBCQConfig(D3rlpyQConfig):
    """``d3rlpy-bcq``: d3rlpy's ``DiscreteBCQ``."""

    ALGO: ClassVar[str] = "d3rlpy-bcq"
    D3RLPY_CLASS: ClassVar[str] = "DiscreteBCQConfig"
    action_flexibility: float = bounded(0.3, low=0.0, high=1.0, open_low=True)
    """Actions whose imitator probability is below this × the likeliest one's are never chosen."""

    def d3rlpy_params(self) -> dict[str, Any]:
        return {**super().d3rlpy_params(), "action_flexibility": self.action_flexibility}


CONFIGS: dict[str, type[D3rlpyConfig]] = {c.ALGO: c for c in (D3rlpyBCConfig, D3rlpyCQLConfig, D3rlpyBCQConfig)}
"""Algorithm id → our config class."""
CONFIG_CLASSES: dict[str, str] = {algo: c.D3RLPY_CLASS for algo, c in CONFIGS.items()}
"""Algorithm id (CONTRACT) → the d3rlpy config class that builds it."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow d3rlpy's structlog lines (stdout) and legacy gym's import notice (stderr)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _d3rlpy() -> Any:
    with quiet():
        import d3rlpy
    return d3rlpy


def make_d3rlpy_config(config: D3rlpyConfig) -> Any:
    """The d3rlpy ``LearnableConfig`` of ``config``: its class, an MLP encoder of ``hidden`` and
    every parameter ``d3rlpy_params`` maps."""
    if not config.D3RLPY_CLASS:
        raise ValueError(f"{type(config).__name__} names no d3rlpy algorithm; use one of {', '.join(CONFIGS)}")
    d3rlpy = _d3rlpy()
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(config.hidden))
    return getattr(d3rlpy.algos, config.D3RLPY_CLASS)(encoder_factory=encoder, **config.d3rlpy_params())


def _epoch_steps(steps: int) -> int:
    """The largest divisor of ``steps`` not above ``LOG_EVERY`` (d3rlpy drops a partial epoch)."""
    return next(d for d in range(min(steps, LOG_EVERY), 0, -1) if steps % d == 0)


def fit_agents(
    config: D3rlpyConfig, dataset: OfflineDataset, progress: Progress | None = None
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Train one d3rlpy algorithm per agent for ``config.steps`` updates each; returns (algos, metric rows).

    Nothing is written to disk (``NoopAdapterFactory``) and d3rlpy's output is swallowed.
    Agent i is seeded with ``d3rlpy.seed(seed + i)`` (numpy, torch and cudnn determinism).
    """
    d3rlpy = _d3rlpy()
    from d3rlpy.logging import NoopAdapterFactory

    steps, reward = config.steps, getattr(config, "reward", "team")
    credit_scale = getattr(config, "credit_scale", "none")
    n_agents, per_epoch = dataset.spec.n_agents, _epoch_steps(steps)
    algos: list[Any] = []
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    for i in range(n_agents):
        mdp = dataset.to_d3rlpy(agent=i, reward=reward, credit_scale=credit_scale)
        d3rlpy.seed(config.seed + i)
        algo = make_d3rlpy_config(config).create(device=resolve_device(config.device))

        def on_epoch(_: Any, epoch: int, total: int, agent: int = i) -> None:
            if progress is not None:
                progress(agent * steps + total, n_agents * steps)

        with quiet():
            history = algo.fit(
                mdp,
                n_steps=steps,
                n_steps_per_epoch=per_epoch,
                logger_adapter=NoopAdapterFactory(),
                show_progress=False,
                save_interval=steps + 1,
                epoch_callback=on_epoch,
            )
        for epoch, metrics in history:
            row: dict[str, Any] = {"agent": i, "epoch": int(epoch), "step": int(epoch) * per_epoch}
            row.update({k: float(v) for k, v in metrics.items() if not k.startswith("time_")})
            row["time_s"] = round(time.monotonic() - start, 3)
            rows.append(row)
        algos.append(algo)
    return algos, rows


def agent_tensors(algos: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Every agent's torch modules as ``agent{i}.<module>.<param>`` (cloned: BCQ shares its encoder)."""
    out: dict[str, torch.Tensor] = {}
    for i, algo in enumerate(algos):
        for name, module in algo.impl.modules.get_torch_modules().items():
            for key, value in module.state_dict().items():
                out[f"agent{i}.{name}.{key}"] = value.detach().cpu().clone()
    return out


def save_d3rlpy_run(
    out_dir: Path, algo_id: str, algos: Sequence[Any], spec: Any, extra: dict[str, Any] | None = None
) -> None:
    """Write ``config.json`` + ``model.safetensors`` for trained ``algos`` of an env with ``spec``."""
    d3rlpy = _d3rlpy()
    body = {
        "algo": algo_id,
        "env_id": spec.env_id,
        "env_kwargs": dict(spec.kwargs),
        "n_agents": spec.n_agents,
        "obs_dim": spec.obs_dim,
        "n_actions": spec.n_actions,
        "d3rlpy_class": CONFIG_CLASSES[algo_id],
        "d3rlpy_config": json.loads(algos[0].config.serialize()),
        "d3rlpy_version": d3rlpy.__version__,
        **(extra or {}),
    }
    save_run(out_dir, body, agent_tensors(algos))


def train_d3rlpy(
    dataset_path: str | Path,
    env_id: str,
    tiers: str | Sequence[str] | None,
    out_dir: Path,
    config: D3rlpyConfig,
    progress: Progress | None = None,
) -> Path:
    """Train ``config.ALGO`` independent learners on ``env_id`` (``tiers``) of a dataset; returns ``out_dir``."""
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    dataset = OfflineDataset.open(dataset_path, env_id, tiers)
    algos, rows = fit_agents(config, dataset, progress)
    extra = {"dataset": str(dataset_path), "tiers": list(dataset.tiers), "reward": None, **config.to_dict()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_d3rlpy_run(out_dir, config.ALGO, algos, dataset.spec, extra)
    return out_dir


class D3rlpyPolicy:
    """Decentralised greedy policy over one d3rlpy algorithm per agent, restricted to legal actions
    (``d3rlpy-bc`` can also sample from its legal imitator logits: ``act_sampled``)."""

    def __init__(self, algo: str, algos: Sequence[Any], device: str = "cpu") -> None:
        self.algo = algo
        self.algos = list(algos)
        self.n_agents = len(self.algos)
        self.device = device

    def scores(self, agent: int, obs: np.ndarray) -> torch.Tensor:
        """d3rlpy's greedy preference of every action, ``obs`` [B, obs_dim] → [B, A] (argmax = predict)."""
        impl = self.algos[agent].impl
        x = torch.tensor(np.asarray(obs, np.float32), device=self.device)  # [B, D] (a copy: obs may be read-only)
        with torch.no_grad():
            if self.algo == "d3rlpy-bc":
                logits: torch.Tensor = impl.modules.imitator(x).logits  # [B, A]
                return logits
            q: torch.Tensor = impl._q_func_forwarder.compute_expected_q(x)  # [B, A]
            if self.algo == "d3rlpy-cql":
                return q
            # BCQ: min-shifted Q on the actions whose imitator probability is within
            # action_flexibility of the most likely one, 0 elsewhere (d3rlpy's DiscreteBCQImpl).
            log_probs = torch.log_softmax(impl.modules.imitator(x).logits, dim=1)  # [B, A]
            likely = (log_probs - log_probs.max(dim=1, keepdim=True).values) > math.log(impl._action_flexibility)
            return (q - q.min(dim=1, keepdim=True).values + 1e-5) * likely.float()

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Greedy legal action per agent from its own observation: [N, D], [N, A] bool → int64 [N]."""
        out = np.empty(self.n_agents, np.int64)  # [N]
        for i in range(self.n_agents):
            legal = torch.tensor(np.asarray(mask[i : i + 1], np.bool_), device=self.device)  # [1, A]
            score = self.scores(i, obs[i : i + 1]).masked_fill(~legal, -math.inf)  # [1, A]
            if self.algo == "d3rlpy-bcq" and float(score.max()) <= 0.0:
                # No legal action passes BCQ's imitator filter: fall back to the best legal Q.
                x = torch.tensor(np.asarray(obs[i : i + 1], np.float32), device=self.device)  # [1, D]
                with torch.no_grad():
                    q = self.algos[i].impl._q_func_forwarder.compute_expected_q(x)  # [1, A]
                score = q.masked_fill(~legal, -math.inf)
            out[i] = int(score.argmax(dim=1)[0]) if bool(legal.any()) else 0
        return out

    def act_sampled(self, obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``d3rlpy-bc`` only: each agent's action drawn from softmax over its legal imitator logits
        (``sample_legal``): [N, D], [N, A] bool → int64 [N].

        Raises:
            ValueError: a value-based algorithm (CQL, BCQ), which acts greedily.
        """
        if self.algo != "d3rlpy-bc":
            raise ValueError(f"{self.algo} is value-based and acts greedily; only d3rlpy-bc can sample")
        logits = torch.cat([self.scores(i, obs[i : i + 1]) for i in range(self.n_agents)])  # [N, A]
        return sample_legal(logits.cpu().numpy(), mask, rng)


def load_d3rlpy_policy(config: dict[str, Any], tensors: dict[str, Any], device: str) -> D3rlpyPolicy:
    """Rebuild every agent's d3rlpy algorithm from ``config.json`` and its safetensors weights."""
    algo_id = str(config["algo"])
    cls_name = CONFIG_CLASSES[algo_id]
    if config.get("d3rlpy_class", cls_name) != cls_name:
        raise RunError(f"{algo_id}: config names d3rlpy class {config['d3rlpy_class']!r}, expected {cls_name}")
    d3rlpy = _d3rlpy()
    device = resolve_device(device)
    n_agents, obs_dim, n_actions = int(config["n_agents"]), int(config["obs_dim"]), int(config["n_actions"])
    cfg = getattr(d3rlpy.algos, cls_name).deserialize(json.dumps(config["d3rlpy_config"]))
    used: set[str] = set()
    algos = []
    for i in range(n_agents):
        algo = cfg.create(device=device)
        with quiet():
            algo.create_impl((obs_dim,), n_actions)
        for name, module in algo.impl.modules.get_torch_modules().items():
            prefix = f"agent{i}.{name}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise RunError(f"{algo_id}: weights of agent {i} module {name!r} do not fit: {exc}") from exc
            used.update(prefix + k for k in state)
        algo.impl.modules.set_eval()
        algos.append(algo)
    if extra := sorted(set(tensors) - used):
        raise RunError(f"{algo_id}: unexpected tensors in the weights: {', '.join(extra[:5])}")
    return D3rlpyPolicy(algo_id, algos, device)


for _algo_id in CONFIG_CLASSES:
    register(_algo_id)(load_d3rlpy_policy)
