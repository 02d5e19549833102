"""The credit experiment's table (``leaderboard/credit.py``, ``render --credit-results``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmca_data.cli import app
from llmca_data.leaderboard.credit import (
    CREDIT_FORMAT,
    CREDIT_VERSION,
    CreditResultsError,
    credit_markdown,
    credit_stats,
    read_credit_results,
    write_credit_results,
)
from llmca_data.leaderboard.statistics import StatsConfig

SCORES = {
    "true": {"iql-cql": [10, 12, 11, 9, 13], "iql-cql+env": [30, 31, 29, 32, 28], "shap|ley": [30, 31, 29, 32, 28]},
    "delayed": {"iql-cql": [5, 6, 4, 5, 6], "iql-cql+env": [5, 6, 4, 5, 6], "shapley-delayed": [1, 2, 0, 1, 2]},
}


def results(scores: dict[str, dict[str, list[float]]] = SCORES) -> dict[str, Any]:
    rows = [{"env_id": "lbf-8x8-2p-2f", "tier": "medium", "setting": setting, "arm": arm, "seed": seed,
             "normalized_score": score, "mean_cost": 0.0, "frozen_episodes": 3, "diverged": arm == "shap|ley"}
            for setting, arms in scores.items() for arm, values in arms.items()
            for seed, score in enumerate(values)]  # fmt: skip
    return {"format": CREDIT_FORMAT, "version": CREDIT_VERSION, "baselines": {"team": "iql-cql", "env": "iql-cql+env"},
            "rows": rows}  # fmt: skip


def test_probability_of_improvement_over_team_and_env_per_setting() -> None:
    tasks = credit_stats(results(), StatsConfig(reps=200))
    assert [(t.setting, len(t.entries)) for t in tasks] == [("true", 3), ("delayed", 3)]
    true = {e.arm: e for e in tasks[0].entries}
    assert true["shap|ley"].vs["team"] is not None and true["shap|ley"].vs["team"][0] == 1.0  # every run above
    assert true["shap|ley"].vs["env"] is not None and true["shap|ley"].vs["env"][0] == pytest.approx(0.5)  # same runs
    assert true["iql-cql"].vs["team"] is None and true["iql-cql+env"].vs["env"] is None
    delayed = {e.arm: e for e in tasks[1].entries}
    assert delayed["shapley-delayed"].vs["team"] is not None and delayed["shapley-delayed"].vs["team"][0] == 0.0
    assert (
        delayed["shapley-delayed"].iqm_ci[0] <= delayed["shapley-delayed"].iqm <= delayed["shapley-delayed"].iqm_ci[1]
    )
    assert true["shap|ley"].diverged == 5 and true["iql-cql"].frozen == 3
    text = credit_markdown(tasks, results(), StatsConfig(reps=200))
    assert "**lbf-8x8-2p-2f · medium · delayed**" in text and "shap\\|ley" in text  # escaped: one table cell
    assert "| shap\\|ley | 5 | 30.0 [" in text and "1.00 [1.00, 1.00]" in text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(format="other"), "not a llmca-credit-experiment file"),
        (lambda b: b.update(baselines={"team": "iql-cql"}), "'baselines' must name"),
        (lambda b: b["rows"][0].pop("arm"), r"rows\[0\]\.arm must be a string"),
        (lambda b: b["rows"][1].update(seed="1"), r"rows\[1\]\.seed must be an integer"),
        (lambda b: b["rows"][2].update(normalized_score=True), r"rows\[2\]\.normalized_score must be a finite"),
    ],
)
def test_a_bad_results_file_is_refused_naming_the_field(tmp_path: Path, edit: Any, message: str) -> None:
    body = results()
    edit(body)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(body))
    with pytest.raises(CreditResultsError, match=message):
        read_credit_results(path)


def test_non_json_numbers_and_garbage_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results()).replace('"normalized_score": 10', '"normalized_score": NaN', 1))
    with pytest.raises(CreditResultsError, match="NaN is not JSON"):
        read_credit_results(path)
    path.write_bytes(b"\xff\x00 not json")
    with pytest.raises(CreditResultsError, match="not a readable JSON file"):
        read_credit_results(path)


def test_the_writer_of_the_experiments_writes_what_the_reader_accepts(tmp_path: Path) -> None:
    body = results()
    path = tmp_path / "out" / "results.json"
    written = write_credit_results(path, "offline", body["baselines"], body["rows"], budget={"seeds": 5})
    read = read_credit_results(path)
    assert read == written and read["kind"] == "offline" and read["budget"] == {"seeds": 5}
    assert read["package_version"] and not list(path.parent.glob(".*.tmp*"))


def test_render_writes_credit_md_and_keeps_nothing_half_written(tmp_path: Path) -> None:
    good = tmp_path / "results.json"
    good.write_text(json.dumps(results()))
    site = tmp_path / "site"
    shown = CliRunner().invoke(app, ["leaderboard", "render", "--credit-results", str(good), "--out", str(site),
                                     "--reps", "200"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    text = (site / "credit.md").read_text()
    assert "P(> team)" in text and "iql-cql+env" in text and "credit experiment table" in shown.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    again = CliRunner().invoke(app, ["leaderboard", "render", "--credit-results", str(bad), "--out", str(site)])
    assert again.exit_code != 0 and "llmca-credit-experiment" in str(again.exception)
    assert (site / "credit.md").read_text() == text
