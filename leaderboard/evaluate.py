"""The trusted evaluator: re-run every submitted policy and store verified results.

Input: a submission directory (validated first, see ``validate.py``). Output:
``RESULTS_DIR/<submission name>/results.json`` (and a copy of ``submission.json``): per env,
tier and seed the *verified* evaluation dict of ``baselines.evaluate.evaluate_policy`` over
the fixed evaluation seeds (protocol v2: ``protocol``, ``act``, ``frozen_episodes``, ...), the
self-reported metrics and ``diverged`` kept but marked unverified, and flags where the metrics
disagree with the verified ones by more than the tolerance; plus provenance (package and
schema versions, evaluation protocol and config, dataset identity, submission sha256).

Every policy acts as its submission says (``act``: greedy, or sampled for the BC family).

A results folder belongs to the submission that wrote it: its name is a slug of team and
algorithm, so ``LLMCA``/``BC`` and ``llmca``/``bc`` share ``llmca-bc``. A submission whose
folder already holds the result of another ``submission.json`` (another ``submission_sha256``)
is refused, before and again after evaluation, and nothing is written; re-evaluating the same
submission replaces its own result. ``results.json`` is strict JSON (no NaN or Infinity).

Each policy is rebuilt from package code (``architectures.build_policy``) and its weights are
read with ``safetensors`` only — never pickle — after every check passed, from bytes whose sha256
equals the one validation recorded. The env runs with its default kwargs (``env_kwargs={}``),
exactly as ``evaluate_run`` does for our torch runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.baselines.device import resolve_device
from llmca_data.baselines.evaluate import PROTOCOL_VERSION, EvalConfig, as_act, evaluate_policy
from llmca_data.errors import LlmcaError

from .architectures import build_policy
from .submission import SUBMISSION_FILE, DatasetIdentity, Problem, Submission, SubmissionError, strict_json
from .validate import CheckedSeed, validate_submission

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
RESULTS_VERSION = 2
"""2 adds ``act``/``protocol`` to the submission block, ``diverged`` per seed and ``protocol`` to the
provenance; readers treat their absence (version 1) as greedy, protocol 1, not diverged."""
COMPARED_METRICS: dict[str, float] = {"normalized_score": 100.0, "success_rate": 1.0, "mean_return": 1.0,
                                      "mean_cost": 1.0}  # fmt: skip
"""Self-reported metrics compared with the verified ones → their scale (the smallest denominator)."""

Progress = Callable[[int, int], None]
"""``progress(done, total)`` over the seeds of the submission."""


class ResultsError(LlmcaError, ValueError):
    """A ``results.json`` that is not strict JSON or not shaped as ``evaluate_submission`` writes it."""


def read_results(path: Path) -> dict[str, Any]:
    """One ``results.json``: strict JSON (no NaN or Infinity) with ``submission`` and ``entries`` objects.

    Raises:
        ResultsError: it cannot be read, is not strict JSON, or lacks those objects.
    """
    fix = "re-run `llmca leaderboard evaluate` for its submission, or remove its folder"
    try:
        body = strict_json(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise ResultsError(f"{path} is not a strict-JSON results file ({str(exc)[:160]}): {fix}") from exc
    if not isinstance(body, dict) or not all(isinstance(body.get(k), dict) for k in ("submission", "entries")):
        raise ResultsError(f"{path} lacks the 'submission' and 'entries' objects of a results file: {fix}")
    return body


@dataclass(frozen=True)
class LeaderboardEvalConfig:
    """How the trusted evaluator plays each policy and when it flags a self-reported number."""

    episodes: int = 100
    """Evaluation episodes per seed (``eval_seed(seed_offset + i)``, disjoint from data seeds);
    protocol v2 asks for at least 100."""
    seed_offset: int = 0
    """First evaluation seed index (the same for every submission: the seeds are fixed)."""
    device: str = "cpu"
    """Where the policies run."""
    tolerance: float = 0.1
    """Flag a self-reported metric when ``|reported − verified| > tolerance · max(|verified|, scale)``,
    scale 100 for ``normalized_score`` and 1 for ``success_rate``, ``mean_return``, ``mean_cost``."""

    def eval_config(self, act: str = "greedy") -> EvalConfig:
        """The ``EvalConfig`` of one policy that acts as ``act`` (its submission's act mode)."""
        return EvalConfig(episodes=self.episodes, seed_offset=self.seed_offset, act=as_act(act))


def disagreements(reported: dict[str, float | None], verified: dict[str, Any], tolerance: float) -> list[str]:
    """One flag per compared metric whose self-reported value is far from the verified one."""
    flags = []
    for name, scale in COMPARED_METRICS.items():
        mine, theirs = verified.get(name), reported.get(name)
        if mine is None or theirs is None:
            continue
        limit = tolerance * max(abs(float(mine)), scale)
        if not math.isfinite(float(theirs)) or abs(float(theirs) - float(mine)) > limit:
            flags.append(f"{name}: self-reported {theirs:.4g}, verified {mine:.4g} (difference beyond {limit:.4g})")
    return flags


def evaluate_seed(seed: CheckedSeed, name: str, config: LeaderboardEvalConfig, act: str = "greedy") -> dict[str, Any]:
    """Load one checked checkpoint with safetensors, rebuild its policy and evaluate it acting as ``act``."""
    from safetensors.torch import load

    entry = seed.entry
    data = seed.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != seed.sha256:
        root = seed.path.parents[len(Path(entry.checkpoint).parts) - 1]
        problem = Problem(entry.checkpoint, "changed after it was validated", "submit it again, unchanged")
        raise SubmissionError(root, [problem])
    tensors = load(data)
    policy = build_policy(entry.architecture, seed.spec, tensors, name, resolve_device(config.device))
    verified = evaluate_policy(policy, entry.env_id, {}, config.eval_config(act))
    flags = disagreements(entry.metrics, verified, config.tolerance)
    for flag in flags:
        log.warning("%s: %s", entry.where, flag)
    return {
        "checkpoint": entry.checkpoint,
        "checkpoint_sha256": seed.sha256,
        "architecture": entry.architecture,
        "config": seed.spec.to_dict(),
        "verified": verified,
        "self_reported": dict(entry.metrics),
        "self_reported_status": "unverified",
        "diverged": entry.diverged,
        "flags": flags,
    }


def claimed_by_another(sub: Submission, dest: Path) -> list[Problem]:
    """A problem when ``dest`` (the results folder of ``sub``'s name) holds the result of another submission."""
    path = dest / RESULTS_FILE
    if not path.exists():
        return []
    try:
        owner = read_results(path)["submission"].get("submission_sha256")
    except ResultsError:
        owner = None
    if owner == sub.sha256:
        return []
    what = (
        f"already holds the result of another submission (submission_sha256 {str(owner)[:16]}…), and "
        f"team {sub.team!r} / algorithm {sub.algorithm!r} would replace it: both are named {sub.name!r}"
    )
    fix = (f"choose a team or algorithm name of your own; to replace your own earlier result, remove {dest} "
           "first")  # fmt: skip
    return [Problem(str(path), what, fix)]


def evaluate_submission(
    root: Path,
    out: Path,
    config: LeaderboardEvalConfig | None = None,
    expected: DatasetIdentity | None = None,
    *,
    check_dataset: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Validate ``root``, re-evaluate every seed and write ``out/<name>/results.json`` atomically.

    Args:
        root: The submission directory.
        out: The results directory (may hold other submissions' results).
        config: Episodes, evaluation seeds, device, flag tolerance.
        expected: The leaderboard's dataset identity (see ``validate_submission``).
        check_dataset: False skips the dataset identity check.
        progress: Called with (seeds done, seeds in all).

    Returns:
        The path of ``results.json``.

    Raises:
        SubmissionError: the submission failed validation, or its results folder holds another
            submission's result (nothing is written).
    """
    cfg = config or LeaderboardEvalConfig()
    checked = validate_submission(root, expected, check_dataset=check_dataset)
    sub = checked.submission
    dest = Path(out) / sub.name
    if problems := claimed_by_another(sub, dest):
        raise SubmissionError(sub.root, problems)
    start = time.monotonic()
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for i, seed in enumerate(checked.seeds):
        e = seed.entry
        record = evaluate_seed(seed, sub.algorithm, cfg, sub.act)
        entries.setdefault(e.env_id, {}).setdefault(e.tier, {})[str(e.seed)] = record
        if progress is not None:
            progress(i + 1, len(checked.seeds))
    body = {
        "results_version": RESULTS_VERSION,
        "submission": {
            "name": sub.name,
            "team": sub.team,
            "algorithm": sub.algorithm,
            "code_url": sub.code_url,
            "dataset": sub.dataset.to_dict(),
            "submission_sha256": sub.sha256,
            "act": sub.act,
            "protocol": sub.protocol,
        },
        "provenance": {
            "package_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "protocol": PROTOCOL_VERSION,
            "eval_config": asdict(cfg),
            "dataset": sub.dataset.to_dict(),
            "dataset_checked": check_dataset,
            "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - start, 3),
        },
        "entries": entries,
    }
    try:
        text = json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as exc:
        raise SubmissionError(sub.root, [Problem(RESULTS_FILE, f"the verified results are not finite ({exc})",
                                                 "check that the policy's outputs are finite")]) from exc  # fmt: skip
    if problems := claimed_by_another(sub, dest):  # another evaluator may have written it meanwhile
        raise SubmissionError(sub.root, problems)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sub.root / SUBMISSION_FILE, dest / SUBMISSION_FILE)
    tmp = dest / f".{RESULTS_FILE}.tmp"
    tmp.write_text(text)
    os.replace(tmp, dest / RESULTS_FILE)
    return dest / RESULTS_FILE
