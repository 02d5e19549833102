"""Fixtures of the online-training tests (the fault-injecting OpenAI server ``fake_openai`` comes
from ``tests/conftest.py``, the tiny game from ``match_env.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_llm_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test has its own LLM reply cache (a rerun in the same test hits it)."""
    monkeypatch.setenv("LLMCA_CACHE_DIR", str(tmp_path / "llm-cache"))
