"""The trusted evaluator reproduces `evaluate_run`, keeps self-reported numbers unverified and flags lies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.baselines.evaluate import PROTOCOL_VERSION, EvalConfig, evaluate_run
from llmca_data.leaderboard.assemble import AssembleError, make_submission
from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, disagreements, evaluate_submission
from llmca_data.leaderboard.submission import DatasetIdentity, SubmissionError
from llmca_data.leaderboard.validate import validate_submission

ENV = "lbf-8x8-2p-2f"
EPISODES = 2
Edit = Callable[[Path, Callable[[dict[str, Any]], None]], None]


def test_verified_numbers_equal_evaluate_run(
    bc_runs: list[Path], make_sub: Callable[..., Path], identity: DatasetIdentity, tmp_path: Path
) -> None:
    sub = make_sub()
    path = evaluate_submission(sub, tmp_path / "results", LeaderboardEvalConfig(episodes=EPISODES), identity)
    assert path == tmp_path / "results" / "llmca-bc" / "results.json"
    body = json.loads(path.read_text())
    seeds = body["entries"][ENV]["expert"]
    assert sorted(seeds, key=int) == ["0", "1", "2", "3", "4"]
    for run in bc_runs:
        reference = evaluate_run(run, EvalConfig(episodes=EPISODES))  # what `llmca evaluate RUN` computes
        seed = str(json.loads((run / "config.json").read_text())["seed"])
        verified = seeds[seed]["verified"]
        assert verified == {k: v for k, v in reference.items() if k not in ("algo", "eval_config", "diverged")}
        assert seeds[seed]["diverged"] is reference["diverged"] is False
    provenance = body["provenance"]
    assert provenance["package_version"] == __version__ and provenance["schema_version"] == SCHEMA_VERSION
    assert provenance["eval_config"]["episodes"] == EPISODES and provenance["dataset"] == identity.to_dict()
    assert provenance["protocol"] == PROTOCOL_VERSION and body["submission"]["act"] == "greedy"
    assert body["submission"]["team"] == "llmca" and (path.parent / "submission.json").is_file()


def test_self_reported_numbers_are_kept_unverified_and_flagged(
    bc_runs: list[Path], make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity, tmp_path: Path
) -> None:
    runs = [Path(shutil.copytree(run, tmp_path / "runs" / run.name)) for run in bc_runs]
    for run in runs:
        evaluate_run(run, EvalConfig(episodes=EPISODES))  # eval.json → honest self-reported metrics
    sub = make_sub(runs=runs)
    edit(sub, lambda body: body["results"][ENV]["expert"]["3"]["metrics"].update(normalized_score=999.0))
    path = evaluate_submission(sub, tmp_path / "results", LeaderboardEvalConfig(episodes=EPISODES), identity)
    seeds = json.loads(path.read_text())["entries"][ENV]["expert"]
    assert all(s["self_reported_status"] == "unverified" for s in seeds.values())
    assert seeds["0"]["self_reported"]["mean_return"] == seeds["0"]["verified"]["mean_return"]
    assert seeds["0"]["flags"] == []
    assert seeds["3"]["self_reported"]["normalized_score"] == 999.0
    assert len(seeds["3"]["flags"]) == 1 and seeds["3"]["flags"][0].startswith("normalized_score: self-reported 999")


def test_disagreement_tolerance() -> None:
    verified = {"normalized_score": 50.0, "success_rate": 0.5, "mean_return": 20.0, "mean_cost": 0.0}
    assert disagreements({"normalized_score": 59.0, "mean_return": 21.9, "success_rate": 0.55}, verified, 0.1) == []
    flags = disagreements({"normalized_score": 61.0, "mean_return": 23.0, "mean_cost": float("nan")}, verified, 0.1)
    assert [f.split(":")[0] for f in flags] == ["normalized_score", "mean_return", "mean_cost"]


def test_rejected_submission_writes_nothing(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                            tmp_path: Path) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body["results"][ENV]["expert"].pop("0"))
    with pytest.raises(SubmissionError, match="MIN_SEEDS"):
        evaluate_submission(sub, tmp_path / "results", LeaderboardEvalConfig(episodes=EPISODES), identity)
    assert not (tmp_path / "results").exists()


def test_qmix_runs_submit_with_their_mixer(qmix_runs: list[Path], make_sub: Callable[..., Path],
                                           identity: DatasetIdentity, tmp_path: Path) -> None:  # fmt: skip
    sub = make_sub("qmix", qmix_runs, algorithm="qmix-cql")
    body = json.loads((sub / "submission.json").read_text())
    entry = body["results"][ENV]["expert"]["0"]
    assert entry["architecture"] == "agent-net+qmix-mixer" and entry["config"]["state_dim"] > 0
    assert entry["training"]["algo"] == "qmix-cql"
    checked = validate_submission(sub, identity)
    assert len(checked.seeds) == 5
    path = evaluate_submission(sub, tmp_path / "results", LeaderboardEvalConfig(episodes=EPISODES), identity)
    verified = json.loads(path.read_text())["entries"][ENV]["expert"]["2"]["verified"]
    reference = evaluate_run(qmix_runs[2], EvalConfig(episodes=EPISODES))
    assert verified["returns"] == reference["returns"]


def test_make_submission_refuses_what_it_cannot_submit(bc_runs: list[Path], identity: DatasetIdentity,
                                                       tmp_path: Path) -> None:  # fmt: skip
    args: dict[str, Any] = {"team": "t", "algorithm": "bc", "code_url": "https://x.org/y", "dataset": identity}
    with pytest.raises(AssembleError, match="already given by another run"):
        make_submission([bc_runs[0], bc_runs[0]], tmp_path / "dup", **args)
    d3 = tmp_path / "d3rlpy-run"
    d3.mkdir()
    (d3 / "config.json").write_text(json.dumps({"algo": "d3rlpy-cql", "env_id": ENV}))
    (d3 / "model.safetensors").write_bytes(b"")
    with pytest.raises(AssembleError, match="no allowlisted architecture"):
        make_submission([d3], tmp_path / "d3", **args)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(AssembleError, match="not empty"):
        make_submission(bc_runs, tmp_path / "full", **args)
