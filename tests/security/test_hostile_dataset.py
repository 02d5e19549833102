"""Attacks on the dataset side (issue 17): a hostile Hub repo, a planted commit journal, hostile
manifest paths, downloads over a user's data, non-finite credits, FIFOs and links in place of
shards, hostile imported critic ids, and the smaller findings (validate beside a writer, empty
shards, float ids, unbounded ``--workers``).

Each test builds its attack in code, asserts the clear error, and that the data already there
is unchanged. Hub repos live on the local Hub-protocol server of ``tests/hub_server.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hub_server import HubServer

from llmca_data.annotation.annotate import annotate, annotation_rows
from llmca_data.annotation.critic import CriticOutput
from llmca_data.annotation.imported import CreditFileError, ImportedCritic
from llmca_data.annotation.registry import make_critic
from llmca_data.cli import main
from llmca_data.collect import CollectConfig, collect
from llmca_data.config import ConfigError, cap_workers
from llmca_data.dataset import EpisodeCredits, writing
from llmca_data.download import DownloadTargetError, download
from llmca_data.errors import MetadataError
from llmca_data.hub import DownloadVerifyError, publish
from llmca_data.info import spec_from_info
from llmca_data.layout import LOCK_NAME, MANIFEST_PATH, PENDING_PATH, TRASH_DIR
from llmca_data.shards import FileEntry, Manifest, read_shard, sha256_file
from llmca_data.tables import tables_to_episodes
from llmca_data.validate import validate

REPO = "llmca/annotated"
ENV = "lbf-8x8-2p-2f"
STEPS = f"data/{ENV}/steps/expert-00000.parquet"
HIDDEN = f"data/{ENV}/steps/.expert-00000.parquet.pending"


@pytest.fixture
def hub(hub_server: HubServer, hub_env: Callable[[], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The local Hub server, with this process's Hub calls pointed at it."""
    for key, value in hub_env().items():
        monkeypatch.setenv(key, value)
    return hub_server


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (the lock file aside) → its sha256."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != LOCK_NAME
    }


def team_reward(root: Path, rel: str = STEPS) -> float:
    return float(pc.sum(read_shard(root / rel, ["reward_team"]).column("reward_team")).as_py())


def forged_shard(root: Path) -> bytes:
    """The expert steps shard with every team reward raised by 1 and the Shapley credits gone."""
    table = read_shard(root / STEPS)
    table = table.drop_columns([c for c in table.column_names if c.startswith("credit_")])
    index = table.schema.get_field_index("reward_team")
    table = table.set_column(index, "reward_team", pc.add(table.column("reward_team"), 1.0))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def journal_for(rel: str, data: bytes, rows: int, token: str | None = None) -> bytes:
    entry = FileEntry(rel, rows, len(data), hashlib.sha256(data).hexdigest())
    body: dict[str, object] = {"files": [asdict(entry)]}
    if token is not None:
        body["token"] = token
    return json.dumps(body).encode()


# ---- 1. a downloaded dataset cannot be swapped after verification ---------------------------


def test_download_fetches_only_manifest_files_so_a_planted_journal_never_lands(
    lbf_dataset: Path, hub: HubServer, tmp_path: Path
) -> None:
    annotate(lbf_dataset, make_critic("shapley"))
    publish(lbf_dataset, REPO)
    forged = forged_shard(lbf_dataset)
    rows = read_shard(lbf_dataset / STEPS, ["t"]).num_rows
    hub.push(REPO, {PENDING_PATH: journal_for(STEPS, forged, rows), HIDDEN: forged, "notes/extra.txt": b"x"})
    out = tmp_path / "copy"
    result = download(REPO, out)
    assert set(result.ignored) == {PENDING_PATH, HIDDEN, "notes/extra.txt"}
    assert not (out / PENDING_PATH).exists() and not (out / HIDDEN).exists() and not (out / "notes").exists()
    verified = snapshot(out)
    collect(out, CollectConfig(ENV, "random", 2, seed=9))  # a writing command: recovery runs
    assert snapshot(out)[STEPS] == verified[STEPS]
    assert team_reward(out) == team_reward(lbf_dataset)
    assert validate(out).ok


