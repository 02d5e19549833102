"""Protocol v2 on the leaderboard: act modes per entry, recorded protocol, diverged entries flagged."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmca_data.baselines.evaluate import PROTOCOL_VERSION, EvalConfig, evaluate_run
from llmca_data.baselines.policy import RUN_METRICS
from llmca_data.leaderboard.assemble import AssembleError, make_submission
from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, evaluate_submission
from llmca_data.leaderboard.render import COLUMNS, render, row_cells
from llmca_data.leaderboard.statistics import StatsConfig, aggregate
from llmca_data.leaderboard.submission import DatasetIdentity, SubmissionError, load_submission
from llmca_data.leaderboard.validate import validate_submission

ENV = "lbf-8x8-2p-2f"
EPISODES = 2
Edit = Callable[[Path, Callable[[dict[str, Any]], None]], None]


def test_sampled_bc_submission_is_verified_sampled_and_diverged_is_kept(
    bc_runs: list[Path], identity: DatasetIdentity, tmp_path: Path
) -> None:
    runs = [Path(shutil.copytree(run, tmp_path / "runs" / run.name)) for run in bc_runs]
    for run in runs:
        (run / "eval.json").unlink(missing_ok=True)
    args: dict[str, Any] = {"team": "llmca", "algorithm": "bc", "code_url": "https://x.org/y", "dataset": identity}
    references = {}
    for run in runs:
        references[json.loads((run / "config.json").read_text())["seed"]] = evaluate_run(
            run, EvalConfig(episodes=EPISODES, act="sample")
        )
    with pytest.raises(AssembleError, match="submit with act='sample'"):
        make_submission(runs, tmp_path / "greedy", **args)  # eval.json sampled, submission greedy
    with (runs[1] / RUN_METRICS).open("a") as f:
        f.write(json.dumps({"step": 20, "diverged": True}) + "\n")
    sub = make_submission(runs, tmp_path / "sub", act="sample", **args)
    body = json.loads((sub / "submission.json").read_text())
    assert (body["act"], body["protocol"]) == ("sample", PROTOCOL_VERSION)
    assert [body["results"][ENV]["expert"][str(s)]["diverged"] for s in range(5)] == [False, True, False, False, False]

    path = evaluate_submission(sub, tmp_path / "results", LeaderboardEvalConfig(episodes=EPISODES), identity)
    assert path.parent.name == "llmca-bc-sample"  # beside a greedy llmca-bc, not over it
    result = json.loads(path.read_text())
    assert (result["submission"]["act"], result["submission"]["protocol"]) == ("sample", PROTOCOL_VERSION)
    for seed, entry in result["entries"][ENV]["expert"].items():
        assert entry["verified"]["act"] == "sample" and entry["verified"]["protocol"] == PROTOCOL_VERSION
        assert entry["verified"]["returns"] == references[int(seed)]["returns"] and entry["flags"] == []
        assert entry["diverged"] is (seed == "1")
    (task,) = aggregate([result], StatsConfig(reps=100))
    (stats,) = task.entries
    assert (stats.act, stats.protocol, stats.diverged) == ("sample", PROTOCOL_VERSION, 1)


def test_act_and_protocol_are_checked(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity) -> None:
    sub = make_sub()
    submission, problems = load_submission(sub)
    assert submission is not None and not problems
    assert (submission.act, submission.protocol, submission.name) == ("greedy", PROTOCOL_VERSION, "llmca-bc")

    def old(body: dict[str, Any]) -> None:  # a submission from before protocol v2
        del body["act"], body["protocol"]
        for seeds in body["results"][ENV].values():
            for entry in seeds.values():
                del entry["diverged"]

    edit(sub, old)
    submission, problems = load_submission(sub)
    assert submission is not None and not problems
    assert (submission.act, submission.protocol) == ("greedy", 1)
    assert not any(e.diverged for e in submission.entries)

    edit(sub, lambda body: body.update(algorithm="iql-cql", act="sample"))
    with pytest.raises(SubmissionError, match="value-based learners act greedily"):
        validate_submission(sub, identity)
    edit(sub, lambda body: body.update(algorithm="bc", act="softmax", protocol=3))
    with pytest.raises(SubmissionError, match="act must be one of greedy, sample") as caught:
        validate_submission(sub, identity)
    assert any("protocol must be an int" in str(p) for p in caught.value.problems)
    edit(sub, lambda body: body.update(act="sample", protocol=2))
    assert validate_submission(sub, identity).submission.name == "llmca-bc-sample"


def _result(name: str, algorithm: str, scores: list[float], act: str | None, diverged: int = 0) -> dict[str, Any]:
    """A results.json body; ``act`` None: one written before protocol v2 (no act, protocol, diverged)."""
    v2 = {} if act is None else {"act": act, "protocol": PROTOCOL_VERSION}
    seeds = {str(i): {"verified": {"normalized_score": s, "mean_return": s / 100, **v2}, "self_reported": {},
                      "flags": [], **({} if act is None else {"diverged": i < diverged})}
             for i, s in enumerate(scores)}  # fmt: skip
    return {"results_version": 2 if v2 else 1, "submission": {"name": name, "team": "t", "algorithm": algorithm, **v2},
            "entries": {ENV: {"expert": seeds}}}  # fmt: skip


def test_render_shows_act_protocol_and_diverged(tmp_path: Path) -> None:
    results = tmp_path / "results"
    bodies = [
        _result("llmca-bc", "bc", [10.0, 20.0, 30.0, 40.0, 50.0], None),
        _result("llmca-bc-sample", "bc", [15.0, 25.0, 35.0, 45.0, 55.0], "sample"),
        _result("team-iql", "iql-cql", [5.0, 60.0, 70.0, 80.0, 90.0], "greedy", diverged=2),
    ]
    for body in bodies:
        (results / body["submission"]["name"]).mkdir(parents=True)
        (results / body["submission"]["name"] / "results.json").write_text(json.dumps(body))
    page = render(results, tmp_path / "site", StatsConfig(reps=200))
    (task,) = page.tasks
    by_name = {e.name: e for e in task.entries}
    assert by_name["llmca-bc"].poi is None and by_name["llmca-bc-sample"].poi is not None  # greedy BC is the baseline
    act = COLUMNS.index("act")
    cells = {name: row_cells(1, e) for name, e in by_name.items()}
    assert cells["llmca-bc"][act] == "greedy (protocol 1)" and cells["llmca-bc-sample"][act] == "sample"
    assert cells["team-iql"][act] == "greedy" and cells["team-iql"][-1] == "0, diverged 2/5"
    assert cells["llmca-bc"][-1] == "0"
    markdown = page.markdown.read_text()
    assert "| act |" in markdown and "0, diverged 2/5" in markdown and "greedy (protocol 1)" in markdown
    assert "diverged 2/5" in page.html.read_text()
