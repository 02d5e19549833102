"""Publishing to and downloading from a real local Hub-protocol server (``tests/hub_server.py``).

``publish`` and ``download`` run in this process with ``HF_ENDPOINT`` set (``llmca_data.hub``
reads it at each call); ``datasets.load_dataset`` runs in a fresh subprocess with its own
``HF_ENDPOINT`` and empty ``HF_HOME``, exactly as a user would run it. Nothing reaches the internet.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hub_server import HubServer

from llmca_data import SCHEMA_VERSION
from llmca_data.download import download
from llmca_data.hub import (
    DownloadVerifyError,
    HubDependencyError,
    HubError,
    PublishConflictError,
    PublishRefusedError,
    local_files,
    publish,
)
from llmca_data.layout import MANIFEST_PATH, STAGING_DIR
from llmca_data.shards import FileEntry, Manifest, sha256_file

REPO = "llmca/annotated"
ENV = "lbf-8x8-2p-2f"
STEPS_EXPERT = f"data/{ENV}/steps/expert-00000.parquet"
TAG = f"schema-v{SCHEMA_VERSION}"


def _minimal_card(root: Path) -> None:
    """A README.md with a ``configs:`` block, for when ``llmca_data.build`` is not available."""
    lines = ["---", "configs:"]
    for suffix, kind in (("", "steps"), ("-episodes", "episodes")):
        lines += [f"- config_name: {ENV}{suffix}", "  data_files:"]
        for tier in ("expert", "random"):
            lines += [f"  - split: {tier}", f"    path: data/{ENV}/{kind}/{tier}-*.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", "# test dataset", ""]))


@pytest.fixture
def dataset(lbf_dataset: Path) -> Path:
    """The LBF fixture with a dataset card (rendered by ``build`` when that module exists)."""
    if importlib.util.find_spec("llmca_data.build") is not None:
        from llmca_data.build import build

        build(lbf_dataset)
    else:
        _minimal_card(lbf_dataset)
    return lbf_dataset


@pytest.fixture
def hub(hub_server: HubServer, hub_env: Callable[[], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The server, with this process's Hub calls pointed at it."""
    for key, value in hub_env().items():
        monkeypatch.setenv(key, value)
    return hub_server


def _rewrite_shard(root: Path, rel: str) -> None:
    """Rewrite one shard with the same rows but other Parquet settings (new bytes), and record it."""
    table = pq.read_table(root / rel)
    pq.write_table(
        table, root / rel, compression="zstd", compression_level=9, row_group_size=7, write_page_checksum=True
    )
    manifest = Manifest.load(root)
    manifest.files[rel] = FileEntry(rel, table.num_rows, (root / rel).stat().st_size, sha256_file(root / rel))
    manifest.save(root)


def _drop_tier(root: Path, tier: str) -> list[str]:
    manifest = Manifest.load(root)
    gone = [p for p in manifest.files if p.startswith(f"data/{ENV}/") and Path(p).name.startswith(f"{tier}-")]
    for rel in gone:
        (root / rel).unlink()
        del manifest.files[rel]
    manifest.save(root)
    return sorted(gone)


def test_publish_one_commit_then_datasets_loads_it(
    dataset: Path, hub: HubServer, hub_env: Callable[[], dict[str, str]]
) -> None:
    result = publish(dataset, REPO)
    assert result.committed and not result.changed and not result.deleted
    assert {f.path for f in result.added} == set(local_files(dataset))
    assert all(f.bytes == (dataset / f.path).stat().st_size for f in result.added)
    assert len(hub.commit_requests()) == 1
    head = hub.head(REPO)
    assert result.commit_sha == head.sha and hub.repo(REPO).tags[TAG] == head.sha
    remote = hub.files(REPO)
    assert set(remote) == set(local_files(dataset)) | {".gitattributes"}
    assert all(remote[p] == (dataset / p).read_bytes() for p in local_files(dataset))

    local = pq.read_table(dataset / STEPS_EXPERT, columns=["episode_id", "t", "reward_team"]).to_pydict()
    episodes = pq.read_table(dataset / f"data/{ENV}/episodes/random-00000.parquet").num_rows
    code = f"""
import json, datasets
ds = datasets.load_dataset({REPO!r}, {ENV!r}, split="expert")
stream = datasets.load_dataset({REPO!r}, {ENV!r}, split="expert", streaming=True)
first = [{{k: r[k] for k in ("episode_id", "t", "reward_team")}} for r, _ in zip(stream, range(5))]
ep = datasets.load_dataset({REPO!r}, {ENV + "-episodes"!r}, split="random")
print(json.dumps({{"rows": ds.select_columns(["episode_id", "t", "reward_team"]).to_dict(),
                  "stream": first, "episodes": ep.num_rows}}))
"""
    # A dead proxy for every host but 127.0.0.1: an accidental call to the internet fails fast.
    dead = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env = {**os.environ, **hub_env(), **dead, "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rows"] == local
    assert got["stream"] == [{k: local[k][i] for k in local} for i in range(5)]
    assert got["episodes"] == episodes
    assert not hub.unknown


