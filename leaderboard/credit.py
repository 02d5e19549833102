"""The credit experiment's table: does per-agent credit beat the team reward and the env's own split?

Input: a results JSON of ``benchmarks/offline_credit.py`` or ``benchmarks/online.py --credit-json``
(``CREDIT_FORMAT``): one row per run (``env_id``, ``tier``, ``setting``, ``arm``, ``seed``,
``normalized_score``, optional ``mean_cost``, ``frozen_episodes``, ``diverged``) and the names of
the two reference arms (``baselines``: ``team`` and ``env``). The file is checked field by field
(strict JSON, a size cap, finite scores); a bad one is a ``CreditResultsError`` naming the field.

Output: per env × tier × setting, one row per arm: seeds, IQM of the final normalised score with
its 95% stratified-bootstrap interval, mean ± std (ddof 1), and the probability of improvement
over the ``team`` arm and over the ``env`` arm of the same setting, each with its interval
(``rliable.metrics.probability_of_improvement``: P(a run of this arm scores above a run of the
other), 0.5 = no difference). ``credit_markdown`` renders them; ``render_credit`` writes
``credit.md`` (``llmca leaderboard render --credit-results FILE``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmca_data.errors import LlmcaError
from llmca_data.shards import write_json_atomic, write_text_atomic

from .escape import md_escape
from .statistics import StatsConfig, _pair, improvement, interval_estimates, iqm_and_mean

CREDIT_FILE = "credit.md"
CREDIT_FORMAT = "llmca-credit-experiment"
CREDIT_VERSION = 1
MAX_CREDIT_BYTES = 16 * 2**20
_TEXT = ("env_id", "tier", "setting", "arm")


class CreditResultsError(LlmcaError, ValueError):
    """A credit-experiment results file that is unreadable or not shaped as the experiment writes it."""


@dataclass(frozen=True)
class CreditEntry:
    """One arm on one env, tier and setting."""

    arm: str
    scores: list[float]
    mean: float
    std: float
    iqm: float
    iqm_ci: tuple[float, float]
    vs: dict[str, tuple[float, tuple[float, float]] | None]
    """Reference role (``team``, ``env``) → (probability of improvement, its interval); None for the
    reference arm itself or when the setting has no such arm."""
    mean_cost: float | None = None
    frozen: float | None = None
    diverged: int = 0


@dataclass(frozen=True)
class CreditTask:
    env_id: str
    tier: str
    setting: str
    entries: list[CreditEntry]


def read_credit_results(path: Path) -> dict[str, Any]:
    """The checked contents of a credit results file.

    Raises:
        CreditResultsError: unreadable, too large, not strict JSON, another format or version, or a
            row with a missing or ill-typed field (named).
    """

    def bad(what: str) -> CreditResultsError:
        return CreditResultsError(f"{path}: {what}; rerun the experiment script to rewrite it")

    try:
        if os.path.getsize(path) > MAX_CREDIT_BYTES:
            raise bad(f"larger than {MAX_CREDIT_BYTES} bytes")
        body = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not a readable JSON file ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != CREDIT_FORMAT or body.get("version") != CREDIT_VERSION:
        raise bad(f"not a {CREDIT_FORMAT} file of version {CREDIT_VERSION}")
    baselines = body.get("baselines")
    if not isinstance(baselines, dict) or not all(isinstance(baselines.get(k), str) for k in ("team", "env")):
        raise bad("'baselines' must name the 'team' and 'env' arms")
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise bad("'rows' must be a list")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"rows[{i}] is not an object")
        for key in _TEXT:
            if not isinstance(row.get(key), str):
                raise bad(f"rows[{i}].{key} must be a string")
        if not isinstance(row.get("seed"), int):
            raise bad(f"rows[{i}].seed must be an integer")
        score = row.get("normalized_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise bad(f"rows[{i}].normalized_score must be a finite number")
    return body


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def credit_stats(results: dict[str, Any], config: StatsConfig | None = None) -> list[CreditTask]:
    """Per env × tier × setting (in first-seen order), every arm's aggregates and its probability of
    improvement over the ``team`` and ``env`` arms of that setting."""
    config = config or StatsConfig()
    groups: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = {}
    for row in results["rows"]:
        groups.setdefault((row["env_id"], row["tier"], row["setting"]), {}).setdefault(row["arm"], []).append(row)
    tasks = []
    for (env_id, tier, setting), arms in groups.items():
        scores = {arm: np.array([[float(r["normalized_score"])] for r in runs]) for arm, runs in arms.items()}
        entries = []
        for arm, runs in arms.items():
            x = scores[arm]  # [seeds, 1]
            point, ci = interval_estimates(x, iqm_and_mean, config)
            vs: dict[str, tuple[float, tuple[float, float]] | None] = {}
            for role, ref in results["baselines"].items():
                if ref == arm or ref not in scores:
                    vs[role] = None
                    continue
                vs[role] = improvement(x, scores[ref], config)
            flat = x[:, 0]
            entries.append(CreditEntry(
                arm, [float(v) for v in flat], float(flat.mean()), float(flat.std(ddof=1)) if flat.size > 1 else 0.0,
                float(point[0]), _pair(ci[:, 0]), vs, _mean(runs, "mean_cost"), _mean(runs, "frozen_episodes"),
                sum(bool(r.get("diverged")) for r in runs),
            ))  # fmt: skip
        tasks.append(CreditTask(env_id, tier, setting, entries))
    return tasks


def _mean(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
    return float(np.mean(values)) if values else None


def credit_markdown(tasks: list[CreditTask], results: dict[str, Any], config: StatsConfig | None = None) -> str:
    """One markdown table per env × tier × setting (see the module docstring)."""
    config = config or StatsConfig()
    team, env = (md_escape(results["baselines"][k]) for k in ("team", "env"))
    lines = [
        f"Final normalised score (0 random, 100 expert): IQM with its {config.confidence:.0%} stratified-bootstrap "
        f"interval over seeds (rliable, {config.reps} reps), mean ± std; P(> team) and P(> env): probability of "
        f"improvement over {team} and {env} of the same setting, with its interval (0.5: no difference).",
    ]
    for task in tasks:
        lines += ["", f"**{md_escape(task.env_id)} · {md_escape(task.tier)} · {md_escape(task.setting)}**", ""]
        lines += ["| arm | seeds | IQM [95% CI] | mean ± std | P(> team) | P(> env) | cost | frozen | diverged |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for e in sorted(task.entries, key=lambda e: -e.iqm):
            vs = [
                ("—" if v is None else f"{v[0]:.2f} [{v[1][0]:.2f}, {v[1][1]:.2f}]")
                for v in (e.vs["team"], e.vs["env"])
            ]
            lines.append(
                f"| {md_escape(e.arm)} | {len(e.scores)} | {e.iqm:.1f} [{e.iqm_ci[0]:.1f}, {e.iqm_ci[1]:.1f}] | "
                f"{e.mean:.1f} ± {e.std:.1f} | {vs[0]} | {vs[1]} | {_fmt(e.mean_cost, 2)} | {_fmt(e.frozen, 0)} | "
                f"{e.diverged} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_credit(path: Path, out: Path, config: StatsConfig | None = None) -> Path:
    """Write ``out/credit.md`` from the credit results file ``path``; returns its path."""
    results = read_credit_results(path)
    target = out / CREDIT_FILE
    write_text_atomic(target, credit_markdown(credit_stats(results, config), results, config))
    return target


def write_credit_results(
    path: Path, kind: str, baselines: dict[str, str], rows: list[dict[str, Any]], **facts: Any
) -> dict[str, Any]:
    """Write a results file that ``read_credit_results`` accepts (atomically) and return its body.

    ``kind``: ``offline`` or ``online``; ``baselines``: the ``team`` and ``env`` arms' names; ``facts``:
    provenance (config, budget, protocol) stored beside the rows. The package version is added.
    """
    from importlib.metadata import version

    body = {"format": CREDIT_FORMAT, "version": CREDIT_VERSION, "kind": kind,
            "package_version": version("llmca-data"), "baselines": baselines, **facts, "rows": rows}  # fmt: skip
    write_json_atomic(path, body)
    return body
