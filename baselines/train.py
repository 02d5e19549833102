"""Train any baseline by its id: the one entry point the CLI, the grid and the pipeline call.

Input: an algorithm id (CONTRACT, see ``registry.ALGORITHMS``), a dataset (directory or Hub
repo id), an env id, tiers, a reward source and training settings (optionally a JSON config
file). Output: a run directory (``config.json``, ``model.safetensors``, ``metrics.jsonl``) that
``evaluate_run`` and ``load_policy`` accept.

Settings are checked before any data is read: an unknown or out-of-range config key, a
``--reward`` other than ``team`` or a ``--credit-scale`` other than ``none`` for an algorithm
that does not train on a reward source, or a task input for an algorithm without one is a
``ConfigError`` that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmca_data.config import ConfigError, JsonConfig

from .registry import OFFLINE_ALGOS, UnknownAlgorithmError, get_algorithm
from .training import Progress

__all__ = ["ALGOS", "UnknownAlgorithmError", "make_config", "train"]

ALGOS = OFFLINE_ALGOS
"""The ids ``train`` accepts (read from the registry)."""


def make_config(
    algo: str,
    *,
    reward: str = "team",
    task_input: str | None = None,
    credit_scale: str = "none",
    settings: dict[str, Any] | None = None,
) -> JsonConfig:
    """The checked config of ``algo`` from user ``settings`` (strict: unknown keys are errors).

    Raises:
        UnknownAlgorithmError: ``algo`` is not an offline algorithm.
        ConfigError: a bad key or value, a reward source or credit scaling ``algo`` does not
            train on, or a task input ``algo`` has no use for.
    """
    spec = get_algorithm(algo, offline=True)
    settings = dict(settings or {})
    reward = str(settings.pop("reward", reward))
    task_input = settings.pop("task_input", task_input)
    credit_scale = settings.pop("credit_scale", credit_scale)
    if (reward != "team" or credit_scale != "none") and not spec.rewards:
        trainable = ", ".join(a for a in OFFLINE_ALGOS if get_algorithm(a).rewards)
        why = "imitates actions" if "sample" in spec.acts else "learns from the team reward and assigns credit itself"
        drop = f"--reward {reward}" if reward != "team" else f"--credit-scale {credit_scale}"
        raise ConfigError(
            f"{algo} does not train on a reward source (it {why}); drop {drop}, or use one of {trainable}"
        )
    if task_input is not None and not spec.task_input:
        raise ConfigError(f"--task-input is an iql-cql option (LLM-TACA); {algo} has no task input")
    cls = spec.config_class()
    if spec.rewards:
        settings["reward"] = reward
        settings["credit_scale"] = credit_scale
    if spec.task_input:
        settings["task_input"] = task_input
    config: JsonConfig = cls.from_dict(settings, strict=True)
    return config


def train(
    algo: str,
    dataset: str | Path,
    env_id: str,
    tiers: Sequence[str] | None,
    out_dir: Path,
    *,
    reward: str = "team",
    steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    task_input: str | None = None,
    credit_scale: str = "none",
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Train ``algo`` and return its run directory.

    ``reward`` (``team``, ``env`` or ``credit_<critic>``) is used by the algorithms that train on
    a reward source (``iql-cql``, ``d3rlpy-cql``, ``d3rlpy-bcq``); the others accept only
    ``team`` (BC imitates; VDN/QMIX assign credit themselves). ``task_input`` (``llm-taca``,
    ``iql-cql`` only) appends that critic's task to each agent's input, with dropout ramped to
    1. ``credit_scale`` (``none``, ``step``, ``episode``; the same algorithms) puts ``reward`` on
    the team reward's scale per step or per episode (``OfflineDataset.transitions``).
    ``steps`` (None: the config's default), ``seed`` and ``device`` are set first, then
    ``overrides`` (e.g. from ``--config FILE``) may set any field of the algorithm's config.
    """
    settings: dict[str, Any] = {"seed": seed, "device": device}
    if steps is not None:
        settings["steps"] = steps
    settings = {**settings, **(overrides or {})}
    config = make_config(algo, reward=reward, task_input=task_input, credit_scale=credit_scale, settings=settings)
    trainer = get_algorithm(algo).train_fn()
    return trainer(dataset, env_id, tiers, Path(out_dir), config, progress)