def test_download_verifies_a_pinned_commit(dataset: Path, hub: HubServer, tmp_path: Path) -> None:
    first = publish(dataset, REPO)
    hub.push(REPO, {"data/other/notes.txt": b"later commit"})  # main moves on; the tag does not
    out = tmp_path / "copy"
    result = download(REPO, out, revision=TAG)
    assert result.commit_sha == first.commit_sha and result.revision == TAG
    assert result.files == sorted(Manifest.load(dataset).files)
    assert result.bytes == sum(e.bytes for e in Manifest.load(dataset).files.values())
    for rel in local_files(dataset):
        assert (out / rel).read_bytes() == (dataset / rel).read_bytes(), rel
    assert not (out / "data/other/notes.txt").exists()
    assert not (out / STAGING_DIR).exists() or not any((out / STAGING_DIR).iterdir())
    latest = download(REPO, tmp_path / "latest")
    assert latest.commit_sha == hub.head(REPO).sha != first.commit_sha


def test_download_names_a_tampered_file(dataset: Path, hub: HubServer, tmp_path: Path) -> None:
    publish(dataset, REPO)
    good = (dataset / STEPS_EXPERT).read_bytes()
    bad = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # same size: only the hash can tell
    hub.tamper(REPO, STEPS_EXPERT, bad)
    out = tmp_path / "copy"
    with pytest.raises(DownloadVerifyError, match=STEPS_EXPERT) as err:
        download(REPO, out)
    assert "sha256" in str(err.value) and str(err.value).count(".parquet:") == 1
    assert not (out / STEPS_EXPERT).exists() and not (out / MANIFEST_PATH).exists()  # nothing installed
    assert [p.read_bytes() for p in (out / STAGING_DIR).glob(f"*/{STEPS_EXPERT}")] == [bad]  # kept to inspect


def test_download_of_a_missing_repo_or_revision_is_a_clear_error(dataset: Path, hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="not found"):
        download(REPO, tmp_path / "a")
    publish(dataset, REPO)
    with pytest.raises(HubError, match="no revision 'v9'"):
        download(REPO, tmp_path / "b", revision="v9")


def test_download_without_manifest_is_a_clear_error(hub: HubServer, tmp_path: Path) -> None:
    hub.push(REPO, {"data/x.txt": b"hello"})
    with pytest.raises(DownloadVerifyError, match=r"no meta/manifest\.json"):
        download(REPO, tmp_path / "copy")


def test_unchanged_second_publish_makes_no_commit_and_no_write(dataset: Path, hub: HubServer) -> None:
    first = publish(dataset, REPO)
    writes = len(hub.writes())
    again = publish(dataset, REPO)
    assert not again.committed and again.commit_sha == first.commit_sha
    assert not (again.added or again.changed or again.deleted)
    assert len(hub.commit_requests()) == 1 and len(hub.writes()) == writes


def test_dry_run_lists_files_and_writes_nothing(dataset: Path, hub: HubServer) -> None:
    plan = publish(dataset, REPO, dry_run=True)
    assert plan.dry_run and plan.commit_sha is None and plan.parent_sha is None
    assert {f.path for f in plan.added} == set(local_files(dataset))
    assert plan.upload_bytes == sum((dataset / p).stat().st_size for p in local_files(dataset))
    assert hub.writes() == [] and hub.repos == {}

    publish(dataset, REPO)
    _rewrite_shard(dataset, STEPS_EXPERT)
    writes, head = len(hub.writes()), hub.head(REPO).sha
    plan = publish(dataset, REPO, dry_run=True)
    assert [f.path for f in plan.changed] == [STEPS_EXPERT, MANIFEST_PATH] and not plan.added
    assert plan.changed[0].bytes == (dataset / STEPS_EXPERT).stat().st_size
    assert len(hub.writes()) == writes and hub.head(REPO).sha == head


