"""The allowlist of policy architectures a submission may use, built from our baselines' classes.

Input: an architecture id and the submitter's JSON config for it. Output: a typed, bounded
config (``AgentNetSpec`` / ``QMixSpec``), the tensor names, shapes and dtypes its
checkpoint must hold (read off the module built on ``torch.device("meta")``, so nothing is
allocated and no submitted byte is touched), and — once the checkpoint has passed every
check — the ``DecentralisedPolicy`` rebuilt from package code.

Architectures (CONTRACT ids):

- ``agent-net``: the shared ``AgentNet`` MLP of ``bc``, ``filtered-bc``, ``iql-cql`` and ``vdn-cql``; tensors
  ``agent_net.<state_dict key>`` (``NET_PREFIX``).
- ``agent-net+qmix-mixer``: the same net plus the ``QMixer`` of ``qmix-cql`` (``mixer.*``);
  the mixer is checked but not used to act (execution is decentralised).

The d3rlpy runners (``d3rlpy-bc``/``-cql``/``-bcq``) are deliberately *not* allowlisted:
their config is a serialised d3rlpy config whose encoder factories and optimisers are open
ended, so no small typed config pins down their modules; submit a torch baseline instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmca_data.baselines.networks import NET_PREFIX, AgentNet, greedy_loader
from llmca_data.baselines.policy import DecentralisedPolicy
from llmca_data.baselines.registry import algos_with_architecture
from llmca_data.baselines.training import MAX_WIDTH

MAX_LAYERS = 8
"""Most hidden layers accepted."""
MAX_DIM = 1_000_000
"""Largest obs/state/agent/action/task count accepted."""

TORCH_DTYPES: dict[torch.dtype, str] = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                                        torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                                        torch.bool: "BOOL", torch.uint8: "U8"}  # fmt: skip
"""torch dtype → safetensors dtype name."""


@dataclass(frozen=True)
class AgentNetSpec:
    """Config of ``agent-net``: the keys of a run's ``config.json`` that ``load_agent_net`` reads."""

    obs_dim: int
    """Observation width per agent (must equal the env's)."""
    n_agents: int
    """Agents (must equal the env's)."""
    n_actions: int
    """Actions per agent (must equal the env's)."""
    hidden: tuple[int, ...]
    """Hidden layer widths, 1 to ``MAX_LAYERS`` layers of 1 to ``MAX_WIDTH`` units."""
    n_tasks: int = 0
    """LLM-TACA task inputs (0: none; a missing key means 0)."""
    rnn_hidden: int = 0
    """Width of the GRU between encoder and output (``iql-cql`` with ``rnn_hidden``; 0: none)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``hidden`` as a list), ``load_agent_net``-compatible."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass(frozen=True)
class QMixSpec(AgentNetSpec):
    """Config of ``agent-net+qmix-mixer``: ``agent-net`` plus the mixer's sizes."""

    state_dim: int = 0
    """Global state width (must equal the env's)."""
    mixer_hidden: int = 32
    """Width of the mixing network's hidden layer."""


@dataclass(frozen=True)
class Architecture:
    """One allowlisted architecture: its typed config and how to build its modules."""

    arch_id: str
    spec_class: type[AgentNetSpec]
    build: Callable[[AgentNetSpec], dict[str, nn.Module]]
    """spec → ``{safetensors prefix: module}``."""
    algos: tuple[str, ...]
    """Our baselines whose run directories use it."""


def _agent_net(spec: AgentNetSpec) -> AgentNet:
    return AgentNet(
        spec.obs_dim, spec.n_agents, spec.n_actions, spec.hidden, n_tasks=spec.n_tasks, rnn_hidden=spec.rnn_hidden
    )


def _build_agent_net(spec: AgentNetSpec) -> dict[str, nn.Module]:
    return {NET_PREFIX: _agent_net(spec)}


def _build_qmix(spec: AgentNetSpec) -> dict[str, nn.Module]:
    from llmca_data.baselines.qmix_cql import MIXER_PREFIX, QMixer

    assert isinstance(spec, QMixSpec)
    return {NET_PREFIX: _agent_net(spec), MIXER_PREFIX: QMixer(spec.n_agents, spec.state_dim, spec.mixer_hidden)}


