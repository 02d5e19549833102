"""Validate a submission directory before anything in it is deserialised.

Input: a submission directory (see ``submission.py``) and, optionally, the leaderboard's
dataset identity. Output: a ``ValidatedSubmission`` (the parsed submission, each seed's
typed architecture config and resolved checkpoint path), or a ``SubmissionError`` naming
every problem found, each with its file and its fix.

Checks, cheapest first, all collected rather than stopping at the first: the schema of
``submission.json`` (``MIN_SEEDS`` to ``MAX_SEEDS`` seeds per env and tier, at most
``MAX_ENTRIES`` in all: over a bound, no checkpoint is opened); each checkpoint path
(relative, no ``..``, no symlink anywhere on the way, inside the directory, a regular
``.safetensors`` file with one link, not the file of another seed, at most
``MAX_TOTAL_CHECKPOINT_BYTES`` together); its architecture (allowlisted) and config (fits the
typed config and the env's sizes); the env and tiers its run records (``training`` and the
safetensors ``__metadata__``) equal those it is submitted under; its header (not a pickle or
zip, a well-formed safetensors header — see ``checkpoint.py``); its tensor names, shapes and
dtypes against the architecture built on the meta device; the dataset identity (Hub revision
exists through ``HF_ENDPOINT``, equals the expected one). Only when all of that passed is each
checkpoint read whole, once: its sha256 (no two seeds may submit the same bytes) and every
float weight finite.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from llmca_data.envs import env_spec
from llmca_data.errors import UnknownEnvError

from .architectures import AgentNetSpec, QMixSpec, expected_tensors, parse_spec
from .checkpoint import (
    MAX_CHECKPOINT_BYTES,
    SafetensorsHeader,
    compare_tensors,
    read_header,
    scan_checkpoint,
    shown,
)
from .identity import check_identity
from .submission import (
    SUBMISSION_FILE,
    DatasetIdentity,
    Problem,
    SeedEntry,
    Submission,
    SubmissionError,
    load_submission,
)

PATH_FIX = (
    "give a relative path to a regular file inside the submission directory (no '..', no symlinks, "
    "no hard links: copy the file in)"
)
MAX_TOTAL_CHECKPOINT_BYTES = 8 * MAX_CHECKPOINT_BYTES
"""Most checkpoint bytes one submission may hold in all (8 GiB), checked from sizes before any is read."""
FileKey = tuple[int, int]
"""(device, inode): one file, however its path is spelled."""


@dataclass(frozen=True)
class CheckedSeed:
    """A seed entry whose checkpoint passed every check: what the evaluator may load."""

    entry: SeedEntry
    spec: AgentNetSpec
    path: Path
    header: SafetensorsHeader
    """Its checked header."""
    sha256: str = ""
    """sha256 of the checkpoint's bytes as validated (the evaluator loads only these bytes)."""


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
    if (links := path.lstat().st_nlink) != 1:
        return None, (f"checkpoint {rel!r} has {links} hard links: a hard link can expose a file from outside "
                      "the submission directory, so only files with one link are read")  # fmt: skip
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


def _recorded(entry: SeedEntry, metadata: dict[str, str]) -> list[str]:
    """Problems where the env or tiers its run records (the entry's ``training``, the checkpoint's
    ``__metadata__``) differ from the env and tier the entry is submitted under; absent records pass."""
    training = entry.training
    envs = {"training.env_id": training.get("env_id"), "__metadata__ env_id": metadata.get("env_id")}
    problems = [f"{what} is {shown(env)} but the entry is submitted under env {entry.env_id}"
                for what, env in envs.items() if env is not None and env != entry.env_id]  # fmt: skip
    tiers = {"training.tiers": training.get("tiers", training.get("tier")),
             "__metadata__ tiers": metadata.get("tiers", metadata.get("tier"))}  # fmt: skip
    submitted = set(entry.tier.split("+"))
    for what, recorded in tiers.items():
        names = recorded.split("+") if isinstance(recorded, str) else recorded
        if recorded is not None and (not isinstance(names, list) or set(map(str, names)) != submitted):
            problems.append(f"{what} is {shown(recorded)} but the entry is submitted under tier {entry.tier}")
    return problems


