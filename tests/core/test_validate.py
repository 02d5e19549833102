"""`llmca validate` names the file and the problem for every kind of damage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from llmca_data.shards import Manifest, read_shard, write_shard
from llmca_data.validate import validate

STEPS = "data/lbf-8x8-2p-2f/steps/random-00000.parquet"
EPISODES = "data/lbf-8x8-2p-2f/episodes/random-00000.parquet"


def cli_validate(root: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from llmca_data.cli import main; main()", "validate", str(root)]
    return subprocess.run(cmd, capture_output=True, text=True)


def replace_committed(root: Path, rel: str, table: pa.Table) -> None:
    """Rewrite a shard *and* its manifest entry, so only the content is wrong."""
    manifest = Manifest.load(root)
    manifest.files[rel] = write_shard(root, rel, table)
    manifest.save(root)


def assert_problem(root: Path, rel: str, pattern: str) -> None:
    report = validate(root)
    assert not report.ok
    hits = [p for p in report.problems if p.path.startswith(rel.split("*")[0]) and pattern in p.message]
    assert hits, f"no problem for {rel} matching {pattern!r}: {report.problems}"
    proc = cli_validate(root)
    assert proc.returncode == 1 and rel.split("*")[0] in proc.stderr, proc.stderr


def test_fresh_dataset_is_valid(lbf_dataset: Path) -> None:
    report = validate(lbf_dataset)
    assert report.ok, report.problems
    assert report.files == 4 and report.rows > 0
    proc = cli_validate(lbf_dataset)
    assert proc.returncode == 0 and "valid" in proc.stdout


def test_truncated_file(lbf_dataset: Path) -> None:
    path = lbf_dataset / STEPS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_problem(lbf_dataset, STEPS, "truncated")


def test_flipped_byte_in_a_data_page(lbf_dataset: Path) -> None:
    path = lbf_dataset / STEPS
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the first column chunk's pages, far from the footer
    path.write_bytes(bytes(data))
    assert_problem(lbf_dataset, STEPS, "sha256")
    messages = " ".join(p.message for p in validate(lbf_dataset).problems)
    assert "corrupt" in messages or "CRC" in messages or "checksum" in messages.lower()


def test_missing_file(lbf_dataset: Path) -> None:
    (lbf_dataset / EPISODES).unlink()
    assert_problem(lbf_dataset, EPISODES, "missing on disk")


def test_extra_file(lbf_dataset: Path) -> None:
    extra = "data/lbf-8x8-2p-2f/steps/random-00001.parquet"
    (lbf_dataset / extra).write_bytes((lbf_dataset / STEPS).read_bytes())
    assert_problem(lbf_dataset, extra, "not listed in the manifest")


def test_wrong_schema(lbf_dataset: Path) -> None:
    table = read_shard(lbf_dataset / STEPS)
    table = table.set_column(table.schema.get_field_index("t"), "t", pc.cast(table.column("t"), pa.int64()))
    replace_committed(lbf_dataset, STEPS, table.drop_columns(["cost"]))
    assert_problem(lbf_dataset, STEPS, "wrong schema")
    msg = next(p.message for p in validate(lbf_dataset).problems if p.path == STEPS)
    assert "missing columns cost" in msg and "t: int64" in msg


def test_step_both_terminated_and_truncated(lbf_dataset: Path) -> None:
    table = read_shard(lbf_dataset / STEPS)
    idx = table.schema.get_field_index("truncated")
    both = pc.or_(table.column("truncated"), table.column("terminated"))
    replace_committed(lbf_dataset, STEPS, table.set_column(idx, table.schema.field(idx), both))
    assert_problem(lbf_dataset, STEPS, "both terminated and truncated")


def test_unsorted_steps(lbf_dataset: Path) -> None:
    table = read_shard(lbf_dataset / STEPS)
    replace_committed(lbf_dataset, STEPS, table.take(pa.array(range(table.num_rows - 1, -1, -1))))
    assert_problem(lbf_dataset, "data/lbf-8x8-2p-2f/steps/random-*", "sorted")


def test_episode_lengths_must_match_steps(lbf_dataset: Path) -> None:
    table = read_shard(lbf_dataset / EPISODES)
    idx = table.schema.get_field_index("length")
    replace_committed(
        lbf_dataset,
        EPISODES,
        table.set_column(idx, table.schema.field(idx), pc.add(table.column("length"), pa.scalar(1, pa.int32()))),
    )
    assert_problem(lbf_dataset, "data/lbf-8x8-2p-2f/episodes/random-*", "length differs")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"files": [{"path": 1}]})])
def test_malformed_manifest(lbf_dataset: Path, content: str) -> None:
    (lbf_dataset / "meta/manifest.json").write_text(content)
    assert_problem(lbf_dataset, "meta/manifest.json", "malformed manifest")


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        json.dumps({"files": 3}),
        json.dumps({"files": [{"path": STEPS, "rows": "100", "bytes": 1, "sha256": "0" * 64}]}),
        json.dumps({"files": [{"path": STEPS, "rows": 1, "bytes": -1, "sha256": 7}]}),
    ],
)
def test_manifest_of_the_wrong_shape(lbf_dataset: Path, content: str) -> None:
    (lbf_dataset / "meta/manifest.json").write_text(content)
    assert_problem(lbf_dataset, "meta/manifest.json", "malformed manifest")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "malformed info"),
        (json.dumps({"schema_version": 1, "envs": []}), "malformed info"),
        (json.dumps({"schema_version": 1, "envs": {"lbf-8x8-2p-2f": {"spec": [1]}}}), "malformed info"),
        (json.dumps({"schema_version": 1, "envs": {}, "critics": ["uniform"]}), "malformed info"),
        (json.dumps({"schema_version": 1, "envs": {"lbf-8x8-2p-2f": {"spec": {"n_agents": 2}}}}), "malformed env spec"),
    ],
)
def test_malformed_info_is_reported_never_raised(lbf_dataset: Path, content: str, pattern: str) -> None:
    (lbf_dataset / "meta/info.json").write_text(content)
    assert_problem(lbf_dataset, "meta/info.json", pattern)
    proc = cli_validate(lbf_dataset)
    assert "Traceback" not in proc.stderr and "llmca download" in proc.stderr, proc.stderr
