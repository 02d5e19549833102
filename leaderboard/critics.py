"""The critic leaderboard: a markdown table from a folder of ``llmca critic-bench`` results.

Input: a folder of results JSONs (``annotation.bench``; every ``*.json`` under it, in path
order). They are untrusted: each is read with a size cap, parsed without ``NaN``/``Infinity``,
and checked field by field (types, finite numbers, known settings, this ``BENCH_VERSION``); a
bad file is a ``CriticResultsError`` naming the file and the field, and nothing is written.

Output: ``critics.md`` (``render_critics``), always regenerated, never edited: one row per
critic × setting (its overall row) with the critic, model, setting, oracle flag (re-simulating
critics, which query the simulator and cannot be blinded), episodes scored (with ``first N/env``
when scored with ``--limit N``: compare rows on equal episodes), validity, Spearman / top-agent
accuracy / per-agent episode-total Pearson against ``counterfactual-h5`` and against ``shapley``,
the scaled MAE against ``shapley``, tokens and seconds per episode, and dollars. Rows are ordered
by setting, then limit (the whole set first), then top-agent accuracy against
``counterfactual-h5`` (best first; ``—`` last). Text from the files (critic, model) is escaped
with ``md_escape``. Two files with the same critic, model, setting and limit are refused (naming
both): the table would show the critic twice with no way to tell which.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmca_data.annotation.bench import ALL, RESULTS_FORMAT, RESULTS_VERSION, SETTINGS
from llmca_data.annotation.bench_set import BENCH_VERSION
from llmca_data.errors import LlmcaError
from llmca_data.shards import write_text_atomic

from .escape import md_escape

CRITICS_FILE = "critics.md"
MAX_RESULTS_BYTES = 8 * 2**20
"""Largest results file read (a real one is a few tens of kB)."""
TEMPORAL, STRUCTURAL = "counterfactual-h5", "shapley"
COLUMNS = (
    "critic", "model", "setting", "oracle", "episodes", "validity", "ρ vs h5", "top vs h5", "ep. r vs h5",
    "step r vs h5", "ρ vs shapley", "top vs shapley", "ep. r vs shapley", "MAE vs shapley", "tokens/ep", "s/ep", "$",
)  # fmt: skip
METRICS = ("spearman", "top_agent_accuracy", "episode_total_pearson", "step_pearson", "mae_scaled")


class CriticResultsError(LlmcaError, ValueError):
    """A critic-bench results file that is unreadable or not shaped as ``llmca critic-bench`` writes it."""


@dataclass(frozen=True)
class CriticRow:
    """One critic × setting of the leaderboard (the overall row of one results file)."""

    critic: str
    model: str
    setting: str
    oracle: bool
    validity: float | None
    scores: dict[str, dict[str, float | None]]
    """Reference → metric → value (``METRICS`` only)."""
    episodes: int
    limit: int
    """``--limit``: only the first ``limit`` episodes per env were scored (0: the whole set)."""
    tokens: int
    seconds: float
    cost_usd: float | None
    source: str


def _fail(path: Path, where: str, what: str) -> CriticResultsError:
    return CriticResultsError(
        f"{path}: {where}: {what}; critic leaderboard files must be written by `llmca critic-bench` "
        "(remove or regenerate this one)"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _number(path: Path, where: str, value: Any, *, optional: bool = False, low: float | None = None) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, where, f"expected a finite number{' or null' if optional else ''}, got {value!r:.60}")
    if low is not None and value < low:
        raise _fail(path, where, f"expected a number >= {low}, got {value!r}")
    return value


def _text(path: Path, where: str, value: Any, limit: int = 200) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(path, where, f"expected a string of at most {limit} characters, got {value!r:.60}")
    return value


def _object(path: Path, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected an object, got {type(value).__name__}")
    return value


def read_critic_results(path: Path) -> list[CriticRow]:
    """The rows of one results file (one per setting), every field checked.

    Raises:
        CriticResultsError: unreadable, too large, not JSON, or a field of the wrong shape.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RESULTS_BYTES + 1)
    except OSError as exc:
        raise CriticResultsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_RESULTS_BYTES:
        raise _fail(path, "file", f"larger than {MAX_RESULTS_BYTES} bytes")
    try:
        body = _object(path, "top level", json.loads(data, parse_constant=_no_constant))
    except (ValueError, RecursionError) as exc:
        raise _fail(path, "file", f"not JSON ({exc})") from None
    if body.get("format") != RESULTS_FORMAT or body.get("format_version") != RESULTS_VERSION:
        raise _fail(path, "format", f"expected {RESULTS_FORMAT!r} version {RESULTS_VERSION}")
    if body.get("bench_version") != BENCH_VERSION:
        raise _fail(path, "bench_version", f"scored on critic-bench version {body.get('bench_version')!r:.20}, "
                    f"this leaderboard shows version {BENCH_VERSION}: score the critic again")  # fmt: skip
    critic, model = _text(path, "critic", body.get("critic")), _text(path, "model", body.get("model"))
    settings = body.get("settings")
    if not isinstance(settings, list) or not settings:
        raise _fail(path, "settings", "expected a non-empty list")
    limit = int(_number(path, "limit", body.get("limit", 0), low=0))
    return [_setting_row(path, f"settings[{i}]", s, critic, model, limit) for i, s in enumerate(settings)]


