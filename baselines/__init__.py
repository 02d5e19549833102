"""Offline MARL baselines, online training and evaluation rollouts (installed as ``llmca_data.baselines``).

Input: a dataset through ``loaders`` (or an env, for ``online``). Output: a run directory (config,
safetensors weights, metrics, eval; ``curve.jsonl`` for online runs, drawn by ``curves``).
Imports the core, ``annotation`` and ``loaders``.
"""
