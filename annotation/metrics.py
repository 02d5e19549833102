"""Credit-quality metrics: how well one critic's credits agree with a reference critic's.

Input: numpy arrays for M steps of N agents — ``critic`` and ``reference`` credits
``[M, N]``, ``reward_team`` ``[M]`` and ``episode_id`` ``[M]``. Output: a ``CreditScores``
(rates and the counts behind them). Pure numpy, no I/O; ``llmca_data.annotation.evaluate``
applies it to a dataset directory. All arithmetic is in float64; ``tol`` (default 1e-6) is
the one tolerance used everywhere below.

Steps
    A step is *missing* when the critic or the reference has a NaN (or ±inf) credit for any
    agent at that step; missing steps are excluded from every metric below except
    ``coverage``, and counted in ``nan_steps``. The other steps are *usable*. A usable step
    is *rewarded* when ``|reward_team| > tol``. ``steps`` counts all M steps,
    ``rewarded_steps`` the usable rewarded ones.

``sign_agreement``
    Over all (rewarded step, agent) pairs (``sign_pairs`` = rewarded_steps × N): the share
    where ``sign(critic) == sign(reference)``, with the sign of x taken as 0 when
    ``|x| ≤ tol``, else ±1.

``top_agent_accuracy``
    A vector has a *unique top* when its largest value exceeds the second largest by more
    than tol (with one agent, every vector has one). Over the rewarded steps where the
    reference has a unique top (``top_steps``; the others are ``reference_tie_steps``): the
    share where the critic also has a unique top and it is the same agent. A tie at the top
    of the critic is a miss and is counted in ``critic_tie_steps`` (among ``top_steps``).

``spearman``
    Only for N ≥ 3 (None otherwise, with ``spearman_steps`` = ``constant_steps`` = 0). Over
    the rewarded steps: the mean of the Spearman rank correlation between the critic and
    reference vectors, i.e. the Pearson correlation of their average ranks. Values are tied
    when they chain within tol (sorted, consecutive values differ by ≤ tol; with tol = 0
    these are exact ties); tied values share the mean of their rank positions. A step is
    skipped and counted in ``constant_steps`` when either vector is constant: max − min ≤
    tol, or more generally all its values fall into one tie group. ``spearman_steps``
    counts the steps averaged (``spearman_steps + constant_steps = rewarded_steps``).

``mae_scaled``
    Over the rewarded steps (``mae_steps`` = rewarded_steps): the critic vector c is scaled
    to the reference's sum, ``c' = c · Σref / Σc``, when that factor is positive
    (``|Σc| > tol`` and Σc has the sign of Σref). A zero-sum step (``|Σc| ≤ tol``) or a step
    whose sums have opposite signs is compared unscaled, ``c' = c``, and counted in
    ``unscaled_steps``; so a sign-flipped critic is penalised rather than rescued by a
    negative factor. The metric is the mean over the steps of ``mean_i |c'_i − ref_i|``: how
    the critic splits the reward among agents, up to a positive scale.

``episode_total_pearson``
    Per episode with at least one usable step, each agent's total credit over the usable
    steps of that episode (all of them, rewarded or not), for the critic and for the
    reference. The Pearson correlation of the two, flattened over (episode, agent)
    (``episode_pairs`` pairs). None when there are fewer than 2 pairs or either side is
    constant (max − min ≤ tol).

``step_pearson``
    The Pearson correlation of the critic's and the reference's credits over every usable
    (step, agent) cell, rewarded or not (``step_pairs`` cells). Only this metric sees *where in
    time* credit goes: a critic that credits the steps leading to a reward agrees with a temporal
    reference (``counterfactual-h<H>``) here, while on rewarded steps and episode totals a
    structural critic scores the same. None as for ``episode_total_pearson``.

``coverage``
    The share of episodes (distinct ``episode_id`` over all M steps, ``episodes``) where the
    critic has no NaN (or ±inf) credit on any step (``episodes_covered``). The reference
    does not enter.

Every rate is None (never NaN) when its denominator is 0, so scores serialise to valid
JSON. Correlations are clipped to [−1, 1] against rounding. Scores do not depend on the
order of the steps.

Pooling: ``tally_credits`` returns the numerators and denominators of one group of
steps; ``combine_tallies`` adds groups of disjoint episodes (possibly with different N)
and ``CreditTally.scores`` turns them into rates — a pooled rate is the rate over all the
pooled steps, pairs or episodes, not a mean of per-group rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_TOL = 1e-6


@dataclass(frozen=True)
class CreditScores:
    """Credit quality of a critic against a reference (definitions in the module docstring)."""

    steps: int
    nan_steps: int
    rewarded_steps: int
    sign_agreement: float | None
    sign_pairs: int
    top_agent_accuracy: float | None
    top_steps: int
    reference_tie_steps: int
    critic_tie_steps: int
    spearman: float | None
    spearman_steps: int
    constant_steps: int
    mae_scaled: float | None
    mae_steps: int
    unscaled_steps: int
    episode_total_pearson: float | None
    episode_pairs: int
    step_pearson: float | None
    step_pairs: int
    coverage: float | None
    episodes: int
    episodes_covered: int

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain JSON-ready dict, in field order."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class CreditTally:
    """Numerators and denominators of the metrics for one group of steps (see ``combine_tallies``)."""

    tol: float
    steps: int = 0
    nan_steps: int = 0
    rewarded_steps: int = 0
    sign_pairs: int = 0
    sign_agree: int = 0
    top_steps: int = 0
    top_hits: int = 0
    reference_tie_steps: int = 0
    critic_tie_steps: int = 0
    spearman_sum: float = 0.0
    spearman_steps: int = 0
    constant_steps: int = 0
    mae_sum: float = 0.0
    mae_steps: int = 0
    unscaled_steps: int = 0
    episodes: int = 0
    episodes_covered: int = 0
    totals_critic: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [episode_pairs]
    totals_reference: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [episode_pairs]
    cells_critic: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [step_pairs]
    cells_reference: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [step_pairs]

    def scores(self) -> CreditScores:
        """The rates of this tally (None where a denominator is 0)."""
        return CreditScores(
            steps=self.steps,
            nan_steps=self.nan_steps,
            rewarded_steps=self.rewarded_steps,
            sign_agreement=_rate(self.sign_agree, self.sign_pairs),
            sign_pairs=self.sign_pairs,
            top_agent_accuracy=_rate(self.top_hits, self.top_steps),
            top_steps=self.top_steps,
            reference_tie_steps=self.reference_tie_steps,
            critic_tie_steps=self.critic_tie_steps,
            spearman=_clip(_rate(self.spearman_sum, self.spearman_steps)),
            spearman_steps=self.spearman_steps,
            constant_steps=self.constant_steps,
            mae_scaled=_rate(self.mae_sum, self.mae_steps),
            mae_steps=self.mae_steps,
            unscaled_steps=self.unscaled_steps,
            episode_total_pearson=_pearson(self.totals_critic, self.totals_reference, self.tol),
            episode_pairs=len(self.totals_critic),
            step_pearson=_pearson(self.cells_critic, self.cells_reference, self.tol),
            step_pairs=len(self.cells_critic),
            coverage=_rate(self.episodes_covered, self.episodes),
            episodes=self.episodes,
            episodes_covered=self.episodes_covered,
        )


def score_credits(
    critic: np.ndarray,
    reference: np.ndarray,
    reward_team: np.ndarray,
    episode_id: np.ndarray,
    tol: float = DEFAULT_TOL,
) -> CreditScores:
    """Score ``critic`` credits against ``reference`` credits (definitions in the module docstring).

    Args:
        critic: credits ``[M, N]`` of the critic under test; NaN where it failed.
        reference: credits ``[M, N]`` of the reference critic; NaN where it failed.
        reward_team: team reward ``[M]`` of each step.
        episode_id: episode of each step ``[M]``.
        tol: tolerance for zero, ties, constant vectors and zero sums.

    Returns:
        The scores; every rate is None when its denominator is 0.

    Raises:
        ValueError: shapes disagree, N < 1, or tol is negative or not finite.
    """
    return tally_credits(critic, reference, reward_team, episode_id, tol).scores()


def tally_credits(
    critic: np.ndarray,
    reference: np.ndarray,
    reward_team: np.ndarray,
    episode_id: np.ndarray,
    tol: float = DEFAULT_TOL,
) -> CreditTally:
    """The numerators and denominators behind ``score_credits`` (same arguments and errors)."""
    c = np.asarray(critic, dtype=np.float64)  # [M, N]
    r = np.asarray(reference, dtype=np.float64)  # [M, N]
    rew = np.asarray(reward_team, dtype=np.float64)  # [M]
    ep = np.asarray(episode_id)  # [M]
    if c.ndim != 2 or c.shape != r.shape or c.shape[1] < 1:
        raise ValueError(f"critic and reference must both be [M, N] with N >= 1, got {c.shape} and {r.shape}")
    if rew.shape != c.shape[:1] or ep.shape != c.shape[:1]:
        raise ValueError(f"reward_team {rew.shape} and episode_id {ep.shape} must be [M] = ({c.shape[0]},)")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    n = c.shape[1]
    critic_ok = np.isfinite(c).all(axis=1)  # [M]
    usable = critic_ok & np.isfinite(r).all(axis=1)  # [M]
    rewarded = usable & (np.abs(rew) > tol)  # [M]
    cr, rr = c[rewarded], r[rewarded]  # [K, N]

    # Sign agreement over (rewarded step, agent) pairs.
    sign_agree = int((_sign(cr, tol) == _sign(rr, tol)).sum())

    # Top agent: the reference's unique top must be the critic's unique top.
    ref_unique = _unique_top(rr, tol)  # [K]
    critic_unique = _unique_top(cr, tol)[ref_unique]  # [T]
    same = np.argmax(cr[ref_unique], axis=1) == np.argmax(rr[ref_unique], axis=1)  # [T]

    # Spearman over steps where neither vector is constant.
    spearman_sum, spearman_steps, constant_steps = 0.0, 0, 0
    if n >= 3 and len(cr):
        c_rank, c_groups = _average_ranks(cr, tol)  # [K, N], [K]
        r_rank, r_groups = _average_ranks(rr, tol)
        varied = (c_groups > 1) & (r_groups > 1)  # [K]
        rho = _row_pearson(c_rank[varied], r_rank[varied])  # [S]
        spearman_sum, spearman_steps = float(rho.sum()), int(varied.sum())
        constant_steps = int((~varied).sum())

    # MAE after scaling the critic to the reference's sum by a positive factor (others unscaled).
    c_sum, r_sum = cr.sum(axis=1), rr.sum(axis=1)  # [K]
    factor = r_sum / np.where(np.abs(c_sum) <= tol, 1.0, c_sum)  # [K]
    zero_sum = (np.abs(c_sum) <= tol) | (factor <= 0)  # [K] compared unscaled
    scale = np.where(zero_sum, 1.0, factor)  # [K]
    mae_sum = float(np.abs(cr * scale[:, None] - rr).mean(axis=1).sum()) if len(cr) else 0.0

    # Per-agent episode totals over usable steps.
    ids, inverse = np.unique(ep[usable], return_inverse=True)  # [E], [U]
    totals_c = _group_sums(c[usable], inverse, len(ids))  # [E, N]
    totals_r = _group_sums(r[usable], inverse, len(ids))  # [E, N]

    episodes = np.unique(ep)
    uncovered = np.unique(ep[~critic_ok])
    return CreditTally(
        tol=float(tol),
        steps=len(c),
        nan_steps=int((~usable).sum()),
        rewarded_steps=len(cr),
        sign_pairs=cr.size,
        sign_agree=sign_agree,
        top_steps=int(ref_unique.sum()),
        top_hits=int((same & critic_unique).sum()),
        reference_tie_steps=int((~ref_unique).sum()),
        critic_tie_steps=int((~critic_unique).sum()),
        spearman_sum=spearman_sum,
        spearman_steps=spearman_steps,
        constant_steps=constant_steps,
        mae_sum=mae_sum,
        mae_steps=len(cr),
        unscaled_steps=int(zero_sum.sum()),
        episodes=len(episodes),
        episodes_covered=len(episodes) - len(uncovered),
        totals_critic=totals_c.reshape(-1),
        totals_reference=totals_r.reshape(-1),
        cells_critic=c[usable].reshape(-1),
        cells_reference=r[usable].reshape(-1),
    )


def combine_tallies(tallies: Sequence[CreditTally]) -> CreditTally:
    """Pool tallies of disjoint sets of episodes (agent counts may differ).

    Raises:
        ValueError: no tallies, or tallies made with different tolerances.
    """
    if not tallies:
        raise ValueError("combine_tallies needs at least one tally")
    tols = {t.tol for t in tallies}
    if len(tols) > 1:
        raise ValueError(f"cannot pool tallies made with different tolerances {sorted(tols)}")
    fields: dict[str, Any] = {
        name: np.concatenate([getattr(t, name) for t in tallies]) if name in _ARRAYS
        else sum(getattr(t, name) for t in tallies)
        for name in CreditTally.__dataclass_fields__ if name != "tol"
    }  # fmt: skip
    return CreditTally(tol=tallies[0].tol, **fields)


_ARRAYS = ("totals_critic", "totals_reference", "cells_critic", "cells_reference")
"""``CreditTally``'s fields that are pooled by concatenation; the rest (but ``tol``) by addition."""