@pytest.mark.parametrize("token", [None, "0" * 32, "last-writer"], ids=["no-token", "forged-token", "wrong-sha256"])
def test_a_journal_this_dataset_did_not_write_is_set_aside(lbf_dataset: Path, token: str | None) -> None:
    forged = forged_shard(lbf_dataset)
    rows = read_shard(lbf_dataset / STEPS, ["t"]).num_rows
    if token == "last-writer":  # the real last writer's token, but the staged bytes are not the journaled ones
        token = (lbf_dataset / LOCK_NAME).read_text().split()[1]
        (lbf_dataset / PENDING_PATH).write_bytes(journal_for(STEPS, forged[:-1] + b"!", rows, token))
    else:
        (lbf_dataset / PENDING_PATH).write_bytes(journal_for(STEPS, forged, rows, token))
    (lbf_dataset / HIDDEN).write_bytes(forged)
    before = sha256_file(lbf_dataset / STEPS)
    with writing(lbf_dataset):
        pass
    assert sha256_file(lbf_dataset / STEPS) == before
    assert not (lbf_dataset / PENDING_PATH).exists() and not (lbf_dataset / HIDDEN).exists()
    assert list((lbf_dataset / TRASH_DIR).glob("journal-*/pending.json"))  # kept for inspection
    assert validate(lbf_dataset).ok


BAD_PATHS = [
    "/etc/passwd",
    "../outside.parquet",
    "data/../README.md",
    "./README.md",
    f"data/{ENV}//steps/expert-00000.parquet",
    f"data/{ENV}/steps/../steps/expert-00000.parquet",
    PENDING_PATH,
    HIDDEN,
    MANIFEST_PATH,
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_manifest_paths_outside_the_layout_are_refused(
    lbf_dataset: Path, hub: HubServer, tmp_path: Path, bad: str
) -> None:
    publish(lbf_dataset, REPO)
    data = Path("/etc/passwd").read_bytes() if bad == "/etc/passwd" else b"hostile"
    raw = json.loads((lbf_dataset / MANIFEST_PATH).read_text())
    raw["files"].append(asdict(FileEntry(bad, 0, len(data), hashlib.sha256(data).hexdigest())))
    hub.push(REPO, {MANIFEST_PATH: json.dumps(raw).encode()})
    out = tmp_path / "copy"
    with pytest.raises(DownloadVerifyError, match="not a dataset file path"):
        download(REPO, out)
    assert not (out / "data").exists() and not (out / MANIFEST_PATH).exists()  # nothing installed
    # The same manifest in a local folder: validate reports it, a writer refuses to start.
    before = snapshot(lbf_dataset)
    (lbf_dataset / MANIFEST_PATH).write_text(json.dumps(raw))
    report = validate(lbf_dataset)
    assert [p.path for p in report.problems] == [MANIFEST_PATH] and "not a dataset file path" in report.problems[
        0
    ].message
    with pytest.raises(MetadataError, match="not a dataset file path"), writing(lbf_dataset):
        pass
    assert {k: v for k, v in snapshot(lbf_dataset).items() if k != MANIFEST_PATH} == {
        k: v for k, v in before.items() if k != MANIFEST_PATH
    }


# ---- 2. download never overwrites a user's dataset --------------------------------------------


def test_download_refuses_a_folder_holding_another_dataset(
    lbf_dataset: Path, lbf_dataset_master: Path, hub: HubServer, tmp_path: Path
) -> None:
    publish(lbf_dataset, REPO)
    mine = tmp_path / "mine"
    collect(mine, CollectConfig(ENV, "random", 3, seed=5))
    before = snapshot(mine)
    with pytest.raises(DownloadTargetError, match="holds no download"):
        download(REPO, mine)
    assert snapshot(mine) == before
    assert validate(mine).ok


def test_download_updates_only_an_unchanged_earlier_download_of_the_same_repo(
    lbf_dataset: Path, hub: HubServer, tmp_path: Path
) -> None:
    first = publish(lbf_dataset, REPO)
    out = tmp_path / "copy"
    assert download(REPO, out).previous_sha is None
    collect(lbf_dataset, CollectConfig(ENV, "random", 4, seed=11))
    second = publish(lbf_dataset, REPO)
    update = download(REPO, out)
    assert (update.previous_sha, update.commit_sha) == (first.commit_sha, second.commit_sha)
    assert 0 < update.fetched < len(update.files)  # only what changed
    assert validate(out).ok and snapshot(out)[STEPS.replace("expert", "random")] == sha256_file(
        lbf_dataset / STEPS.replace("expert", "random")
    )
    assert download(REPO, out).fetched == 0  # already there
    before = snapshot(out)
    assert first.commit_sha is not None
    with pytest.raises(DownloadTargetError, match="not an ancestor"):
        download(REPO, out, revision=first.commit_sha)  # an older revision over a newer one
    publish(lbf_dataset, "llmca/other")
    with pytest.raises(DownloadTargetError, match="not of llmca/other"):
        download("llmca/other", out)
    assert snapshot(out) == before
    collect(out, CollectConfig(ENV, "random", 2, seed=12))  # local work in the downloaded copy
    changed = snapshot(out)
    with pytest.raises(DownloadTargetError, match="has changed since it was downloaded"):
        download(REPO, out)
    assert snapshot(out) == changed


# ---- 4. non-finite credits are never stored as ok ---------------------------------------------


def test_imported_non_finite_credits_fail_their_episodes(lbf_dataset: Path, tmp_path: Path) -> None:
    steps = read_shard(lbf_dataset / STEPS, ["episode_id", "t"])
    ids = steps.column("episode_id").to_numpy()
    credit = np.full((len(ids), 2), 0.25)
    episodes = np.unique(ids)
    poison = {int(episodes[0]): np.nan, int(episodes[1]): np.inf, int(episodes[2]): 1e300, int(episodes[3]): -1e308}
    for episode_id, value in poison.items():
        credit[np.flatnonzero(ids == episode_id)[0], 1] = value
    path = tmp_path / "credits.parquet"
    pq.write_table(pa.table({"episode_id": ids, "t": steps.column("t"), "credit": credit.tolist()}), path)
    result = annotate(lbf_dataset, ImportedCritic("mine", path), tiers=("expert",))
    assert result.failed == len(poison)
    stored = read_shard(lbf_dataset / STEPS, ["episode_id", "credit_mine"])
    values = np.stack(stored.column("credit_mine").to_numpy(zero_copy_only=False))
    assert not np.isinf(values).any()
    for episode_id in poison:
        assert np.isnan(values[ids == episode_id]).all()
    rows = read_shard(lbf_dataset / STEPS.replace("steps", "annotations")).to_pylist()
    failed = {r["episode_id"]: r["error"] for r in rows if r["critic"] == "mine" and r["status"] == "failed"}
    assert set(failed) == set(poison) and all("not finite as float32" in e for e in failed.values())
    assert validate(lbf_dataset).ok


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        ({"episode_id": [0.0, 0.7], "t": [0, 1]}, "episode_id has type double"),
        ({"episode_id": [0, 0], "t": [0, None]}, "null value"),
        ({"episode_id": [0, 0], "t": [0, 1], "credit": [[0.1, None], [0.2, 0.3]]}, "null value"),
        ({"episode_id": [0, 0], "t": [0, 1], "credit": [None, [0.2, 0.3]]}, "null value"),
    ],
    ids=["float-ids", "null-t", "null-element", "null-list"],
)
def test_malformed_credit_files_are_refused(tmp_path: Path, columns: dict[str, list[object]], says: str) -> None:
    path = tmp_path / "credits.parquet"
    pq.write_table(pa.table({"credit": [[0.1, 0.2], [0.2, 0.3]], **columns}), path)
    with pytest.raises(CreditFileError, match=says):
        ImportedCritic("mine", path)