ARCHITECTURES: dict[str, Architecture] = {
    "agent-net": Architecture("agent-net", AgentNetSpec, _build_agent_net, algos_with_architecture("agent-net")),
    "agent-net+qmix-mixer": Architecture(
        "agent-net+qmix-mixer", QMixSpec, _build_qmix, algos_with_architecture("agent-net+qmix-mixer")
    ),
}
"""Architecture id (CONTRACT) → how to build and check it; which algorithms use each comes from
the baselines' registry (``Algorithm.architecture``)."""


def architecture_for_algo(algo: str) -> str:
    """The architecture id of one of our baselines' run directories; KeyError when none fits."""
    for arch in ARCHITECTURES.values():
        if algo in arch.algos:
            return arch.arch_id
    raise KeyError(algo)


def _as_int(value: Any, low: int, high: int) -> int | None:
    """``value`` when it is an int (not a bool) in ``[low, high]``, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def parse_spec(arch_id: str, raw: Any) -> tuple[AgentNetSpec | None, list[str]]:
    """Fit ``raw`` (the submission's config object) to the typed config of ``arch_id``.

    Returns:
        The spec (None when it does not fit) and the problems found: unknown architecture,
        unknown or missing keys, values of the wrong type or out of bounds.
    """
    arch = ARCHITECTURES.get(arch_id)
    if arch is None:
        known = ", ".join(ARCHITECTURES)
        return None, [f"unknown architecture {arch_id!r}; use one of {known} (d3rlpy runs are not accepted)"]
    if not isinstance(raw, Mapping):
        return None, [f"config must be a JSON object with the fields of {arch.spec_class.__name__}"]
    fields = {f.name: f for f in dataclasses.fields(arch.spec_class)}
    problems = [
        f"config key {k!r} is not a field of {arch_id}; allowed: {', '.join(fields)}" for k in raw if k not in fields
    ]
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append(f"config misses {name!r} (required by {arch_id})")
            continue
        if name == "hidden":
            hidden = raw[name]
            widths = [_as_int(h, 1, MAX_WIDTH) for h in hidden] if isinstance(hidden, list) else [None]
            if not 1 <= len(widths) <= MAX_LAYERS or None in widths:
                problems.append(
                    f"config 'hidden' must be a list of 1-{MAX_LAYERS} ints in 1..{MAX_WIDTH}, got {hidden!r}"
                )
            else:
                values[name] = tuple(w for w in widths if w is not None)
            continue
        low, high = {"n_tasks": (0, MAX_DIM), "rnn_hidden": (0, MAX_WIDTH), "mixer_hidden": (1, MAX_WIDTH)}.get(
            name, (1, MAX_DIM)
        )
        if (value := _as_int(raw[name], low, high)) is None:
            problems.append(f"config {name!r} must be an int in {low}..{high}, got {raw[name]!r}")
        else:
            values[name] = value
    if problems:
        return None, problems
    return arch.spec_class(**values), []


def expected_tensors(arch_id: str, spec: AgentNetSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name → (safetensors dtype, shape) that a checkpoint of ``arch_id`` with ``spec`` must hold.

    The modules are built on the ``meta`` device: shapes only, no memory, no submitted data.
    """
    with torch.device("meta"):
        modules = ARCHITECTURES[arch_id].build(spec)
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for prefix, module in modules.items():
        for key, tensor in module.state_dict().items():
            out[prefix + key] = (TORCH_DTYPES[tensor.dtype], tuple(tensor.shape))
    return out


def build_policy(
    arch_id: str, spec: AgentNetSpec, tensors: dict[str, torch.Tensor], name: str, device: str = "cpu"
) -> DecentralisedPolicy:
    """The greedy decentralised policy of a checked checkpoint, rebuilt from package code.

    Only the ``agent_net.*`` tensors act; ``load_agent_net`` loads them with ``strict=True``.
    """
    if arch_id not in ARCHITECTURES:
        raise KeyError(arch_id)
    return greedy_loader(name)(spec.to_dict(), tensors, device)
