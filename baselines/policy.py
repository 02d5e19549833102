"""Trained policies as saved in a run directory, and the registry that rebuilds them.

Input: a run directory written by a trainer (``config.json`` + ``model.safetensors``).
Output: a ``DecentralisedPolicy`` rebuilt from package code and safetensors weights only —
never pickle — so the trusted evaluator and the leaderboard can load what anyone sends.

Run directory (CONTRACT, DESIGN.md §8)::

    config.json          {"algo", "env_id", "n_agents", "obs_dim", "n_actions", ..., "package_version"}
    model.safetensors    the weights (tensor names fixed by each algorithm)
    metrics.jsonl        one JSON object per logged training step
    eval.json            written by evaluation
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmca_data import __version__
from llmca_data.errors import LlmcaError

from .registry import ALGORITHMS

RUN_CONFIG = "config.json"
RUN_WEIGHTS = "model.safetensors"
RUN_METRICS = "metrics.jsonl"
RUN_EVAL = "eval.json"


class RunError(LlmcaError, ValueError):
    """A run directory that is missing files, names an unknown algorithm, or has wrong weights."""


class DecentralisedPolicy(Protocol):
    """Acts for every agent, each from its own observation only (decentralised execution)."""

    algo: str
    n_agents: int

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Greedy joint action: ``obs`` float32 ``[N, obs_dim]``, ``mask`` bool ``[N, A]`` → int64 ``[N]``.

        Agent i's action may depend only on ``obs[i]``, ``mask[i]``, i itself (its id) and, for a
        recurrent policy, agent i's earlier observations since the policy's optional ``reset()``,
        which evaluation calls at the start of every episode.
        """
        ...


Loader = Callable[[dict[str, Any], dict[str, Any], str], DecentralisedPolicy]
"""``loader(config, tensors, device)`` rebuilds a policy from its config and safetensors tensors."""

_LOADERS: dict[str, Loader] = {}
ALGO_MODULES: dict[str, str] = {algo: spec.module for algo, spec in ALGORITHMS.items()}
"""Algorithm id (CONTRACT) → the module that registers its loader (from the registry)."""


def register(algo: str) -> Callable[[Loader], Loader]:
    """Decorator: ``@register("bc")`` on the function that rebuilds ``bc`` policies."""

    def wrap(loader: Loader) -> Loader:
        _LOADERS[algo] = loader
        return loader

    return wrap


def save_run(run_dir: Path, config: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Write ``config.json`` and ``model.safetensors`` atomically (``tensors``: name → torch.Tensor)."""
    from safetensors.torch import save_file

    if "algo" not in config:
        raise ValueError("a run config needs its 'algo'")
    run_dir.mkdir(parents=True, exist_ok=True)
    body = {**config, "package_version": __version__}
    tmp = run_dir / f".{RUN_CONFIG}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, run_dir / RUN_CONFIG)
    tmp = run_dir / f".{RUN_WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, run_dir / RUN_WEIGHTS)


def load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} has no {RUN_CONFIG}: is it a run directory from `llmca train`?")
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def load_policy(run_dir: Path, device: str = "cpu") -> DecentralisedPolicy:
    """Rebuild the policy of ``run_dir`` from package code and its safetensors weights."""
    from safetensors.torch import load_file

    config = load_config(run_dir)
    algo = str(config.get("algo"))
    if algo not in ALGO_MODULES:
        raise RunError(f"{run_dir}: unknown algorithm {algo!r}; known: {', '.join(ALGO_MODULES)}")
    importlib.import_module(ALGO_MODULES[algo])
    weights = run_dir / RUN_WEIGHTS
    if not weights.is_file():
        raise RunError(f"{run_dir} has no {RUN_WEIGHTS}")
    return _LOADERS[algo](config, dict(load_file(str(weights), device=device)), device)