def test_validate_checks_every_credit_column_against_its_status(lbf_dataset: Path) -> None:
    steps = read_shard(lbf_dataset / STEPS)
    ids = np.unique(steps.column("episode_id").to_numpy())
    length = {int(i): int((steps.column("episode_id").to_numpy() == i).sum()) for i in ids}
    bad = np.full((length[int(ids[0])], 2), np.inf, np.float32)
    results = [
        EpisodeCredits(int(ids[0]), bad, None),
        EpisodeCredits(int(ids[1]), np.zeros((length[int(ids[1])], 2)), None),
    ]
    outputs = [CriticOutput(bad), CriticOutput.failed(length[int(ids[1])], 2, "model said no")]
    outputs[1].credits = np.zeros_like(outputs[1].credits)  # a failed episode with numbers in it
    episodes_table = read_shard(lbf_dataset / STEPS.replace("steps", "episodes"))
    with writing(lbf_dataset) as ds:  # a writer that skips the checks of ``annotate``
        spec = spec_from_info(ds.info()["envs"][ENV])
        chosen = pa.array(ids[:2])
        episodes = tables_to_episodes(
            steps.filter(pc.is_in(steps.column("episode_id"), chosen)),
            episodes_table.filter(pc.is_in(episodes_table.column("episode_id"), chosen)).sort_by("episode_id"),
            spec,
        )
        rows = annotation_rows(make_critic("uniform"), episodes, outputs, spec)
        ds.write_critic(ds.shards(ENV, "steps", "expert")[0], steps, "uniform", 2, results, rows)
        ds.record_critic("uniform", {})
        ds.commit()
    messages = [p.message for p in validate(lbf_dataset).problems]
    assert any("annotated 'ok' have credits that are not all finite" in m for m in messages), messages
    assert any("annotated 'failed' have credits that are not all NaN" in m for m in messages), messages


