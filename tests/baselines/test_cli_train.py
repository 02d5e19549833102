"""`llmca train` then `llmca evaluate`: the thin CLI over the baselines, on a credit reward."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic

CLI = [sys.executable, "-c", "from llmca_data.cli import main; main()"]


@pytest.mark.parametrize("algo", ["iql-cql", "d3rlpy-cql"])
def test_train_then_evaluate(lbf_dataset: Path, tmp_path: Path, algo: str) -> None:
    annotate(lbf_dataset, make_critic("shapley"))
    run_dir = tmp_path / algo
    args = ["train", algo, "--dataset", str(lbf_dataset), "--env", "lbf-8x8-2p-2f", "--tier", "expert",
            "--reward", "credit_shapley", "--credit-scale", "episode", "--steps", "20", "--device", "cpu",
            "--out", str(run_dir)]  # fmt: skip
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == algo and config.get("reward") == "credit_shapley" and config["credit_scale"] == "episode"
    assert not (tmp_path / "d3rlpy_logs").exists()
    proc = subprocess.run([*CLI, "evaluate", str(run_dir), "--episodes", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 3 and len(result["returns"]) == 3 and "normalized_score" in result


def test_unknown_algorithm_names_the_valid_ones(tmp_path: Path) -> None:
    args = ["train", "qmix", "--dataset", str(tmp_path), "--env", "lbf-8x8-2p-2f", "--out", str(tmp_path / "r")]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "bc, filtered-bc, iql-cql, vdn-cql" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refused_reward_and_config_keys_are_clear_errors(lbf_dataset: Path, tmp_path: Path) -> None:
    base = ["--dataset", str(lbf_dataset), "--env", "lbf-8x8-2p-2f", "--out", str(tmp_path / "r"), "--steps", "5"]
    proc = subprocess.run([*CLI, "train", "vdn-cql", *base, "--reward", "env"], capture_output=True, text=True)
    assert proc.returncode == 2 and "drop --reward env" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "train", "bc", *base, "--credit-scale", "step"], capture_output=True, text=True)
    assert proc.returncode == 2 and "drop --credit-scale step" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "train", "iql-cql", *base, "--credit-scale", "steps"], capture_output=True, text=True)
    assert proc.returncode == 2 and "'none', 'step', 'episode'" in proc.stderr and "Traceback" not in proc.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"cql_alpha": 0.1, "gama": 0.9}))
    proc = subprocess.run([*CLI, "train", "iql-cql", *base, "--config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown config key 'gama'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written
