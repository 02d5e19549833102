"""Validate a submission directory before anything in it is deserialised.

Input: a submission directory (see ``submission.py``) and, optionally, the leaderboard's
dataset identity. Output: a ``ValidatedSubmission`` (the parsed submission, each seed's
typed architecture config and resolved checkpoint path), or a ``SubmissionError`` naming
every problem found, each with its file and its fix.

Checks, in order, all collected rather than stopping at the first: the schema of
``submission.json`` (≥ ``MIN_SEEDS`` seeds per env and tier); each checkpoint path (relative,
no ``..``, no symlink anywhere on the way, inside the directory, a regular ``.safetensors``
file, not shared with another seed); its architecture (allowlisted) and config (fits the
typed config and the env's sizes); its bytes (not a pickle or zip, a well-formed safetensors
header — see ``checkpoint.py``); its tensor names, shapes and dtypes against the
architecture built on the meta device; the dataset identity (Hub revision exists through
``HF_ENDPOINT``, equals the expected one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from llmca_data.envs import env_spec
from llmca_data.errors import UnknownEnvError

from .architectures import AgentNetSpec, QMixSpec, expected_tensors, parse_spec
from .checkpoint import compare_tensors, read_header
from .identity import check_identity
from .submission import DatasetIdentity, Problem, SeedEntry, Submission, SubmissionError, load_submission

PATH_FIX = "give a relative path to a regular file inside the submission directory (no '..', no symlinks)"


@dataclass(frozen=True)
class CheckedSeed:
    """A seed entry whose checkpoint passed every check: what the evaluator may load."""

    entry: SeedEntry
    spec: AgentNetSpec
    path: Path


@dataclass(frozen=True)
class ValidatedSubmission:
    """A submission that passed ``validate_submission``."""

    submission: Submission
    seeds: list[CheckedSeed]


def resolve_checkpoint(root: Path, rel: str) -> tuple[Path | None, str | None]:
    """``root/rel`` when it is a safe, regular file inside ``root``; else (None, what is wrong).

    ``root`` must already be resolved. Every component is checked with ``lstat`` semantics, so
    a symlink anywhere on the way is refused, whether it points inside or outside.
    """
    if not rel or "\\" in rel or "\x00" in rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        return None, f"checkpoint path {rel!r} is absolute or malformed"
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        return None, f"checkpoint path {rel!r} contains '..' and could escape the submission directory"
    if not rel.endswith(".safetensors"):
        return None, f"checkpoint path {rel!r} does not end with .safetensors"
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None, f"checkpoint path {rel!r} goes through the symlink {part!r} (→ {path.readlink()})"
    if not path.resolve().is_relative_to(root):
        return None, f"checkpoint path {rel!r} resolves outside the submission directory"
    if not path.is_file():
        return None, f"checkpoint {rel!r} does not exist or is not a regular file"
    return path, None


def _fits_env(entry: SeedEntry, spec: AgentNetSpec) -> list[str]:
    """Problems where the config's sizes differ from the env's."""
    try:
        env = env_spec(entry.env_id)
    except UnknownEnvError as exc:
        return [f"unknown env {entry.env_id!r} ({exc})"]
    want = {"obs_dim": env.obs_dim, "n_agents": env.n_agents, "n_actions": env.n_actions}
    if isinstance(spec, QMixSpec):
        want["state_dim"] = env.state_dim
    return [
        f"config {k}={getattr(spec, k)} but {entry.env_id} has {v}" for k, v in want.items() if getattr(spec, k) != v
    ]


def check_seed(root: Path, entry: SeedEntry) -> tuple[CheckedSeed | None, list[Problem]]:
    """Every check of one seed entry: path, architecture and config, header, tensors."""
    problems: list[Problem] = []
    path, problem = resolve_checkpoint(root, entry.checkpoint)
    if problem is not None:
        problems.append(Problem(entry.where, problem, PATH_FIX))
    spec, spec_problems = parse_spec(entry.architecture, entry.config)
    fix = f"use an allowlisted architecture and exactly its config fields ({entry.architecture})"
    problems += [Problem(entry.where, p, fix) for p in spec_problems]
    if spec is not None:
        problems += [Problem(entry.where, p, "train on this env") for p in _fits_env(entry, spec)]
    if path is None:
        return None, problems
    header, header_problems = read_header(path)
    problems += [
        Problem(entry.checkpoint, p, "save the weights with safetensors.torch.save_file") for p in header_problems
    ]
    if header is not None and spec is not None and not problems:
        expected = expected_tensors(entry.architecture, spec)
        fix = f"save exactly the state_dict of {entry.architecture} built from this config, under its prefixes"
        problems += [Problem(entry.checkpoint, p, fix) for p in compare_tensors(header, expected)]
    if problems or spec is None:
        return None, problems
    return CheckedSeed(entry, spec, path), []


def _shared_checkpoints(seeds: list[CheckedSeed]) -> list[Problem]:
    """One problem per checkpoint whose bytes another seed also submits (seeds must be separate runs)."""
    owners: dict[str, SeedEntry] = {}
    problems = []
    for seed in seeds:
        digest = hashlib.sha256(seed.path.read_bytes()).hexdigest()
        if (first := owners.setdefault(digest, seed.entry)) is not seed.entry:
            problems.append(Problem(seed.entry.where, f"same bytes as the checkpoint of {first.where}",
                                    "submit one independently trained run per seed"))  # fmt: skip
    return problems


def validate_submission(
    root: Path, expected: DatasetIdentity | None = None, *, check_dataset: bool = True
) -> ValidatedSubmission:
    """Check a submission directory completely, without deserialising any tensor.

    Args:
        root: The submission directory.
        expected: The leaderboard's dataset identity; the submission's must equal it. Without
            it a Hub identity is only checked to exist, and a local one cannot be checked.
        check_dataset: False skips the dataset identity (e.g. re-validating stored results).

    Raises:
        SubmissionError: with every problem found.
    """
    root = Path(root)
    if not root.is_dir():
        raise SubmissionError(root, [Problem(str(root), "not a directory", "pass a submission directory")])
    root = root.resolve()
    submission, problems = load_submission(root)
    if submission is None:
        raise SubmissionError(root, problems)
    seeds: list[CheckedSeed] = []
    for entry in submission.entries:
        checked, seed_problems = check_seed(root, entry)
        problems += seed_problems
        if checked is not None:
            seeds.append(checked)
    problems += _shared_checkpoints(seeds)
    if check_dataset:
        problems += check_identity(submission.dataset, expected)
    if problems:
        raise SubmissionError(root, problems)
    return ValidatedSubmission(submission, seeds)