def _setting_row(path: Path, where: str, raw: Any, critic: str, model: str, limit: int) -> CriticRow:
    entry = _object(path, where, raw)
    setting = entry.get("setting")
    if not isinstance(setting, str) or setting not in SETTINGS:
        raise _fail(path, f"{where}.setting", f"expected one of {', '.join(SETTINGS)}, got {setting!r:.60}")
    oracle = entry.get("oracle")
    if not isinstance(oracle, bool):
        raise _fail(path, f"{where}.oracle", f"expected true or false, got {oracle!r:.60}")
    rows = entry.get("rows")
    if not isinstance(rows, list):
        raise _fail(path, f"{where}.rows", "expected a list")
    overall = [r for r in rows if isinstance(r, dict) and r.get("env_id") == ALL]
    if len(overall) != 1:
        raise _fail(path, f"{where}.rows", f"expected exactly one row with env_id {ALL!r}")
    row, at = overall[0], f"{where}.rows[{ALL}]"
    scores: dict[str, dict[str, float | None]] = {}
    for ref, raw_scores in _object(path, f"{at}.scores", row.get("scores")).items():
        metrics = _object(path, f"{at}.scores.{ref:.40}", raw_scores)
        scores[_text(path, f"{at}.scores", ref, 64)] = {
            m: _number(path, f"{at}.scores.{ref}.{m}", metrics.get(m), optional=True) for m in METRICS
        }
    validity = _number(path, f"{at}.validity", row.get("validity"), optional=True, low=0.0)
    if validity is not None and validity > 1:
        raise _fail(path, f"{at}.validity", f"expected a share in [0, 1], got {validity!r}")
    return CriticRow(
        critic=critic, model=model, setting=setting, oracle=oracle, validity=validity, scores=scores,
        episodes=int(_number(path, f"{at}.episodes", row.get("episodes"), low=0)), limit=limit,
        tokens=int(_number(path, f"{at}.tokens_in", row.get("tokens_in"), low=0))
        + int(_number(path, f"{at}.tokens_out", row.get("tokens_out"), low=0)),
        seconds=float(_number(path, f"{at}.seconds", row.get("seconds"), low=0)),
        cost_usd=_number(path, f"{at}.cost_usd", row.get("cost_usd"), optional=True, low=0),
        source=str(path),
    )  # fmt: skip


def load_critic_results(folder: Path) -> list[CriticRow]:
    """Every row of every ``*.json`` under ``folder`` (path order).

    Raises:
        CriticResultsError: ``folder`` is not a folder, holds no ``*.json``, a file is bad, or two files
            hold the same critic, model, setting and limit.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CriticResultsError(f"{folder} is not a folder: give the folder of `llmca critic-bench --out` files")
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    if not files:
        raise CriticResultsError(f"{folder} holds no *.json results: run `llmca critic-bench --critic ID --out "
                                 f"{folder}/ID.json` first")  # fmt: skip
    seen: dict[tuple[str, str, str, int], str] = {}
    rows = [row for path in files for row in read_critic_results(path)]
    for row in rows:
        key = (row.critic, row.model, row.setting, row.limit)
        if key in seen and seen[key] != row.source:
            raise CriticResultsError(
                f"{row.source}: critic {row.critic!r:.60} ({row.setting}, limit {row.limit}) is also in "
                f"{seen[key]}: keep one of the two files"
            )
        seen[key] = row.source
    return rows


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _cells(row: CriticRow) -> list[str]:
    def score(ref: str, metric: str) -> str:
        return _fmt(row.scores.get(ref, {}).get(metric))

    per_episode = max(1, row.episodes)
    return [
        md_escape(row.critic), md_escape(row.model) if row.model else "—", row.setting, "yes" if row.oracle else "no",
        f"{row.episodes} (first {row.limit}/env)" if row.limit else str(row.episodes),
        _fmt(row.validity, ".0%"), score(TEMPORAL, "spearman"),
        score(TEMPORAL, "top_agent_accuracy"), score(TEMPORAL, "episode_total_pearson"),
        score(TEMPORAL, "step_pearson"), score(STRUCTURAL, "spearman"),
        score(STRUCTURAL, "top_agent_accuracy"), score(STRUCTURAL, "episode_total_pearson"),
        score(STRUCTURAL, "mae_scaled"), f"{row.tokens / per_episode:.0f}" if row.tokens else "—",
        f"{row.seconds / per_episode:.3f}", _fmt(row.cost_usd, ".2f"),
    ]  # fmt: skip


def _order(row: CriticRow) -> tuple[int, bool, int, float, str, str]:
    top = row.scores.get(TEMPORAL, {}).get("top_agent_accuracy")  # rows on the whole set first, then by limit
    return (SETTINGS.index(row.setting), row.limit > 0, row.limit, -(top if top is not None else -1.0), row.critic,
            row.model)  # fmt: skip


def critic_markdown(rows: list[CriticRow]) -> str:
    """The critic leaderboard as one markdown table (module docstring)."""
    lines = ["# Critic leaderboard", "",
             "Generated by `llmca leaderboard render --critic-results DIR` from `llmca critic-bench` results; "
             "do not edit. Scores pool all envs of the bench set (or its first N episodes per env where "
             "`episodes` says so: compare rows on equal episodes) against references computed on the true "
             "episode; `oracle` marks critics that re-simulate the episode (they cannot be blinded to the "
             "delayed reward). ρ: Spearman (envs with N ≥ 3); top: top-agent accuracy; ep. r: Pearson of "
             "per-agent episode totals; step r: Pearson over every (step, agent), rewarded or not, the one "
             "metric that sees credit placed on the steps before a reward; MAE after scaling to the reference's "
             "sum.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]  # fmt: skip
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in sorted(rows, key=_order)]
    return "\n".join(lines) + "\n"


def render_critics(folder: Path, out: Path) -> Path:
    """Write ``out/critics.md`` from the results under ``folder``; returns its path.

    Raises:
        CriticResultsError: as ``load_critic_results`` (then nothing is written).
    """
    text = critic_markdown(load_critic_results(folder))
    path = Path(out) / CRITICS_FILE
    write_text_atomic(path, text)
    return path
