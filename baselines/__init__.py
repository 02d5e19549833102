"""Offline MARL baselines and evaluation rollouts (installed as ``llmca_data.baselines``).

Input: a dataset through ``loaders``. Output: a run directory (config, safetensors
weights, metrics, eval). Imports the core, ``annotation`` and ``loaders``.
"""