def _sign(x: np.ndarray, tol: float) -> np.ndarray:
    """Sign with a dead zone: 0 where ``|x| ≤ tol``."""
    out: np.ndarray = np.where(np.abs(x) <= tol, 0.0, np.sign(x))
    return out


def _unique_top(x: np.ndarray, tol: float) -> np.ndarray:
    """``[K, N]`` → ``[K]`` bool: the largest value exceeds the second largest by more than tol."""
    if x.shape[1] < 2:
        return np.ones(len(x), dtype=bool)
    top2 = np.sort(x, axis=1)[:, -2:]  # [K, 2]
    out: np.ndarray = top2[:, 1] - top2[:, 0] > tol
    return out


def _average_ranks(x: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise average ranks (1..N) with tol-chained ties; also the number of tie groups per row."""
    k, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")  # [K, N]
    xs = np.take_along_axis(x, order, axis=1)  # [K, N]
    starts = np.ones((k, n), dtype=bool)
    starts[:, 1:] = np.diff(xs, axis=1) > tol
    group = np.cumsum(starts, axis=1) - 1  # [K, N] tie group within the row
    flat = (np.arange(k)[:, None] * n + group).reshape(-1)  # [K*N] tie group over all rows
    positions = np.tile(np.arange(1, n + 1, dtype=np.float64), k)  # [K*N]
    mean_pos = np.bincount(flat, weights=positions, minlength=k * n) / np.maximum(np.bincount(flat, minlength=k * n), 1)
    ranks = np.empty((k, n))
    np.put_along_axis(ranks, order, mean_pos[flat].reshape(k, n), axis=1)
    n_groups: np.ndarray = group[:, -1] + 1  # [K]
    return ranks, n_groups


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair ``[S, N]`` → ``[S]`` (rows must not be constant)."""
    da = a - a.mean(axis=1, keepdims=True)
    db = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    out: np.ndarray = np.clip((da * db).sum(axis=1) / den, -1.0, 1.0)
    return out


def _group_sums(x: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``x`` ``[U, N]`` by ``group`` ``[U]`` → ``[n_groups, N]``."""
    cols = [np.bincount(group, weights=x[:, i], minlength=n_groups) for i in range(x.shape[1])]
    return np.stack(cols, axis=1) if cols else np.zeros((n_groups, 0))


def _pearson(x: np.ndarray, y: np.ndarray, tol: float) -> float | None:
    """Pearson correlation of two flat arrays; None with < 2 pairs or a constant side."""
    if len(x) < 2 or np.ptp(x) <= tol or np.ptp(y) <= tol:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    den = float(np.sqrt((dx * dx).sum()) * np.sqrt((dy * dy).sum()))
    if not np.isfinite(den) or den == 0.0:
        return None
    return _clip(float((dx * dy).sum()) / den)


def _rate(num: float, den: int) -> float | None:
    return float(num) / den if den else None


def _clip(x: float | None) -> float | None:
    return None if x is None else min(1.0, max(-1.0, x))
