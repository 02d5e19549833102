"""Aggregates equal rliable called directly on known inputs, and do not depend on the other entries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rliable import library, metrics

from llmca_data.leaderboard.statistics import NoResultsError, StatsConfig, aggregate, load_results

REPS = 500
Known = dict[str, tuple[str, list[float]]]


def rliable_direct(scores: list[float], reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    np.random.seed(seed)
    points, intervals = library.get_interval_estimates(
        {"x": np.array(scores)[:, None]},
        lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]),
        reps=reps,
    )
    return points["x"], intervals["x"]


def test_iqm_and_intervals_equal_rliable(fake_results: Callable[..., Path], known: Known) -> None:
    config = StatsConfig(reps=REPS, seed=7)
    (task,) = aggregate(load_results(fake_results(known)), config)
    assert (task.env_id, task.tier, task.metric) == ("lbf-8x8-2p-2f", "expert", "normalized_score")
    by_name = {e.name: e for e in task.entries}
    assert set(by_name) == set(known)
    for name, (algorithm, scores) in known.items():
        entry = by_name[name]
        point, ci = rliable_direct(scores, REPS, seed=7)
        assert entry.algorithm == algorithm and entry.scores == scores
        assert entry.iqm == pytest.approx(point[0]) and entry.mean == pytest.approx(np.mean(scores))
        assert entry.iqm_ci == pytest.approx(tuple(ci[:, 0])) and entry.mean_ci == pytest.approx(tuple(ci[:, 1]))
        assert entry.std == pytest.approx(np.std(scores, ddof=1))
        assert entry.iqm_ci[0] <= entry.iqm <= entry.iqm_ci[1]
    # IQM by hand on the 8 evenly spaced scores: the middle four, 20..50 → 35.
    assert by_name["team-b-vdn"].iqm == pytest.approx(35.0)
    assert [e.name for e in task.entries] == ["team-a-iql", "team-b-vdn", "llmca-bc"]  # ranked by IQM


def test_probability_of_improvement_equals_rliable(fake_results: Callable[..., Path], known: Known) -> None:
    (task,) = aggregate(load_results(fake_results(known)), StatsConfig(reps=REPS, seed=3))
    by_name = {e.name: e for e in task.entries}
    assert by_name["llmca-bc"].poi is None and by_name["llmca-bc"].poi_ci is None
    bc = np.array(known["llmca-bc"][1])[:, None]
    for name in ("team-a-iql", "team-b-vdn"):
        x = np.array(known[name][1])[:, None]
        np.random.seed(3)
        point, ci = library.get_interval_estimates({"p": [x, bc]}, metrics.probability_of_improvement, reps=REPS)
        assert by_name[name].poi == pytest.approx(float(point["p"]))
        assert by_name[name].poi_ci == pytest.approx(tuple(np.ravel(ci["p"])))
    # Mann-Whitney U / (n_x n_y) by hand: the share of (x, BC) pairs that x wins, ties counting half.
    wins = sum(a > b for a in known["team-a-iql"][1] for b in known["llmca-bc"][1])
    ties = sum(a == b for a in known["team-a-iql"][1] for b in known["llmca-bc"][1])
    assert by_name["team-a-iql"].poi == pytest.approx((wins + 0.5 * ties) / 25)


def test_an_entry_does_not_depend_on_the_others(fake_results: Callable[..., Path], known: Known) -> None:
    config = StatsConfig(reps=REPS)
    alone = aggregate(load_results(fake_results({"llmca-bc": known["llmca-bc"]}, "alone")), config)[0].entries[0]
    np.random.seed(123)
    state = np.random.get_state()
    together = {e.name: e for e in aggregate(load_results(fake_results(known, "all")), config)[0].entries}
    assert together["llmca-bc"].iqm_ci == alone.iqm_ci and together["llmca-bc"].mean_ci == alone.mean_ci
    assert np.array_equal(np.random.get_state()[1], state[1]), "the caller's numpy state must be restored"


def test_no_results_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(NoResultsError, match="llmca leaderboard evaluate"):
        load_results(tmp_path)
