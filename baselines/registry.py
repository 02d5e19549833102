"""The one registry of baseline algorithms: ids, configs, trainers, reward use and act modes.

Input: an algorithm id (CONTRACT). Output: its ``Algorithm`` record, from which the CLI,
``train``, the grid, evaluation (which act modes apply) and the leaderboard (which
architecture a run uses) all read; nothing else lists algorithm ids. Modules are imported
only when an algorithm is used, so reading the registry costs no torch import.

Adding an algorithm: write ``baselines/<name>.py`` with a config class (a ``JsonConfig``), a
trainer ``train_x(dataset, env_id, tiers, out_dir, config, progress) -> Path`` and a
``register(ALGO)`` loader, then add one ``Algorithm`` line below; the contract test in
``tests/baselines/test_contract.py`` then covers it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmca_data.errors import LlmcaError

Act = Literal["greedy", "sample"]


class UnknownAlgorithmError(LlmcaError, ValueError):
    """An algorithm id that is not in ``ALGORITHMS``."""


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm."""

    algo: str
    """Id (CONTRACT), e.g. ``iql-cql``."""
    module: str
    """The module that defines it and registers its ``load_policy`` loader."""
    config: str
    """Name of its config class in ``module`` (a ``JsonConfig``)."""
    trainer: str | None
    """Name of its offline trainer in ``module``, or None (online-only algorithms)."""
    rewards: bool
    """Whether it trains on a chosen reward source (``--reward``); others accept only ``team``."""
    acts: tuple[Act, ...] = ("greedy",)
    """Act modes evaluation reports (protocol v2): value-based learners act greedily, the BC
    family is reported both sampled and greedy."""
    architecture: str | None = None
    """The leaderboard architecture its run directories use (None: not accepted there)."""
    task_input: bool = False
    """Whether it takes an LLM-TACA task input (``--task-input``)."""

    def config_class(self) -> Any:
        """The config dataclass (imports ``module``)."""
        return getattr(importlib.import_module(self.module), self.config)

    def train_fn(self) -> Callable[..., Path]:
        """``trainer(dataset, env_id, tiers, out_dir, config, progress) -> run_dir`` (imports ``module``)."""
        if self.trainer is None:
            raise UnknownAlgorithmError(f"{self.algo} is trained online (`llmca train-online`), not by `llmca train`")
        fn: Callable[..., Path] = getattr(importlib.import_module(self.module), self.trainer)
        return fn


_B = "llmca_data.baselines."
ALGORITHMS: dict[str, Algorithm] = {
    a.algo: a
    for a in (
        Algorithm("bc", _B + "bc", "BCConfig", "train_bc", False, ("greedy", "sample"), "agent-net"),
        Algorithm("filtered-bc", _B + "bc", "FilteredBCConfig", "train_bc", False, ("greedy", "sample"), "agent-net"),
        Algorithm("iql-cql", _B + "iql_cql", "IQLCQLConfig", "train_iql_cql", True, ("greedy",), "agent-net", True),
        Algorithm("vdn-cql", _B + "vdn_cql", "VDNCQLConfig", "train_vdn_cql", False, ("greedy",), "agent-net"),
        Algorithm(
            "qmix-cql", _B + "qmix_cql", "QMIXCQLConfig", "train_qmix_cql", False, ("greedy",), "agent-net+qmix-mixer"
        ),
        Algorithm("d3rlpy-bc", _B + "d3rlpy_runner", "D3rlpyBCConfig", "train_d3rlpy", False, ("greedy", "sample")),
        Algorithm("d3rlpy-cql", _B + "d3rlpy_runner", "D3rlpyCQLConfig", "train_d3rlpy", True),
        Algorithm("d3rlpy-bcq", _B + "d3rlpy_runner", "D3rlpyBCQConfig", "train_d3rlpy", True),
        Algorithm("ddqn-online", _B + "online", "OnlineConfig", None, True),
    )
}
"""Algorithm id (CONTRACT) → its record."""

OFFLINE_ALGOS: tuple[str, ...] = tuple(a.algo for a in ALGORITHMS.values() if a.trainer is not None)
"""The ids ``llmca train`` accepts, in the order help and errors list them."""


def get_algorithm(algo: str, offline: bool = False) -> Algorithm:
    """The record of ``algo``; ``offline`` also refuses online-only algorithms.

    Raises:
        UnknownAlgorithmError: naming the valid ids.
    """
    known = OFFLINE_ALGOS if offline else tuple(ALGORITHMS)
    if algo not in known:
        raise UnknownAlgorithmError(f"unknown algorithm {algo!r}; choose one of {', '.join(known)}")
    return ALGORITHMS[algo]


def algos_with_architecture(arch_id: str) -> tuple[str, ...]:
    """The algorithms whose run directories use leaderboard architecture ``arch_id``."""
    return tuple(a.algo for a in ALGORITHMS.values() if a.architecture == arch_id)
