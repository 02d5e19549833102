"""Train any baseline by its id: the one entry point the CLI and the pipeline call.

Input: an algorithm id (CONTRACT: ``bc``, ``iql-cql``, ``vdn-cql``, ``qmix-cql``,
``d3rlpy-bc``, ``d3rlpy-cql``, ``d3rlpy-bcq``), a dataset (directory or Hub repo id), an env
id, tiers, a reward source and training settings (optionally a JSON config file). Output: a run
directory (``config.json``, ``model.safetensors``, ``metrics.jsonl``) that ``evaluate_run``
and ``load_policy`` accept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmca_data.errors import LlmcaError

from .training import Progress

TORCH_ALGOS = ("bc", "iql-cql", "vdn-cql", "qmix-cql")
D3RLPY_ALGOS = ("d3rlpy-bc", "d3rlpy-cql", "d3rlpy-bcq")
ALGOS = TORCH_ALGOS + D3RLPY_ALGOS


class UnknownAlgorithmError(LlmcaError, ValueError):
    """An algorithm id outside ``ALGOS``."""


def train(
    algo: str,
    dataset: str | Path,
    env_id: str,
    tiers: Sequence[str] | None,
    out_dir: Path,
    *,
    reward: str = "team",
    steps: int = 2000,
    seed: int = 0,
    device: str = "auto",
    task_input: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Train ``algo`` and return its run directory.

    ``reward`` (``team``, ``env`` or ``credit_<critic>``) is used by the independent learners
    (``iql-cql`` and the d3rlpy runners); ``bc`` ignores rewards and ``vdn-cql`` / ``qmix-cql``
    always learn from the team reward (they assign credit implicitly). ``task_input`` (``llm-taca``,
    ``iql-cql`` only) appends that critic's task assignment to each agent's input, with dropout
    ramped to 1. ``overrides`` sets any field of the algorithm's config dataclass (e.g. from
    ``--config FILE``).
    """
    if algo not in ALGOS:
        raise UnknownAlgorithmError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}")
    if task_input is not None and algo != "iql-cql":
        raise ValueError(f"--task-input is an iql-cql option (LLM-TACA); {algo} has no task input")
    settings = {"steps": steps, "seed": seed, "device": device, **(overrides or {})}
    if algo == "bc":
        from .bc import BCConfig, train_bc

        return train_bc(dataset, env_id, tiers, out_dir, BCConfig.from_dict(settings), progress)
    if algo == "iql-cql":
        from .iql_cql import IQLCQLConfig, train_iql_cql

        return train_iql_cql(
            dataset,
            env_id,
            tiers,
            out_dir,
            IQLCQLConfig.from_dict({**settings, "reward": reward, "task_input": task_input}),
            progress,
        )
    if algo == "vdn-cql":
        from .vdn_cql import VDNCQLConfig, train_vdn_cql

        return train_vdn_cql(dataset, env_id, tiers, out_dir, VDNCQLConfig.from_dict(settings), progress)
    if algo == "qmix-cql":
        from .qmix_cql import QMIXCQLConfig, train_qmix_cql

        return train_qmix_cql(dataset, env_id, tiers, out_dir, QMIXCQLConfig.from_dict(settings), progress)
    if algo in D3RLPY_ALGOS:
        from .d3rlpy_runner import train_d3rlpy

        extra = {k: v for k, v in settings.items() if k in ("batch_size", "hidden_units")}
        device = "cpu" if settings["device"] == "auto" else str(settings["device"])
        return train_d3rlpy(algo, dataset, env_id, tiers, out_dir, int(settings["steps"]), reward=reward,
                            seed=int(settings["seed"]), device=device, progress=progress, **extra)  # fmt: skip
    raise AssertionError(algo)  # unreachable: every id of ALGOS is handled above


def load_overrides(path: Path | None) -> dict[str, Any]:
    """A JSON object of config fields (``--config FILE``), or {}."""
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file holds one JSON object of config fields")
    return data
