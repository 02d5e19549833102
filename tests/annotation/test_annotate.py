"""`llmca annotate` on real datasets: columns, rows, idempotence, retries, kills, imports."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmca_data.annotation.annotate import annotate, plan_episodes
from llmca_data.annotation.evaluate import critic_eval
from llmca_data.annotation.imported import CreditFileError, ImportedCritic
from llmca_data.annotation.registry import make_critic
from llmca_data.collect import CollectConfig, collect
from llmca_data.envs import CONTRACT_ENV_IDS
from llmca_data.errors import DatasetNotFoundError
from llmca_data.layout import PENDING_PATH
from llmca_data.schema import from_fsl, fsl
from llmca_data.shards import Manifest, read_shard, write_shard
from llmca_data.validate import validate

CLI = [sys.executable, "-c", "from llmca_data.cli import main; main()"]
STEPS = "data/lbf-8x8-2p-2f/steps/random-00000.parquet"
ANNOTATIONS = "data/lbf-8x8-2p-2f/annotations/random-00000.parquet"


def credits(root: Path, rel: str, column: str) -> np.ndarray:
    table = read_shard(root / rel, [column])
    return from_fsl(table.column(column), (table.schema.field(column).type.list_size,))


def test_annotate_adds_columns_rows_and_metadata(lbf_dataset: Path) -> None:
    for critic_id in ("uniform", "shapley", "counterfactual"):
        result = annotate(lbf_dataset, make_critic(critic_id))
        assert (result.episodes, result.failed, result.skipped) == (20, 0, 0)
    schema = pq.read_schema(lbf_dataset / STEPS)
    for column in ("credit_uniform", "credit_shapley", "credit_counterfactual"):
        assert schema.field(column).type == fsl(pa.float32(), 2)
    rows = read_shard(lbf_dataset / ANNOTATIONS).to_pylist()
    assert len(rows) == 12 * 3 and {r["status"] for r in rows} == {"ok"}
    assert all(r["rationale"] == ["", ""] for r in rows)
    info = json.loads((lbf_dataset / "meta/info.json").read_text())
    assert info["critics"]["shapley"]["params"]["type"] == "shapley"
    assert validate(lbf_dataset).ok
    reward = read_shard(lbf_dataset / STEPS, ["reward_team"]).column("reward_team").to_numpy()
    np.testing.assert_allclose(credits(lbf_dataset, STEPS, "credit_shapley").sum(axis=1), reward, atol=1e-5)


def test_rerun_is_idempotent_and_force_recomputes_the_same(lbf_dataset: Path) -> None:
    annotate(lbf_dataset, make_critic("shapley"))
    before = Manifest.load(lbf_dataset).files
    again = annotate(lbf_dataset, make_critic("shapley"))
    assert (again.episodes, again.skipped, again.shards) == (0, 20, [])
    assert Manifest.load(lbf_dataset).files == before
    values = credits(lbf_dataset, STEPS, "credit_shapley")
    forced = annotate(lbf_dataset, make_critic("shapley"), force=True)
    assert forced.episodes == 20
    np.testing.assert_array_equal(credits(lbf_dataset, STEPS, "credit_shapley"), values)
    assert len(read_shard(lbf_dataset / ANNOTATIONS)) == 12  # replaced, not duplicated


def test_a_failed_episode_gets_nan_and_only_it_is_retried(lbf_dataset: Path) -> None:
    original = read_shard(lbf_dataset / STEPS)
    obs = from_fsl(original.column("obs"), (2, 12)).copy()
    victim = int(original.column("episode_id")[0].as_py())
    obs[0, 0, 0] += 1  # the first step of the first episode no longer matches its seed
    manifest = Manifest.load(lbf_dataset)
    tampered = original.set_column(2, original.schema.field("obs"), pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(obs.reshape(-1)), 12), 2))  # fmt: skip
    manifest.files[STEPS] = write_shard(lbf_dataset, STEPS, tampered)
    manifest.save(lbf_dataset)
    result = annotate(lbf_dataset, make_critic("counterfactual"))
    assert result.failed == 1
    ids = read_shard(lbf_dataset / STEPS, ["episode_id"]).column("episode_id").to_numpy()
    values = credits(lbf_dataset, STEPS, "credit_counterfactual")
    assert np.isnan(values[ids == victim]).all() and not np.isnan(values[ids != victim]).any()
    row = next(r for r in read_shard(lbf_dataset / ANNOTATIONS).to_pylist() if r["episode_id"] == victim)
    assert row["status"] == "failed" and "observation at step 0" in row["error"]
    assert validate(lbf_dataset).ok  # a failed annotation is valid data
    rerun = annotate(lbf_dataset, make_critic("counterfactual"))
    assert (rerun.episodes, rerun.skipped, rerun.failed) == (1, 19, 1)


@pytest.fixture
def three_shard_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for seed in range(3):
        collect(root, CollectConfig("lbf-10x10-3p-3f", "random", 30, seed=seed))
    return root


def test_a_killed_annotation_leaves_a_valid_dataset_and_resumes(
    three_shard_dataset: Path, poll: Callable[..., None]
) -> None:
    root = three_shard_dataset
    clean = root.parent / "clean"
    shutil.copytree(root, clean)
    cmd = [*CLI, "annotate", "--critic", "counterfactual", "--horizon", "20"]
    proc = subprocess.Popen([*cmd, str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = root / "meta/manifest.json"
    before = manifest.read_bytes()
    # Kill once the first shard is committed, while the next ones are being computed.
    poll(lambda: (manifest.read_bytes() != before and not (root / PENDING_PATH).exists()) or proc.poll() is not None,
         120)  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "annotation finished before the kill; make it slower"
    assert validate(root).ok
    subprocess.run([*cmd, str(root)], check=True, capture_output=True)
    subprocess.run([*cmd, str(clean)], check=True, capture_output=True)
    for name in Manifest.load(root).shards(kind="steps"):
        np.testing.assert_array_equal(
            credits(root, str(name), "credit_counterfactual_h20"),
            credits(clean, str(name), "credit_counterfactual_h20"),
        )
    assert validate(root).ok


def test_import_credits_from_a_file(lbf_dataset: Path, tmp_path: Path) -> None:
    annotate(lbf_dataset, make_critic("uniform"))
    parts = []
    for name in Manifest.load(lbf_dataset).shards(kind="steps"):
        t = read_shard(lbf_dataset / str(name), ["episode_id", "t", "credit_uniform"])
        parts.append(t.rename_columns(["episode_id", "t", "credit"]))
    table = pa.concat_tables(parts)
    path = tmp_path / "mine.parquet"
    pq.write_table(table.slice(1), path)  # one step missing
    critic = ImportedCritic("my-critic", path)
    with pytest.raises(CreditFileError, match="does not cover 1 steps"):
        critic.check_coverage(lbf_dataset)
    proc = subprocess.run([*CLI, "annotate", str(lbf_dataset), "--from-file", str(path), "--critic-id", "my-critic"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "does not cover" in proc.stderr
    assert "credit_my_critic" not in pq.read_schema(lbf_dataset / STEPS).names  # nothing written
    pq.write_table(table, path)
    proc = subprocess.run([*CLI, "annotate", str(lbf_dataset), "--from-file", str(path), "--critic-id", "my-critic"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(
        credits(lbf_dataset, STEPS, "credit_my_critic"), credits(lbf_dataset, STEPS, "credit_uniform")
    )
    rows = critic_eval(lbf_dataset, "my-critic", "uniform")
    assert rows[-1]["coverage"] == 1.0 and rows[-1]["mae_scaled"] in (None, 0.0)


@pytest.mark.slow
def test_every_env_annotates_with_every_reference_critic(tmp_path: Path) -> None:
    for env_id in CONTRACT_ENV_IDS:
        collect(tmp_path, CollectConfig(env_id, "medium", 1 if env_id.startswith("rware") else 3, seed=5))
    for critic_id in ("uniform", "shapley", "counterfactual"):
        assert annotate(tmp_path, make_critic(critic_id), workers=2).failed == 0
    assert validate(tmp_path).ok
    rows = {(r["env_id"], r["tier"]): r for r in critic_eval(tmp_path, "counterfactual", "shapley")}
    assert all(rows[env_id, "all"]["coverage"] == 1.0 for env_id in CONTRACT_ENV_IDS)


def test_cli_errors_name_the_fix(lbf_dataset: Path) -> None:
    proc = subprocess.run([*CLI, "annotate", str(lbf_dataset), "--critic", "shapely"], capture_output=True, text=True)
    assert proc.returncode == 2 and "uniform, shapley, counterfactual" in proc.stderr
    proc = subprocess.run(
        [*CLI, "critic-eval", str(lbf_dataset), "--critic", "llm-mca"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "llmca annotate" in proc.stderr


def test_annotate_never_imports_torch(lbf_dataset: Path) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from llmca_data.cli import app; "
        f"r = CliRunner().invoke(app, ['annotate', {str(lbf_dataset)!r}, '--critic', 'shapley']); "
        "assert r.exit_code == 0, r.output; "
        "from llmca_data.annotation.llm import critic, client, prompt, reply; "
        "assert 'torch' not in sys.modules and 'd3rlpy' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_annotate_where_there_is_no_dataset_creates_nothing(tmp_path: Path) -> None:
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    for root in (missing, empty):
        with pytest.raises(DatasetNotFoundError, match=f"no dataset at {root}.*llmca collect.*llmca download"):
            annotate(root, make_critic("uniform"))
        with pytest.raises(DatasetNotFoundError):
            plan_episodes(root, "uniform")
    assert not missing.exists() and list(empty.iterdir()) == []  # not even a lock file
    credit_file = tmp_path / "credits.parquet"
    pq.write_table(pa.table({"episode_id": [0], "t": [0], "credit": [[0.5, 0.5]]}), credit_file)
    with pytest.raises(DatasetNotFoundError):
        ImportedCritic("my-critic", credit_file).check_coverage(missing)
    for command in ("annotate", "critic-eval"):
        proc = subprocess.run([*CLI, command, str(missing), "--critic", "uniform"], capture_output=True, text=True)
        assert proc.returncode != 0 and "no dataset at" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not missing.exists()
