"""Credit-quality metrics on tiny hand-computed arrays, plus property tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmca_data.annotation.metrics import CreditScores, combine_tallies, score_credits, tally_credits

NAN = float("nan")


def score(
    critic: list[list[float]],
    reference: list[list[float]],
    reward: list[float] | None = None,
    episode: list[int] | None = None,
    tol: float = 1e-6,
) -> CreditScores:
    c, r = np.array(critic, dtype=np.float64), np.array(reference, dtype=np.float64)
    rew = np.ones(len(c)) if reward is None else np.array(reward, dtype=np.float64)
    ep = np.arange(len(c)) if episode is None else np.array(episode)
    return score_credits(c, r, rew, ep, tol)


REF = [[1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [0.5, 0.2, -1.0]]


def test_perfect_agreement() -> None:
    s = score(REF, REF, episode=[0, 0, 1])
    assert (s.sign_agreement, s.top_agent_accuracy, s.spearman, s.mae_scaled) == (1.0, 1.0, 1.0, 0.0)
    assert s.episode_total_pearson == pytest.approx(1.0) and s.coverage == 1.0
    assert (s.steps, s.rewarded_steps, s.sign_pairs, s.top_steps, s.spearman_steps, s.mae_steps) == (3, 3, 9, 3, 3, 3)
    assert (s.episodes, s.episodes_covered, s.episode_pairs, s.nan_steps) == (2, 2, 6, 0)


def test_sign_flipped_critic() -> None:
    s = score((-np.array(REF)).tolist(), REF)
    assert s.sign_agreement == 0.0
    assert s.top_agent_accuracy == 0.0  # the reference's top is the flipped critic's bottom
    assert s.spearman == -1.0
    assert s.mae_scaled is not None and s.mae_scaled > 0  # a negative factor is never used to rescue it
    assert s.unscaled_steps == s.mae_steps


def test_sign_dead_zone_and_pairs() -> None:
    s = score([[0.5, 1e-7, 3.0]], [[1.0, 0.0, -2.0]])
    assert s.sign_agreement == pytest.approx(2 / 3) and s.sign_pairs == 3


def test_only_rewarded_steps_count() -> None:
    s = score([[1.0, -1.0], [1.0, -1.0], [1.0, 1.0]], [[1.0, 1.0]] * 3, reward=[0.0, 1e-7, -2.0])
    assert s.rewarded_steps == 1 and s.sign_pairs == 2 and s.sign_agreement == 1.0
    assert s.steps == 3


def test_reference_tie_excludes_the_step() -> None:
    s = score([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0]], [[1.0, 1.0, 0.0], [1.0, 1.0 + 1e-7, 0.0]])
    assert s.top_steps == 0 and s.reference_tie_steps == 2 and s.top_agent_accuracy is None


def test_critic_tie_is_a_miss() -> None:
    s = score([[2.0, 2.0, 0.0], [3.0, 1.0, 0.0]], [[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    assert s.top_steps == 2 and s.critic_tie_steps == 1 and s.top_agent_accuracy == 0.5


def test_permuted_agents_lower_top_agent_accuracy() -> None:
    ref = [[3.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 3.0], [3.0, 0.0, 1.0]]
    assert score(ref, ref).top_agent_accuracy == 1.0
    rolled = np.roll(np.array(ref), 1, axis=1).tolist()
    assert score(rolled, ref).top_agent_accuracy == 0.0
    three_right = [*ref[:3], rolled[3]]
    assert score(three_right, ref).top_agent_accuracy == 0.75


def test_single_agent_always_has_a_unique_top() -> None:
    s = score([[1.0], [2.0]], [[3.0], [-1.0]])
    assert s.top_steps == 2 and s.top_agent_accuracy == 1.0 and s.spearman is None


def test_spearman_hand_computed() -> None:
    # ranks (1, 3, 2, 4) vs (1, 2, 3, 4): 1 − 6·2 / (4·15) = 0.8
    assert score([[1.0, 3.0, 2.0, 4.0]], [[1.0, 2.0, 3.0, 4.0]]).spearman == pytest.approx(0.8)
    # average ranks (1.5, 1.5, 3) vs (1, 2, 3): cov 1.5 / sqrt(1.5 · 2)
    tie = 1.5 / math.sqrt(3.0)
    assert score([[1.0, 1.0, 2.0]], [[1.0, 2.0, 3.0]]).spearman == pytest.approx(tie)
    s = score([[1.0, 1.0, 2.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    assert s.spearman == pytest.approx((tie - 1.0) / 2)
    assert (s.spearman_steps, s.constant_steps) == (2, 1)


def test_spearman_ties_and_constants_within_tol() -> None:
    near_tie = score([[1.0, 1.0 + 1e-7, 2.0]], [[1.0, 2.0, 3.0]])
    assert near_tie.spearman == pytest.approx(1.5 / math.sqrt(3.0))
    # max − min = 1.2 tol, but consecutive values chain within tol: one tie group, so constant
    chained = score([[0.0, 0.6e-6, 1.2e-6]], [[1.0, 2.0, 3.0]])
    assert chained.spearman is None and chained.constant_steps == 1 and chained.spearman_steps == 0
    assert score([[1.0, 2.0, 3.0]], [[2.0, 2.0, 2.0]]).constant_steps == 1


def test_spearman_needs_three_agents() -> None:
    s = score([[1.0, 2.0], [2.0, 1.0]], [[1.0, 2.0], [1.0, 2.0]])
    assert s.spearman is None and s.spearman_steps == 0 and s.constant_steps == 0


def test_mae_scaled() -> None:
    assert score([[2.0, 2.0]], [[1.0, 3.0]]).mae_scaled == 1.0  # same sum: no scaling
    assert score([[1.0, 1.0]], [[1.0, 3.0]]).mae_scaled == 1.0  # scaled ×2 to (2, 2)
    assert score([[2.0, 6.0]], [[1.0, 3.0]]).mae_scaled == 0.0  # a multiple of the reference
    zero = score([[1.0, -1.0]], [[2.0, 0.0]])  # zero-sum critic: compared unscaled
    assert zero.mae_scaled == 1.0 and zero.unscaled_steps == 1
    both = score([[1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], [[2.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert both.mae_scaled == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert (both.mae_steps, both.unscaled_steps) == (3, 2)


def test_episode_totals_use_every_usable_step() -> None:
    critic = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [50.0, NAN]]
    reference = [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0], [9.0, 9.0]]
    s = score(critic, reference, reward=[0.0] * 5, episode=[0, 0, 1, 1, 1])
    # totals x = (2, 0, 0, 3), y = (1, 0, 0, 2): cov 4.25, var 6.75 and 2.75
    assert s.episode_total_pearson == pytest.approx(4.25 / math.sqrt(6.75 * 2.75))
    assert s.episode_pairs == 4 and s.rewarded_steps == 0 and s.nan_steps == 1
    assert s.sign_agreement is None and s.top_agent_accuracy is None and s.mae_scaled is None


def test_episode_total_pearson_undefined() -> None:
    assert score([[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 1.0]]).episode_total_pearson is None  # constant
    assert score([[1.0]], [[2.0]]).episode_total_pearson is None  # one pair


def test_nan_steps_and_coverage() -> None:
    critic = [[1.0, 2.0], [NAN, 1.0], [1.0, 2.0], [2.0, 1.0]]
    reference = [[1.0, 2.0], [1.0, 2.0], [NAN, NAN], [2.0, 1.0]]
    s = score(critic, reference, episode=[0, 1, 2, 2])
    assert s.nan_steps == 2 and s.rewarded_steps == 2 and s.sign_pairs == 4
    assert (s.episodes, s.episodes_covered, s.coverage) == (3, 2, pytest.approx(2 / 3))  # reference NaN not counted
    assert s.episode_pairs == 4  # episode 1 has no usable step
    failed = score([[NAN, NAN]] * 2, [[1.0, 1.0]] * 2, episode=[4, 4])
    assert failed.coverage == 0.0 and failed.nan_steps == 2 and failed.sign_agreement is None


def test_empty_input_gives_none_rates_and_valid_json() -> None:
    s = score_credits(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64))
    rates = ["sign_agreement", "top_agent_accuracy", "spearman", "mae_scaled", "episode_total_pearson", "coverage"]
    assert all(getattr(s, k) is None for k in rates)
    assert json.loads(json.dumps(s.to_dict(), allow_nan=False))["steps"] == 0


@pytest.mark.parametrize(
    ("critic", "reference", "reward", "tol"),
    [((3, 2), (3, 3), (3,), 1e-6), ((3,), (3,), (3,), 1e-6), ((3, 2), (3, 2), (2,), 1e-6), ((3, 2), (3, 2), (3,), -1)],
)
def test_bad_arguments(
    critic: tuple[int, ...], reference: tuple[int, ...], reward: tuple[int, ...], tol: float
) -> None:
    with pytest.raises(ValueError):
        score_credits(np.zeros(critic), np.zeros(reference), np.zeros(reward), np.zeros(3), tol)


def test_pooling_groups_with_different_agent_counts() -> None:
    a = tally_credits(np.array([[1.0, -1.0]]), np.array([[1.0, 1.0]]), np.ones(1), np.array([0]))
    b = tally_credits(np.array([[1.0, 2.0, 3.0]] * 2), np.array([[1.0, 2.0, 3.0]] * 2), np.ones(2), np.array([7, 8]))
    s = combine_tallies([a, b]).scores()
    assert s.sign_agreement == pytest.approx(7 / 8) and s.sign_pairs == 8
    assert s.spearman == 1.0 and s.spearman_steps == 2  # only the three-agent group has Spearman
    assert (s.steps, s.episodes, s.episode_pairs) == (3, 3, 8)
    with pytest.raises(ValueError, match="tolerances"):
        combine_tallies([a, tally_credits(np.ones((1, 2)), np.ones((1, 2)), np.ones(1), np.zeros(1), tol=0.1)])


# --- properties -----------------------------------------------------------------------

VALUES = st.one_of(st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, NAN]), st.floats(-5.0, 5.0))


@st.composite
def credit_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    m, n = draw(st.integers(0, 10)), draw(st.integers(1, 4))
    cells = st.lists(VALUES, min_size=m * n, max_size=m * n)
    critic = np.array(draw(cells), dtype=np.float64).reshape(m, n)
    reference = np.array(draw(cells), dtype=np.float64).reshape(m, n)
    reward = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5]), min_size=m, max_size=m)))
    episode = np.array(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), dtype=np.int64)
    return critic, reference, reward, episode, draw(st.permutations(range(m)))


def assert_no_nan(s: CreditScores) -> None:
    for key, value in s.to_dict().items():
        assert value is None or math.isfinite(value), key


@settings(max_examples=150, deadline=None)
@given(credit_cases())
def test_invariant_to_step_order(case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]) -> None:
    critic, reference, reward, episode, perm = case
    a = score_credits(critic, reference, reward, episode).to_dict()
    b = score_credits(critic[perm], reference[perm], reward[perm], episode[perm]).to_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] is None) == (b[key] is None), key
        if a[key] is not None:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert_no_nan(score_credits(critic, reference, reward, episode))


@settings(max_examples=150, deadline=None)
@given(credit_cases())
def test_self_agreement_is_perfect(case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]) -> None:
    critic, _, reward, episode, _ = case
    s = score_credits(critic, critic, reward, episode)
    assert_no_nan(s)
    assert s.sign_agreement in (None, 1.0)
    assert s.top_agent_accuracy in (None, 1.0) and s.critic_tie_steps == 0
    assert s.mae_scaled in (None, 0.0)
    for corr in (s.spearman, s.episode_total_pearson):
        assert corr is None or corr == pytest.approx(1.0)


def test_step_pearson_sees_where_in_time_credit_goes() -> None:
    """On rewarded steps and episode totals a structural critic equals a temporal one; only
    ``step_pearson`` (every step) tells that the temporal one credited the steps before the reward."""
    reward = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # [T]
    episode = np.zeros(7, int)
    reference = np.array([[0.2, 0], [0.3, 0], [0, 0], [0.5, 0], [0, 0.4], [0, 0.1], [0, 0.5]])  # [T, 2] h5-like
    structural = np.array([[0, 0], [0, 0], [0, 0], [1.0, 0], [0, 0], [0, 0], [0, 1.0]])
    temporal = reference * 1.5
    plain, timed = (score_credits(c, reference, reward, episode) for c in (structural, temporal))
    assert plain.top_agent_accuracy == timed.top_agent_accuracy == 1.0
    assert plain.episode_total_pearson == pytest.approx(timed.episode_total_pearson)
    assert timed.step_pearson == pytest.approx(1.0) and plain.step_pearson is not None
    assert plain.step_pearson < 0.8 and timed.step_pairs == plain.step_pairs == 14
    pooled = combine_tallies([tally_credits(temporal, reference, reward, episode)] * 2).scores()
    assert pooled.step_pairs == 28 and pooled.step_pearson == pytest.approx(1.0)
