"""Shared fixtures: small real datasets built in code (no files are committed)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from hub_server import HubServer

from llmca_data.collect import CollectConfig, collect


@pytest.fixture(scope="session", autouse=True)
def _private_llm_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests (and the subprocesses they start) never read or write the user's LLM reply cache."""
    import os

    os.environ["LLMCA_CACHE_DIR"] = str(tmp_path_factory.mktemp("llm-cache"))


@pytest.fixture(scope="session")
def lbf_dataset_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LBF dataset: 12 random + 8 expert episodes (built once per session)."""
    root = tmp_path_factory.mktemp("lbf") / "ds"
    collect(root, CollectConfig("lbf-8x8-2p-2f", "random", 12, seed=1, chunk_episodes=4))
    collect(root, CollectConfig("lbf-8x8-2p-2f", "expert", 8, seed=2, chunk_episodes=4))
    return root


@pytest.fixture
def lbf_dataset(lbf_dataset_master: Path, tmp_path: Path) -> Path:
    """A private copy of the session LBF dataset that a test may damage."""
    dest = tmp_path / "ds"
    shutil.copytree(lbf_dataset_master, dest)
    return dest


@pytest.fixture
def poll() -> Callable[[Callable[[], bool], float], None]:
    """Wait for a condition with a deadline (never a fixed sleep)."""
    import time

    def wait(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met before the deadline")
            time.sleep(0.02)

    return wait


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A fresh local Hub-protocol server (``tests/hub_server.py``) on 127.0.0.1; ``.endpoint`` is its URL."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hub_env(hub_server: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], dict[str, str]]:
    """Build environment variables that send a subprocess's Hub calls to ``hub_server``.

    Each call returns a fresh ``HF_HOME`` (an empty cache), so no two processes share one.
    """

    def make() -> dict[str, str]:
        return {
            "HF_ENDPOINT": hub_server.endpoint,
            "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
            "HF_TOKEN": "test-token",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
        }

    return make


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started fault-injecting OpenAI-compatible server (``tests/fake_openai.py``; ``.base_url``
    ends in ``/v1``), stopped after the test."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
