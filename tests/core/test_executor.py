"""``--executor ray``: collect and a Shapley annotate on a local Ray limited to two CPUs write the
same shards, byte for byte, as the local executor; a worker killed mid-chunk (its process, by
the test) is retried by Ray with no duplicate episode and a valid dataset."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.collect import CollectConfig, collect
from llmca_data.config import ConfigError
from llmca_data.dataset import Dataset
from llmca_data.executor import check_executor, open_executor
from llmca_data.info import load_info
from llmca_data.validate import validate

ray = pytest.importorskip("ray")


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}


def ray_task_pids(name: str) -> list[int]:
    """Processes running a Ray task of function ``name`` (Ray titles them ``ray::name``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"ray::{name}".encode()):
                pids.append(int(entry.name))
    return pids


def test_ray_writes_the_local_executors_shards_byte_for_byte(tmp_path: Path) -> None:
    config = CollectConfig("lbf-8x8-2p-2f", "random", 8, seed=3, chunk_episodes=2)
    local, remote = tmp_path / "local", tmp_path / "ray"
    collect(local, config)
    collect(remote, CollectConfig(**{**config.__dict__, "workers": 2, "executor": "ray"}))
    assert shard_bytes(local) == shard_bytes(remote)

    annotate(local, make_critic("shapley"), chunk_episodes=2)
    annotate(remote, make_critic("shapley"), chunk_episodes=2, workers=2, executor="ray")
    assert shard_bytes(local) == shard_bytes(remote) and len(shard_bytes(local)) == 3
    assert not ray.is_initialized()  # the local Ray it started is stopped
    info = load_info(remote)
    assert info["envs"]["lbf-8x8-2p-2f"]["tiers"]["random"]["executor"] == "ray"
    assert info["critics"]["shapley"]["executor"] == "ray"
    assert load_info(local)["critics"]["shapley"]["executor"] == "local"
    assert validate(remote).ok


def test_a_killed_ray_worker_is_retried_without_duplicates(
    tmp_path: Path, poll: Callable[[Callable[[], bool], float], None]
) -> None:
    config = CollectConfig("rware-tiny-2ag", "random", 6, seed=5, chunk_episodes=2)
    collect(tmp_path / "local", config)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})
    try:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                collect(tmp_path / "ray", CollectConfig(**{**config.__dict__, "workers": 2, "executor": "ray"}))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        poll(lambda: bool(ray_task_pids("_play_chunk")) or not thread.is_alive(), 300.0)
        victims = ray_task_pids("_play_chunk")
        assert victims, "no chunk was running to kill"
        os.kill(victims[0], signal.SIGKILL)
        thread.join(timeout=600)
        assert not thread.is_alive() and not errors, errors
    finally:
        ray.shutdown()
    ds = Dataset(tmp_path / "ray")
    ids = ds.episodes_column("episode_id", "rware-tiny-2ag", "random").tolist()
    assert sorted(ids) == list(range(6))  # every episode once
    assert validate(tmp_path / "ray").ok
    assert shard_bytes(tmp_path / "local") == shard_bytes(tmp_path / "ray")


def test_executor_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="--executor must be one of local, ray"):
        check_executor("dask")
    with open_executor("local", 1) as ex:
        assert sorted(ex.map_unordered(divmod, [(7, 2), (9, 4)])) == [(0, (3, 1)), (1, (2, 1))]
