"""A multi-file commit is all-or-nothing across a kill at any point."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from llmca_data.layout import PENDING_PATH
from llmca_data.shards import Commit, DatasetLock, Manifest, read_shard, write_json_atomic
from llmca_data.validate import validate

STEPS = "data/lbf-8x8-2p-2f/steps/random-00000.parquet"
EPISODES = "data/lbf-8x8-2p-2f/episodes/random-00000.parquet"


def changed_tables(root: Path) -> tuple[pa.Table, pa.Table]:
    steps, eps = read_shard(root / STEPS), read_shard(root / EPISODES)
    # A harmless, valid change: both files rewritten with their row groups in the same order.
    return steps.combine_chunks(), eps.combine_chunks()


def test_kill_after_the_journal_is_rolled_forward(lbf_dataset: Path) -> None:
    steps, eps = changed_tables(lbf_dataset)
    with DatasetLock(lbf_dataset) as lock:  # the writer that is killed
        commit = Commit(lbf_dataset, Manifest.load(lbf_dataset))
        new = [commit.write(STEPS, steps), commit.write(EPISODES, eps)]
        # Simulate a kill right after the journal: nothing renamed, manifest untouched.
        write_json_atomic(lbf_dataset / PENDING_PATH, {"files": [asdict(e) for e in new], "token": lock.token})
    report = validate(lbf_dataset)
    assert any(p.path == PENDING_PATH for p in report.problems)
    with DatasetLock(lbf_dataset):
        pass
    assert not (lbf_dataset / PENDING_PATH).exists()
    manifest = Manifest.load(lbf_dataset)
    assert [manifest.files[e.path] for e in new] == new
    assert validate(lbf_dataset).ok


def test_kill_before_the_journal_leaves_the_dataset_unchanged(lbf_dataset: Path) -> None:
    before = json.loads((lbf_dataset / "meta/manifest.json").read_text())["files"]
    steps, eps = changed_tables(lbf_dataset)
    commit = Commit(lbf_dataset, Manifest.load(lbf_dataset))
    commit.write(STEPS, steps)
    commit.write(EPISODES, eps)  # killed here: staged files, no journal
    assert not validate(lbf_dataset).ok  # hidden staged files are not in the manifest
    with DatasetLock(lbf_dataset):
        pass
    assert json.loads((lbf_dataset / "meta/manifest.json").read_text())["files"] == before
    assert validate(lbf_dataset).ok
