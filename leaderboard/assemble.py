"""Assemble a submission directory from our own run directories (what ``llmca pipeline`` submits).

Input: run directories written by ``llmca train`` (``config.json`` + ``model.safetensors``,
optionally ``eval.json``) of torch baselines with an allowlisted architecture, one per seed.
Output: a submission directory — ``submission.json`` plus
``checkpoints/<env_id>/<tier>/seed<k>.safetensors`` copied byte for byte — that
``validate_submission`` accepts when there are at least ``MIN_SEEDS`` seeds per env and tier.

Each seed's ``config`` holds only the architecture's typed fields; the run's full
``config.json`` is kept under ``training`` (informational), its ``eval.json`` numbers, when
present, become the self-reported ``metrics``, and ``diverged`` is read from its
``metrics.jsonl``. The submission records its ``act`` mode and the evaluation ``protocol`` of
those metrics (the oldest among the runs' ``eval.json``).

Example::

    ident = dataset_identity("llmca-output/dataset")
    make_submission(sorted(Path("runs").glob("bc-*")), Path("sub"), team="llmca", algorithm="bc",
                    code_url="https://github.com/llmca/llmca-data", dataset=ident)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from llmca_data.baselines.evaluate import PROTOCOL_VERSION, as_act, run_diverged
from llmca_data.baselines.policy import RUN_EVAL, RUN_WEIGHTS, load_config
from llmca_data.errors import LlmcaError

from .architectures import ARCHITECTURES, architecture_for_algo
from .submission import SUBMISSION_FILE, SUBMISSION_VERSION, DatasetIdentity

REPORTED_METRICS = ("mean_return", "std_return", "normalized_score", "mean_cost", "success_rate", "episodes")
"""``eval.json`` fields copied into a seed's self-reported ``metrics``."""


class AssembleError(LlmcaError, ValueError):
    """Runs that cannot form a submission (unknown architecture, duplicate seed, missing weights)."""


def _seed_entry(run: Path, act: str) -> tuple[str, str, int, dict[str, Any], int]:
    """(env_id, tier key, seed, the seed entry without its checkpoint path, the protocol of its
    metrics) of one run directory whose ``eval.json``, if any, must have acted as ``act``."""
    config = load_config(run)
    algo = str(config.get("algo"))
    try:
        arch_id = architecture_for_algo(algo)
    except KeyError:
        allowed = sorted(a for arch in ARCHITECTURES.values() for a in arch.algos)
        raise AssembleError(f"{run}: {algo!r} runs have no allowlisted architecture; submit one of {allowed}") from None
    fields = {f.name for f in dataclasses.fields(ARCHITECTURES[arch_id].spec_class)}
    arch_config = {k: config[k] for k in sorted(fields) if k in config}
    metrics: dict[str, Any] = {}
    protocol = PROTOCOL_VERSION
    if (run / RUN_EVAL).is_file():
        evaluation = json.loads((run / RUN_EVAL).read_text())
        if (acted := evaluation.get("act", "greedy")) != act:
            raise AssembleError(f"{run}: its {RUN_EVAL} acted {acted}, the submission acts {act}; run "
                                f"`llmca evaluate {run} --act {act}` first, or submit with act={acted!r}")  # fmt: skip
        metrics = {k: evaluation[k] for k in REPORTED_METRICS if k in evaluation}
        protocol = int(evaluation.get("protocol", 1))
    tiers = config.get("tiers") or ["all"]
    entry = {"architecture": arch_id, "config": arch_config, "metrics": metrics, "diverged": run_diverged(run),
             "training": config}  # fmt: skip
    return str(config["env_id"]), "+".join(str(t) for t in tiers), int(config.get("seed", 0)), entry, protocol


def make_submission(
    runs: list[Path],
    out: Path,
    *,
    team: str,
    algorithm: str,
    code_url: str,
    dataset: DatasetIdentity,
    act: str = "greedy",
) -> Path:
    """Write a submission directory from ``runs`` (one per env, tier and seed); returns ``out``.

    ``act`` is how the evaluator plays every policy (``sample``: BC family only, see
    ``load_submission``).

    Raises:
        AssembleError: a run of a non-allowlisted algorithm (e.g. the d3rlpy runners), two runs
            with the same env, tier and seed, a run without weights, a run whose ``eval.json``
            used another act mode, or a non-empty ``out``.
        RunError: a directory that is not a run directory.
        ActModeError: ``act`` is neither ``greedy`` nor ``sample``.
    """
    act = as_act(act)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AssembleError(f"{out} is not empty; give a new directory for the submission")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    copies: list[tuple[Path, Path]] = []
    protocol = PROTOCOL_VERSION
    for run in runs:
        run = Path(run)
        if not (run / RUN_WEIGHTS).is_file():
            raise AssembleError(f"{run} has no {RUN_WEIGHTS}: train it first")
        env_id, tier, seed, entry, run_protocol = _seed_entry(run, act)
        protocol = min(protocol, run_protocol)
        rel = entry["checkpoint"] = f"checkpoints/{env_id}/{tier}/seed{seed}.safetensors"
        seeds = results.setdefault(env_id, {}).setdefault(tier, {})
        if str(seed) in seeds:
            raise AssembleError(f"{run}: {env_id}/{tier} seed {seed} is already given by another run")
        seeds[str(seed)] = entry
        copies.append((run / RUN_WEIGHTS, out / rel))
    for src, dest in copies:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    body = {"submission_version": SUBMISSION_VERSION, "team": team, "algorithm": algorithm, "code_url": code_url,
            "act": act, "protocol": protocol, "dataset": dataset.to_dict(), "results": results}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{SUBMISSION_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, out / SUBMISSION_FILE)
    return out