def check_seed(
    root: Path, entry: SeedEntry, owners: dict[FileKey, SeedEntry] | None = None
) -> tuple[CheckedSeed | None, list[Problem]]:
    """Every cheap check of one seed entry: path, architecture and config, recorded env and tiers,
    header, tensors. ``owners`` (file → the first entry that submitted it) refuses a file that an
    earlier entry already submitted, before its header is read."""
    problems: list[Problem] = []
    path, problem = resolve_checkpoint(root, entry.checkpoint)
    if problem is not None:
        problems.append(Problem(entry.where, problem, PATH_FIX))
    spec, spec_problems = parse_spec(entry.architecture, entry.config)
    fix = f"use an allowlisted architecture and exactly its config fields ({shown(entry.architecture)})"
    problems += [Problem(entry.where, p, fix) for p in spec_problems]
    if spec is not None:
        problems += [Problem(entry.where, p, "train on this env") for p in _fits_env(entry, spec)]
    if path is None:
        return None, problems
    if owners is not None:
        info = path.stat()
        first = owners.setdefault((info.st_dev, info.st_ino), entry)
        if first is not entry:
            problems.append(Problem(entry.where, f"same bytes as the checkpoint of {first.where} (the same file)",
                                    "submit one independently trained run per seed"))  # fmt: skip
            return None, problems
    header, header_problems = read_header(path)
    problems += [
        Problem(entry.checkpoint, p, "save the weights with safetensors.torch.save_file") for p in header_problems
    ]
    fix = "submit each checkpoint under the env and tier its run was trained on"
    problems += [Problem(entry.where, p, fix) for p in _recorded(entry, header.metadata if header else {})]
    if header is not None and spec is not None and not problems:
        expected = expected_tensors(entry.architecture, spec)
        fix = f"save exactly the state_dict of {entry.architecture} built from this config, under its prefixes"
        problems += [Problem(entry.checkpoint, p, fix) for p in compare_tensors(header, expected)]
    if problems or spec is None or header is None:
        return None, problems
    return CheckedSeed(entry, spec, path, header), []


def _total_bytes(seeds: list[CheckedSeed]) -> list[Problem]:
    """A problem when the checkpoints together are larger than ``MAX_TOTAL_CHECKPOINT_BYTES`` (sizes only)."""
    total = sum(seed.path.stat().st_size for seed in seeds)
    if total <= MAX_TOTAL_CHECKPOINT_BYTES:
        return []
    return [
        Problem(
            SUBMISSION_FILE,
            f"the checkpoints hold {total} bytes together, more than "
            f"MAX_TOTAL_CHECKPOINT_BYTES={MAX_TOTAL_CHECKPOINT_BYTES}",
            "submit fewer or smaller runs",
        )
    ]


def _scan(seeds: list[CheckedSeed]) -> tuple[list[CheckedSeed], list[Problem]]:
    """Read each checkpoint once: its sha256 (one problem per seed whose bytes another seed also
    submits: seeds must be separate runs) and its float weights (finite)."""
    owners: dict[str, SeedEntry] = {}
    scanned, problems = [], []
    for seed in seeds:
        digest, found = scan_checkpoint(seed.path, seed.header)
        fix = "every float weight must be finite: retrain the run (a diverged run cannot be ranked)"
        problems += [Problem(seed.entry.checkpoint, p, fix) for p in found]
        if digest is None:
            continue
        if (first := owners.setdefault(digest, seed.entry)) is not seed.entry:
            problems.append(Problem(seed.entry.where, f"same bytes as the checkpoint of {first.where}",
                                    "submit one independently trained run per seed"))  # fmt: skip
        scanned.append(dataclasses.replace(seed, sha256=digest))
    return scanned, problems


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
    owners: dict[FileKey, SeedEntry] = {}
    for entry in submission.entries:
        checked, seed_problems = check_seed(root, entry, owners)
        problems += seed_problems
        if checked is not None:
            seeds.append(checked)
    problems += _total_bytes(seeds)
    if check_dataset:
        problems += check_identity(submission.dataset, expected)
    if problems:
        raise SubmissionError(root, problems)
    seeds, problems = _scan(seeds)  # the only full reads, once every cheap check passed
    if problems:
        raise SubmissionError(root, problems)
    return ValidatedSubmission(submission, seeds)
