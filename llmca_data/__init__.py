"""llmca-data: an offline multi-agent RL dataset with LLM credit annotations.

Stages (each a module, each saying its input and output in its docstring):
``envs`` → ``policies`` → ``rollout``/``collect`` → ``shards`` → ``validate``.
The subpackages ``annotation``, ``loaders``, ``baselines`` and ``leaderboard`` are
installed from the top-level folders of the repository and import this core, never
the other way round.
"""

from __future__ import annotations

__version__ = "0.1.0"

SCHEMA_VERSION = 1
"""Version of the on-disk dataset layout and columns (DESIGN.md §6). Bump on any change."""

__all__ = ["SCHEMA_VERSION", "__version__"]
