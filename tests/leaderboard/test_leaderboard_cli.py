"""`llmca leaderboard validate | evaluate | render` through typer's CliRunner, with their exit codes."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from llmca_data.cli import leaderboard_app

ENV = "lbf-8x8-2p-2f"
SEED0 = f"checkpoints/{ENV}/expert/seed0.safetensors"


def test_validate_accepts_then_rejects(make_sub: Callable[..., Path], lbf_dataset_master: Path) -> None:
    runner = CliRunner()
    sub = make_sub()
    ok = runner.invoke(leaderboard_app, ["validate", str(sub), "--dataset", str(lbf_dataset_master)])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output and f"{ENV}/expert (5 seeds)" in ok.output

    (sub / SEED0).write_bytes(pickle.dumps({"weights": [0.0]}))
    bad = runner.invoke(leaderboard_app, ["validate", str(sub), "--dataset", str(lbf_dataset_master)])
    assert bad.exit_code == 1
    assert "a pickle file renamed .safetensors" in bad.output and SEED0 in bad.output and "REJECTED" in bad.output

    no_dataset = runner.invoke(leaderboard_app, ["validate", str(sub)])
    assert no_dataset.exit_code == 1 and "cannot be checked without the dataset" in no_dataset.output


def test_evaluate_then_render(make_sub: Callable[..., Path], lbf_dataset_master: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    results = tmp_path / "results"
    for name, algorithm in (("bc", "bc"), ("other", "my-algo")):
        sub = make_sub(name, algorithm=algorithm)
        args = ["evaluate", str(sub), "--out", str(results), "--episodes", "2", "--dataset", str(lbf_dataset_master)]
        done = runner.invoke(leaderboard_app, args)
        assert done.exit_code == 0, done.output
        assert f"{ENV}/expert (greedy): 5 seeds" in done.output and "verified results" in done.output
    assert sorted(p.parent.name for p in results.glob("*/results.json")) == ["llmca-bc", "llmca-my-algo"]

    site = tmp_path / "site"
    shown = runner.invoke(leaderboard_app, ["render", str(results), "--out", str(site), "--reps", "200"])
    assert shown.exit_code == 0, shown.output
    assert "2 entries" in shown.output and (site / "index.html").is_file() and (site / "leaderboard.md").is_file()
    stats = json.loads((site / "statistics.json").read_text())
    (task,) = stats["tasks"]
    assert {e["name"] for e in task["entries"]} == {"llmca-bc", "llmca-my-algo"}
    other = next(e for e in task["entries"] if e["name"] == "llmca-my-algo")
    assert other["poi"] is not None  # compared with the bc entry


def test_evaluate_rejects_with_exit_1(make_sub: Callable[..., Path], lbf_dataset_master: Path, tmp_path: Path) -> None:
    sub = make_sub()
    (sub / "evil.safetensors").symlink_to("/etc/hostname")
    body = json.loads((sub / "submission.json").read_text())
    body["results"][ENV]["expert"]["0"]["checkpoint"] = "evil.safetensors"
    (sub / "submission.json").write_text(json.dumps(body))
    args = ["evaluate", str(sub), "--out", str(tmp_path / "r"), "--dataset", str(lbf_dataset_master)]
    result = CliRunner().invoke(leaderboard_app, args)
    assert result.exit_code == 1 and "symlink" in result.output and not (tmp_path / "r").exists()