def test_changed_and_deleted_files_go_in_one_commit(dataset: Path, hub: HubServer) -> None:
    first = publish(dataset, REPO)
    hub.push(REPO, {"notes.txt": b"owner's file"})  # outside data/ and meta/: never touched
    before = hub.head(REPO).sha
    _rewrite_shard(dataset, STEPS_EXPERT)
    gone = _drop_tier(dataset, "random")
    commits = len(hub.commit_requests())
    result = publish(dataset, REPO, message="rewrite expert, drop random")
    assert len(hub.commit_requests()) == commits + 1
    assert [f.path for f in result.changed] == [STEPS_EXPERT, MANIFEST_PATH] and not result.added
    assert [f.path for f in result.deleted] == gone
    head = hub.head(REPO)
    assert head.parent == before == result.parent_sha and head.message == "rewrite expert, drop random"
    assert set(head.files) == set(local_files(dataset)) | {".gitattributes", "notes.txt"}
    assert head.files[STEPS_EXPERT] == (dataset / STEPS_EXPERT).read_bytes()
    assert hub.repo(REPO).tags[TAG] == head.sha != first.commit_sha


def test_concurrent_commit_raises_conflict_and_rerun_succeeds(dataset: Path, hub: HubServer) -> None:
    publish(dataset, REPO)
    _rewrite_shard(dataset, STEPS_EXPERT)
    hub.before_commit = lambda: hub.push(REPO, {"notes.txt": b"someone else"}, message="concurrent")
    with pytest.raises(PublishConflictError, match="Re-run"):
        publish(dataset, REPO)
    head = hub.head(REPO)
    assert head.message == "concurrent" and head.files[STEPS_EXPERT] != (dataset / STEPS_EXPERT).read_bytes()
    result = publish(dataset, REPO)
    assert result.parent_sha == head.sha and [f.path for f in result.changed] == [STEPS_EXPERT, MANIFEST_PATH]
    assert hub.head(REPO).files["notes.txt"] == b"someone else"


def test_invalid_dataset_is_refused_before_any_request(dataset: Path, hub: HubServer) -> None:
    shard = dataset / STEPS_EXPERT
    shard.write_bytes(shard.read_bytes()[:-50])
    with pytest.raises(PublishRefusedError, match=STEPS_EXPERT):
        publish(dataset, REPO)
    assert hub.requests == []


def test_publish_to_a_new_branch_leaves_main_and_tag_alone(dataset: Path, hub: HubServer) -> None:
    first = publish(dataset, REPO)
    _rewrite_shard(dataset, STEPS_EXPERT)
    writes = len(hub.writes())
    plan = publish(dataset, REPO, revision="dev", dry_run=True)  # a new branch will start from main
    assert plan.parent_sha == first.commit_sha and [f.path for f in plan.changed] == [STEPS_EXPERT, MANIFEST_PATH]
    assert len(hub.writes()) == writes and "dev" not in hub.repo(REPO).branches
    result = publish(dataset, REPO, revision="dev")
    assert result.tag is None and result.parent_sha == first.commit_sha
    assert [f.path for f in result.changed] == [STEPS_EXPERT, MANIFEST_PATH]
    repo = hub.repo(REPO)
    assert repo.branches["main"] == first.commit_sha == repo.tags[TAG] != repo.branches["dev"]


def test_missing_huggingface_hub_names_the_extra(
    dataset: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(HubDependencyError, match=r'pip install "llmca-data\[hub\]"'):
        publish(dataset, REPO, dry_run=True)
    with pytest.raises(HubDependencyError, match=r'pip install "llmca-data\[hub\]"'):
        download(REPO, dataset.parent / "copy")
    assert hub.requests == []


def test_local_files_exclude_lock_and_temporaries(dataset: Path) -> None:
    (dataset / ".staging").mkdir(exist_ok=True)
    (dataset / ".staging" / "x.parquet").write_bytes(b"x")
    (dataset / f"data/{ENV}/steps/.expert-00001.parquet.tmp-1").write_bytes(b"x")
    files = local_files(dataset)
    assert MANIFEST_PATH in files and "README.md" in files and "meta/info.json" in files
    assert not [p for p in files if p.startswith(".") or "/." in p]
