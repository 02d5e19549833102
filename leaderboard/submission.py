"""The submission format: ``submission.json`` parsed and schema-checked into typed records.

Input: a submission directory. Output: a ``Submission`` (team, algorithm, code URL, dataset
identity and one ``SeedEntry`` per env, tier and seed) or a ``SubmissionError`` listing every
schema problem. Checkpoints are not opened here (see ``validate.py``).

Bounds, checked before any checkpoint is opened: ``MIN_SEEDS`` to ``MAX_SEEDS`` seeds per env
and tier, at most ``MAX_ENTRIES`` seeds in all, each tier at most once in a tier key. The
file must be strict JSON (no ``NaN`` / ``Infinity``, no number beyond a float's range); team
and algorithm names are shown on the leaderboard, so they match ``NAME_PATTERN``.

Layout (CONTRACT, schema version 1)::

    SUB/submission.json
    SUB/<any relative path>.safetensors       one per seed, inside SUB, no symlinks

    {
      "submission_version": 1,
      "team": "llmca", "algorithm": "bc", "code_url": "https://github.com/...",
      "act": "greedy" | "sample",     # optional (default greedy); sample: BC family only
      "protocol": 2,                  # optional (default 1): evaluation protocol of the metrics
      "dataset": {"kind": "hub", "repo_id": "llmca/annotated", "commit": "<40 hex>"}
               | {"kind": "local", "manifest_sha256": "<64 hex>"},
      "results": {"<env_id>": {"<tier>[+<tier>...]": {"<seed>": {
          "checkpoint": "checkpoints/<env>/<tier>/seed0.safetensors",
          "architecture": "agent-net",               # see architectures.ARCHITECTURES
          "config": {"obs_dim": 12, "n_agents": 2, "n_actions": 6, "hidden": [128, 128]},
          "metrics": {"mean_return": 0.8, "normalized_score": 74.0, ...},   # self-reported
          "diverged": false,                         # optional, self-reported (training's metrics.jsonl)
          "training": {...}                          # optional, free-form, informational
      }}}}
    }
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmca_data.baselines.evaluate import ACT_MODES, PROTOCOL_VERSION, SAMPLING_ALGOS
from llmca_data.errors import LlmcaError
from llmca_data.tiers import TIERS

from .checkpoint import open_untrusted, shown

SUBMISSION_FILE = "submission.json"
SUBMISSION_VERSION = 1
MIN_SEEDS = 5
"""Seeds every (env, tier) needs: aggregate statistics over fewer are not reported."""
MAX_SEEDS = 100
"""Most seeds per (env, tier): more adds evaluation time, not evidence; a submission over it is
refused before any checkpoint is opened."""
MAX_ENTRIES = 1000
"""Most seed entries in one submission, over every env and tier (refused before any checkpoint is opened)."""
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,79}"
"""Team and algorithm names: shown on the leaderboard, so no markup, link or HTML can be spelled."""
NAME_RULE = "1-80 letters, digits, spaces and . _ + -, starting with a letter or digit"
MAX_SUBMISSION_BYTES = 4 << 20
"""Largest ``submission.json`` accepted (4 MiB)."""
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENV_KEY = r"[A-Za-z0-9][\w.-]{0,99}"
_TOP_KEYS = {"submission_version", "team", "algorithm", "code_url", "dataset", "results", "act", "protocol"}
_SEED_KEYS = {"checkpoint", "architecture", "config", "metrics", "training", "diverged"}


@dataclass(frozen=True)
class Problem:
    """One reason a submission is refused: the file it concerns, what is wrong, how to fix it."""

    file: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.what}" + (f" — fix: {self.fix}" if self.fix else "")


class SubmissionError(LlmcaError, ValueError):
    """A submission that is refused; ``problems`` lists every reason found."""

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root, self.problems = root, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"submission {root} is refused ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class DatasetIdentity:
    """Which exact dataset the runs were trained on: a Hub repo at a commit, or a local manifest's sha256."""

    kind: Literal["hub", "local"]
    repo_id: str | None = None
    commit: str | None = None
    manifest_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "hub":
            return {"kind": "hub", "repo_id": self.repo_id, "commit": self.commit}
        return {"kind": "local", "manifest_sha256": self.manifest_sha256}

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.commit}" if self.kind == "hub" else f"local manifest {self.manifest_sha256}"

    @classmethod
    def from_dict(cls, raw: Any) -> tuple[DatasetIdentity | None, str | None]:
        """Parse a ``dataset`` object; returns (identity, None) or (None, problem)."""
        if isinstance(raw, dict) and raw.get("kind") == "hub" and set(raw) == {"kind", "repo_id", "commit"}:
            repo, commit = raw["repo_id"], raw["commit"]
            if isinstance(repo, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and isinstance(commit, str):
                if _SHA1.fullmatch(commit):
                    return cls("hub", repo_id=repo, commit=commit), None
                what = "dataset commit must be a full 40-hex commit sha (not a branch or tag)"
                return None, f"{what}, got {shown(commit)}"
        if isinstance(raw, dict) and raw.get("kind") == "local" and set(raw) == {"kind", "manifest_sha256"}:
            digest = raw["manifest_sha256"]
            if isinstance(digest, str) and _SHA256.fullmatch(digest):
                return cls("local", manifest_sha256=digest), None
        return None, ('dataset must be {"kind": "hub", "repo_id": "org/name", "commit": "<40 hex>"} or '
                      '{"kind": "local", "manifest_sha256": "<64 hex>"}; build it with dataset_identity()')  # fmt: skip


@dataclass(frozen=True)
class SeedEntry:
    """One trained policy: env, tier, seed, where its checkpoint is, its architecture and config."""

    env_id: str
    tier: str
    seed: int
    checkpoint: str
    architecture: str
    config: dict[str, Any]
    metrics: dict[str, float | None]
    training: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False
    """Self-reported: the run's ``metrics.jsonl`` flagged Q divergence (never verified)."""

    @property
    def where(self) -> str:
        """``results.<env>.<tier>.<seed>``: where the entry sits in ``submission.json``."""
        return f"{SUBMISSION_FILE} results.{self.env_id}.{self.tier}.{self.seed}"


@dataclass(frozen=True)
class Submission:
    """A parsed ``submission.json`` (schema-checked; checkpoints not yet checked)."""

    root: Path
    team: str
    algorithm: str
    code_url: str
    dataset: DatasetIdentity
    entries: list[SeedEntry]
    sha256: str
    """sha256 of the ``submission.json`` bytes."""
    act: str = "greedy"
    """How every policy acts when evaluated (``greedy`` | ``sample``)."""
    protocol: int = 1
    """Evaluation protocol of the self-reported metrics (a submission without the key: 1)."""

    @property
    def name(self) -> str:
        """``<team>-<algorithm>`` (``-sample`` appended when sampled) as a file-name-safe slug (the
        results folder name), so a BC family's greedy and sampled submissions sit side by side."""
        raw = f"{self.team}-{self.algorithm}" + ("-sample" if self.act == "sample" else "")
        return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.") or "submission"

    def groups(self) -> dict[tuple[str, str], list[SeedEntry]]:
        """(env, tier) → its seed entries, in seed order."""
        out: dict[tuple[str, str], list[SeedEntry]] = {}
        for e in sorted(self.entries, key=lambda e: (e.env_id, e.tier, e.seed)):
            out.setdefault((e.env_id, e.tier), []).append(e)
        return out


def _text(raw: dict[str, Any], key: str, problems: list[Problem], pattern: str, rule: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        problems.append(Problem(SUBMISSION_FILE, f"{key!r} must be {rule}", f"set {key}"))
        return ""
    return value


def _finite(value: Any) -> bool:
    """A JSON number (not a bool) that a float holds finitely."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a float's range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_json(data: bytes | str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and numbers that overflow a float (ValueError)."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_strict_float)


def _seed_entry(env_id: str, tier: str, seed: str, raw: Any, problems: list[Problem]) -> SeedEntry | None:
    where = f"{SUBMISSION_FILE} results.{env_id}.{tier}.{seed}"
    if not re.fullmatch(r"0|[1-9][0-9]{0,8}", seed):
        problems.append(Problem(where, f"seed key {shown(seed)} is not a non-negative integer", 'use keys like "0"'))
        return None
    if not isinstance(raw, dict) or not {"checkpoint", "architecture", "config"} <= set(raw) <= _SEED_KEYS:
        fix = f"give checkpoint, architecture, config and optionally metrics, training (keys: {sorted(_SEED_KEYS)})"
        problems.append(Problem(where, "a seed entry must be an object with the seed fields", fix))
        return None
    metrics = raw.get("metrics", {})
    ok_metrics = isinstance(metrics, dict) and all(v is None or _finite(v) for v in metrics.values())
    if not ok_metrics:
        problems.append(Problem(where, "metrics must map names to finite numbers or null",
                                "report e.g. mean_return; report null for a metric you do not have"))  # fmt: skip
    if not isinstance(raw["checkpoint"], str) or not isinstance(raw["architecture"], str):
        problems.append(Problem(where, "checkpoint and architecture must be strings", "give a relative path and id"))
        return None
    training = raw.get("training", {})
    if not isinstance(training, dict):
        problems.append(Problem(where, "training must be an object", "omit it or give the run's config"))
        training = {}
    diverged = raw.get("diverged", False)
    if not isinstance(diverged, bool):
        what = f"diverged must be true or false, got {shown(diverged)}"
        problems.append(Problem(where, what, "omit it or give a bool"))
    return SeedEntry(env_id, tier, int(seed), raw["checkpoint"], raw["architecture"],
                     raw["config"] if isinstance(raw["config"], dict) else {"<not an object>": raw["config"]},
                     metrics if ok_metrics else {}, training, diverged is True)  # fmt: skip


def _tier_problem(tier: str) -> str | None:
    """What is wrong with a tier key (``expert`` or ``expert+medium``), or None."""
    parts = tier.split("+")
    if not all(t in TIERS for t in parts):
        return f"unknown tier {shown(tier)}"
    if len(set(parts)) != len(parts):
        return f"tier {tier!r} names a tier twice"
    return None


def _entries(results: Any, problems: list[Problem]) -> list[SeedEntry]:
    """Every seed entry; none at all when a count is over ``MAX_SEEDS`` or ``MAX_ENTRIES`` (so no
    checkpoint of a submission over the bounds is ever opened)."""
    if not isinstance(results, dict) or not results:
        problems.append(Problem(SUBMISSION_FILE, "results must be a non-empty env → tier → seed object", ""))
        return []
    entries: list[SeedEntry] = []
    over = False
    for env_id, tiers in results.items():
        if not re.fullmatch(_ENV_KEY, env_id):
            problems.append(Problem(f"{SUBMISSION_FILE} results", f"env key {shown(env_id)} is not an env id",
                                    "use ids like lbf-8x8-2p-2f (`llmca envs` lists them)"))  # fmt: skip
            continue
        if not isinstance(tiers, dict) or not tiers:
            problems.append(Problem(f"{SUBMISSION_FILE} results.{env_id}", "must be a non-empty tier → seed object"))
            continue
        for tier, seeds in tiers.items():
            if (problem := _tier_problem(str(tier))) is not None:
                fix = f"use {'|'.join(TIERS)}, each at most once, joined by + for runs trained on several tiers"
                problems.append(Problem(f"{SUBMISSION_FILE} results.{env_id}", problem, fix))
                continue
            where = f"{SUBMISSION_FILE} results.{env_id}.{tier}"
            if not isinstance(seeds, dict):
                problems.append(Problem(where, "must be a seed → entry object"))
                continue
            if len(seeds) < MIN_SEEDS:
                problems.append(Problem(where, f"{len(seeds)} seed(s); at least MIN_SEEDS={MIN_SEEDS} are required",
                                        f"train and submit {MIN_SEEDS - len(seeds)} more seed(s)"))  # fmt: skip
            if len(seeds) > MAX_SEEDS:
                over = True
                problems.append(Problem(where, f"{len(seeds)} seeds; at most MAX_SEEDS={MAX_SEEDS} are accepted "
                                        "(no checkpoint was opened)", f"submit at most {MAX_SEEDS} seeds"))  # fmt: skip
                continue
            for seed, raw in seeds.items():
                if (entry := _seed_entry(str(env_id), str(tier), str(seed), raw, problems)) is not None:
                    entries.append(entry)
    if len(entries) > MAX_ENTRIES:
        over = True
        problems.append(Problem(SUBMISSION_FILE, f"{len(entries)} seed entries; at most MAX_ENTRIES={MAX_ENTRIES} "
                                "are accepted in one submission (no checkpoint was opened)",
                                "split it into several submissions"))  # fmt: skip
    return [] if over else entries


def _act(raw: dict[str, Any], algorithm: str, problems: list[Problem]) -> str:
    """The submission's act mode (default greedy); ``sample`` only for the BC family (protocol v2)."""
    act = raw.get("act", "greedy")
    if act not in ACT_MODES:
        problems.append(Problem(SUBMISSION_FILE, f"act must be one of {', '.join(ACT_MODES)}, got {shown(act)}",
                                "omit it (greedy) or set it to sample for a BC-family policy"))  # fmt: skip
        return "greedy"
    if act == "sample" and algorithm not in SAMPLING_ALGOS:
        family = ", ".join(sorted(SAMPLING_ALGOS))
        what = f"act 'sample' is for the BC family ({family}), not {algorithm!r}: value-based learners act greedily"
        problems.append(Problem(SUBMISSION_FILE, f"{what} under protocol v{PROTOCOL_VERSION}", 'set "act": "greedy"'))
    return str(act)


def load_submission(root: Path) -> tuple[Submission | None, list[Problem]]:
    """Read and schema-check ``root/submission.json`` (bounded size, no symlink or hard link, strict JSON).

    Returns:
        The submission (None when no dataset identity can be read) and every schema problem
        found; a submission with problems is returned too, so its checkpoints can be checked.
    """
    path = root / SUBMISSION_FILE
    if path.is_symlink() or not path.is_file():
        return None, [Problem(SUBMISSION_FILE, "missing, or not a regular file", "write submission.json in SUB")]
    f, refused = open_untrusted(path)
    if f is None:
        return None, [Problem(SUBMISSION_FILE, str(refused), "write submission.json in SUB as a file of its own")]
    with f:
        data = f.read(MAX_SUBMISSION_BYTES + 1)
    if len(data) > MAX_SUBMISSION_BYTES:
        return None, [Problem(SUBMISSION_FILE, f"larger than MAX_SUBMISSION_BYTES={MAX_SUBMISSION_BYTES}")]
    try:
        raw = strict_json(data)
    except json.JSONDecodeError as exc:
        return None, [Problem(SUBMISSION_FILE, f"not valid JSON: {exc.msg} at byte {exc.pos}",
                              "write it with json.dump")]  # fmt: skip
    except (ValueError, RecursionError) as exc:
        return None, [
            Problem(
                SUBMISSION_FILE,
                f"not strict JSON: {str(exc)[:160]}",
                "write it with json.dump(..., allow_nan=False); report null for a missing metric",
            )
        ]
    if not isinstance(raw, dict):
        return None, [Problem(SUBMISSION_FILE, "must hold a JSON object")]
    problems = [Problem(SUBMISSION_FILE, f"unknown key {shown(k)}", f"allowed: {sorted(_TOP_KEYS)}") for k in raw
                if k not in _TOP_KEYS]  # fmt: skip
    if raw.get("submission_version") != SUBMISSION_VERSION:
        problems.append(Problem(SUBMISSION_FILE, f"submission_version is {shown(raw.get('submission_version'))}",
                                f"set it to {SUBMISSION_VERSION}"))  # fmt: skip
    team = _text(raw, "team", problems, NAME_PATTERN, f"a name of {NAME_RULE} (it is shown on the leaderboard)")
    algorithm = _text(raw, "algorithm", problems, NAME_PATTERN, f"a name of {NAME_RULE} (shown on the leaderboard)")
    code_url = _text(raw, "code_url", problems, r"https?://[^\s<>\"'`]{1,500}", "an http(s) URL without spaces, "
                     "quotes or angle brackets")  # fmt: skip
    dataset, problem = DatasetIdentity.from_dict(raw.get("dataset"))
    if problem is not None:
        problems.append(Problem(SUBMISSION_FILE, problem))
    act, protocol = _act(raw, algorithm, problems), raw.get("protocol", 1)
    if isinstance(protocol, bool) or protocol not in range(1, PROTOCOL_VERSION + 1):
        what = f"protocol must be an int in 1..{PROTOCOL_VERSION}, got {shown(protocol)}"
        problems.append(Problem(SUBMISSION_FILE, what,
                                f"set it to {PROTOCOL_VERSION} for metrics from `llmca evaluate`"))  # fmt: skip
        protocol = 1
    entries = _entries(raw.get("results"), problems)
    if dataset is None:
        return None, problems
    digest = hashlib.sha256(data).hexdigest()
    return Submission(root, team, algorithm, code_url, dataset, entries, digest, act, int(protocol)), problems
