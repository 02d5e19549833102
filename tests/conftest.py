"""Shared fixtures: small real datasets built in code (no files are committed), and the trained
runs and submissions of the leaderboard (``tests/leaderboard``, ``tests/security``; torch is
imported only by the tests that use them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fake_openai import FakeOpenAI
from hub_server import HubServer

from llmca_data.collect import CollectConfig, collect

if TYPE_CHECKING:
    from llmca_data.leaderboard.submission import DatasetIdentity

LEADERBOARD_ENV = "lbf-8x8-2p-2f"
RUN_SEEDS = (0, 1, 2, 3, 4)


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


def _train(dataset: Path, root: Path, algo: str) -> list[Path]:
    """Five tiny runs (seeds 0-4, 20 steps each) of ``bc`` or ``qmix-cql`` on the expert tier."""
    import torch

    from llmca_data.baselines.bc import BCConfig, fit_bc
    from llmca_data.baselines.qmix_cql import QMIXCQLConfig, fit_qmix_cql
    from llmca_data.baselines.training import load_data

    fit, config_cls = {"bc": (fit_bc, BCConfig), "qmix-cql": (fit_qmix_cql, QMIXCQLConfig)}[algo]
    small = {"steps": 20, "batch_size": 32, "hidden": (16,), "eval_every": 10, "device": "cpu"}
    torch.set_num_threads(1)
    data, info = load_data(dataset, LEADERBOARD_ENV, ["expert"], "team", "cpu")
    return [fit(data, info, root / f"seed{s}", config_cls(**small, seed=s))[0] for s in RUN_SEEDS]


@pytest.fixture(scope="session")
def bc_runs(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five BC run directories (seeds 0-4, 20 steps each) on the session LBF dataset's expert tier."""
    return _train(lbf_dataset_master, tmp_path_factory.mktemp("bc-runs"), "bc")


@pytest.fixture(scope="session")
def qmix_runs(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five QMIX + CQL run directories (seeds 0-4, 20 steps each)."""
    return _train(lbf_dataset_master, tmp_path_factory.mktemp("qmix-runs"), "qmix-cql")


@pytest.fixture(scope="session")
def identity(lbf_dataset_master: Path) -> DatasetIdentity:
    """The local identity of the session LBF dataset (the leaderboard's dataset in these tests)."""
    from llmca_data.leaderboard.identity import dataset_identity

    return dataset_identity(lbf_dataset_master)


@pytest.fixture
def make_sub(bc_runs: list[Path], identity: DatasetIdentity, tmp_path: Path) -> Callable[..., Path]:
    """``make_sub(name="sub", runs=None, algorithm="bc", team="llmca")`` → a fresh, valid submission directory."""
    from llmca_data.leaderboard.assemble import make_submission

    def make(name: str = "sub", runs: list[Path] | None = None, algorithm: str = "bc", team: str = "llmca") -> Path:
        return make_submission(runs or bc_runs, tmp_path / name, team=team, algorithm=algorithm,
                               code_url="https://example.org/llmca-data", dataset=identity)  # fmt: skip

    return make


def edit_json(sub: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to ``sub/submission.json`` in place."""
    path = sub / "submission.json"
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


@pytest.fixture
def edit() -> Callable[[Path, Callable[[dict[str, Any]], None]], None]:
    """``edit(sub, change)``: rewrite ``submission.json`` with ``change(body)`` applied."""
    return edit_json