# ---- 10. only regular files are opened ---------------------------------------------------------


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, so a regression that blocks on a FIFO fails by timeout, not forever."""
    code = "from llmca_data.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_fifo_or_link_in_place_of_a_shard_is_refused(lbf_dataset: Path, tmp_path: Path, kind: str) -> None:
    shard = lbf_dataset / STEPS
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    if kind == "fifo":
        os.mkfifo(shard)
    else:
        shard.symlink_to(outside)
    checked = _cli(["validate", str(lbf_dataset)])
    assert checked.returncode == 1 and "not a regular file" in checked.stdout + checked.stderr
    annotated = _cli(["annotate", str(lbf_dataset), "--critic", "uniform"])
    assert (
        annotated.returncode == 2 and "not a regular file" in annotated.stderr and "Traceback" not in annotated.stderr
    )
    code = f"from llmca_data.loaders import OfflineDataset; OfflineDataset.open({str(lbf_dataset)!r}, {ENV!r}).steps()"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert loaded.returncode != 0 and "not a regular file" in loaded.stderr
    assert outside.read_bytes() == (tmp_path / "outside.parquet").read_bytes()


# ---- 11. imported critic ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    "critic_id",
    ["shapley", "uniform", "llm-mca", "llm-anything", "counterfactual-h3", "team", "env", "..", ".", "-", "a\nb",
     "`x`", "<img src=x onerror=alert(1)>", "Mine", "my_critic", "a--b"],
)  # fmt: skip
def test_imported_critic_ids_are_safe_and_never_a_built_in(
    lbf_dataset: Path, tmp_path: Path, critic_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    annotate(lbf_dataset, make_critic("shapley"))
    path = tmp_path / "credits.parquet"
    pq.write_table(pa.table({"episode_id": [0], "t": [0], "credit": [[0.5, 0.5]]}), path)
    before = snapshot(lbf_dataset)
    with pytest.raises(ConfigError):
        ImportedCritic(critic_id, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", str(lbf_dataset), "--from-file", str(path), "--critic-id", critic_id, "--force"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "critic id" in err and "Traceback" not in err
    assert snapshot(lbf_dataset) == before


# ---- smaller findings ------------------------------------------------------------------------


def test_validate_beside_a_writer_says_a_write_is_in_progress(lbf_dataset: Path) -> None:
    with writing(lbf_dataset):
        report = validate(lbf_dataset)
        assert [p.path for p in report.problems] == [LOCK_NAME]
        assert f"pid {os.getpid()}" in report.problems[0].message and "in progress" in report.problems[0].message
    assert validate(lbf_dataset).ok


def test_an_empty_shard_is_reported_as_empty(lbf_dataset: Path) -> None:
    rel = STEPS.replace("expert", "medium")
    empty = read_shard(lbf_dataset / STEPS).slice(0, 0)
    pq.write_table(empty, lbf_dataset / rel)
    manifest = Manifest.load(lbf_dataset)
    manifest.files[rel] = FileEntry(rel, 0, (lbf_dataset / rel).stat().st_size, sha256_file(lbf_dataset / rel))
    manifest.save(lbf_dataset)
    messages = [str(p) for p in validate(lbf_dataset).problems]
    assert any(m.startswith(rel) and "empty shard" in m for m in messages), messages
    assert not any("not sorted" in m for m in messages), messages


def test_workers_are_capped_at_the_cpu_count(caplog: pytest.LogCaptureFixture) -> None:
    cpus = len(os.sched_getaffinity(0))
    with caplog.at_level(logging.WARNING):
        assert cap_workers(1000) == cpus
    assert f"--workers 1000 capped at {cpus}" in caplog.text
    assert cap_workers(1) == 1
