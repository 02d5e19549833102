"""Check a dataset directory: files, hashes, page checksums, schema and invariants.

Input: a dataset directory. Output: a ``ValidationReport`` listing every problem with the
file it concerns (an empty list means valid). Checks: ``meta/manifest.json`` lists exactly
the files under ``data/`` (missing and extra files are problems) plus, after ``llmca build``,
``README.md`` and ``meta/return_hist_*.png`` (present and unchanged), sizes and sha256 match,
every Parquet page checksum verifies, each shard has the schema its env's spec implies,
steps are sorted by (episode_id, t) with t = 0, 1, ... within an episode, only an episode's
last step ends it and never with both ``terminated`` and ``truncated``, ``reward_team`` is
the sum of ``reward_env``, Shapley credits sum to ``reward_team`` where present, and the
episodes table agrees with the steps (same ids, lengths, returns), and each critic's credits
agree with its annotations (``ok``/``repaired`` ⇒ finite, ``failed`` ⇒ NaN). Only regular files are opened;
while a writer holds the lock the check reports the write in progress instead.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llmca_data.dataset import Dataset
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import LlmcaError, ShardError
from llmca_data.info import load_info, spec_from_info
from llmca_data.layout import INFO_PATH, LOCK_NAME, MANIFEST_PATH, PENDING_PATH, ShardName, data_files, is_build_file
from llmca_data.schema import (
    ANNOTATION_STATUSES,
    CREDIT,
    annotations_schema,
    credit_column,
    critic_column_kind,
    episodes_schema,
    from_fsl,
    schema_mismatch,
    steps_schema,
)
from llmca_data.shards import Manifest, lock_holder, regular_file, sha256_file

SCHEMAS = {"steps": steps_schema, "episodes": episodes_schema, "annotations": annotations_schema}
SHAPLEY = credit_column("shapley")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))


def validate(root: Path, progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Validate the dataset at ``root``; never raises for bad data (malformed metadata included), only reports it."""
    started = time.perf_counter()
    report = ValidationReport()
    writer = _writer_pid(root)
    if writer is not None:
        report.add(
            LOCK_NAME,
            f"a write is in progress (pid {writer} holds the writer lock), so the files may change under the "
            "check; validate again when it finishes",
        )
        return report
    try:
        manifest = Manifest.load(root)
    except LlmcaError as exc:
        report.add(MANIFEST_PATH, str(exc))
        return report
    try:
        info = load_info(root)
    except LlmcaError as exc:
        report.add(INFO_PATH, str(exc))
        return report
    if not (root / MANIFEST_PATH).exists():
        report.add(MANIFEST_PATH, "missing: no writer ever committed here (run `llmca collect`)")
        return report
    if (root / PENDING_PATH).exists():
        report.add(
            PENDING_PATH,
            "a writer was interrupted mid-commit; run any writing command (e.g. `llmca collect` "
            "with the same arguments) to finish it",
        )
    if not (root / INFO_PATH).exists():
        report.add(INFO_PATH, "missing: re-run `llmca collect` or `llmca build` to write it")
    on_disk = set(data_files(root))
    built = {rel for rel in manifest.files if is_build_file(rel)}
    listed = set(manifest.files) - built
    for rel in sorted(built):
        _check_build_file(root, rel, manifest, report)
    for rel in sorted(listed - on_disk):
        report.add(rel, "listed in the manifest but missing on disk; re-download or re-collect it")
    for rel in sorted(on_disk - listed):
        report.add(rel, "not listed in the manifest (left by an interrupted writer or copied in by hand); remove it")
    names = [n for n in map(ShardName.parse, sorted(listed)) if n is not None]
    for rel in sorted(listed - {str(n) for n in names}):
        report.add(rel, "file name does not follow data/<env_id>/<kind>/<tier>-NNNNN.parquet")
    present = [n for n in names if (root / str(n)).exists()]
    for name in present:
        _check_hash(root, str(name), manifest, report)
    checks = _ShardChecks(manifest, info, report)

    def unreadable(name: ShardName, exc: ShardError) -> None:
        report.add(str(name), str(exc).removeprefix(f"{root / str(name)}: "))

    Dataset(root, manifest).scan([checks], present, on_error=unreadable, progress=progress)
    checks.finish()
    report.seconds = time.perf_counter() - started
    return report


def _writer_pid(root: Path) -> str | None:
    """The pid of the process holding ``root``'s writer lock, or None (the lock is never created here)."""
    try:
        fd = os.open(regular_file(root / LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except (OSError, ShardError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(os.pread(fd, 128, 0))
    finally:
        os.close(fd)  # closing releases a shared lock taken here
    return None


def _check_build_file(root: Path, rel: str, manifest: Manifest, report: ValidationReport) -> None:
    """The card and plots of ``llmca build``: present, with the manifest's size and sha256."""
    path = root / rel
    if not path.is_file() or path.is_symlink():
        report.add(rel, "listed in the manifest but missing on disk (or not a regular file); run `llmca build`")
        return
    report.files += 1
    report.bytes += path.stat().st_size
    entry = manifest.files[rel]
    if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
        report.add(rel, "differs from the manifest (edited after `llmca build`?); run `llmca build` to render it again")


def _check_hash(root: Path, rel: str, manifest: Manifest, report: ValidationReport) -> None:
    """A committed shard has the manifest's size and sha256."""
    path = root / rel
    entry = manifest.files[rel]
    try:
        size = regular_file(path).stat().st_size
    except ShardError as exc:
        report.add(rel, str(exc).removeprefix(f"{path}: "))
        return
    report.files += 1
    report.bytes += size
    if size != entry.bytes:
        report.add(rel, f"size {size} bytes, manifest says {entry.bytes} (truncated or replaced)")
    elif sha256_file(path) != entry.sha256:
        report.add(rel, "sha256 differs from the manifest (the file was modified or corrupted)")


class _ShardChecks:
    """A ``Dataset.scan`` visitor: each shard's rows, schema and invariants; ``finish`` checks each
    (env, tier) across its shards (order, t, the episodes table)."""

    def __init__(self, manifest: Manifest, info: dict[str, Any], report: ValidationReport) -> None:
        self.manifest, self.info, self.report = manifest, info, report
        self.steps: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}  # (episode_id, t) per shard
        self.episodes: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}  # (episode_id, length)
        self.specs: dict[str, EnvSpec | None] = {}  # None: malformed in meta/info.json (reported once)
        self.statuses: dict[tuple[str, str], dict[tuple[str, int], str]] = {}  # (credit column, episode) → status
        self.credits: dict[tuple[str, str], list[dict[str, _EpisodeCredits]]] = {}

    def columns(self, name: ShardName, schema: pa.Schema) -> None:
        return None  # every column: the schema and the invariants are checked

    def visit(self, name: ShardName, table: pa.Table) -> None:
        rel, report = str(name), self.report
        report.rows += table.num_rows
        if table.num_rows != self.manifest.files[rel].rows:
            report.add(rel, f"{table.num_rows} rows, manifest says {self.manifest.files[rel].rows}")
        if table.num_rows == 0:
            report.add(rel, "empty shard (0 rows); writers never commit one: re-collect or re-download the dataset")
            return
        env = self.info.get("envs", {}).get(name.env_id)
        if env is None:
            report.add(rel, f"env {name.env_id} is not described in {INFO_PATH}")
            return
        if name.env_id not in self.specs:
            try:
                self.specs[name.env_id] = spec_from_info(env)
            except LlmcaError as exc:
                self.specs[name.env_id] = None
                report.add(INFO_PATH, str(exc))
        spec = self.specs[name.env_id]
        if spec is None:
            return
        if not _check_schema(rel, table, spec, name.kind, report):
            return
        key = (name.env_id, name.tier)
        if name.kind == "annotations":
            _check_annotations(rel, table, report)
            keys = zip(*(table.column(c).to_pylist() for c in ("episode_id", "critic", "status")), strict=True)
            statuses = self.statuses.setdefault(key, {})
            for episode_id, critic, status in keys:
                statuses[(credit_column(critic), episode_id)] = status
        elif name.kind == "episodes":
            parts = (table.column("episode_id").to_numpy(), table.column("length").to_numpy())
            self.episodes.setdefault(key, []).append(parts)
        else:
            _check_step_rows(rel, table, report)
            self.credits.setdefault(key, []).append(_credit_states(table, spec.n_agents))
            self.steps.setdefault(key, []).append((table.column("episode_id").to_numpy(), table.column("t").to_numpy()))

    def finish(self) -> None:
        for (env_id, tier), parts in sorted(self.steps.items()):
            _check_episodes(env_id, tier, parts, self.episodes.get((env_id, tier), []), self.report)
        for key, shards in sorted(self.credits.items()):
            _check_credit_status(key, shards, self.statuses.get(key, {}), self.report)


_EpisodeCredits = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per episode of a shard: ids [E], whether every credit is finite [E], whether every credit is NaN [E]."""


def _credit_states(table: pa.Table, n_agents: int) -> dict[str, _EpisodeCredits]:
    """Each credit column of a steps shard (sorted by episode) reduced to per-episode states."""
    ids = table.column("episode_id").to_numpy()
    starts = np.flatnonzero(np.append(True, ids[1:] != ids[:-1]))
    out = {}
    for column in table.column_names:
        if critic_column_kind(column) is CREDIT:
            values = from_fsl(table.column(column), (n_agents,))  # [M, N]
            finite, nan = np.isfinite(values).all(axis=1), np.isnan(values).all(axis=1)  # [M]
            out[column] = (ids[starts], np.logical_and.reduceat(finite, starts), np.logical_and.reduceat(nan, starts))
    return out


def _check_credit_status(
    key: tuple[str, str],
    shards: list[dict[str, _EpisodeCredits]],
    statuses: dict[tuple[str, int], str],
    report: ValidationReport,
) -> None:
    """An episode annotated ``ok`` or ``repaired`` has finite credits; one annotated ``failed`` has NaN."""
    where = f"data/{key[0]}/steps/{key[1]}-*"
    bad: dict[tuple[str, str], list[int]] = {}
    for states in shards:
        for column, (ids, finite, nan) in states.items():
            for episode_id, all_finite, all_nan in zip(ids.tolist(), finite.tolist(), nan.tolist(), strict=True):
                status = statuses.get((column, episode_id))
                if (status in ("ok", "repaired") and not all_finite) or (status == "failed" and not all_nan):
                    bad.setdefault((column, status), []).append(episode_id)
    for (column, status), episode_ids in sorted(bad.items()):
        must = "NaN" if status == "failed" else "finite"
        report.add(
            where,
            f"{column}: {len(episode_ids)} episode(s) annotated {status!r} have credits that are not all {must} "
            f"(episodes {episode_ids[:5]}); re-annotate them with `llmca annotate --force`",
        )


def _check_schema(rel: str, table: pa.Table, spec: EnvSpec, kind: str, report: ValidationReport) -> bool:
    problem = schema_mismatch(table.schema, SCHEMAS[kind](spec), spec.n_agents if kind == "steps" else None)
    if problem:
        report.add(rel, f"wrong schema for {spec.env_id} {kind}: {problem}")
    return problem is None


def _check_annotations(rel: str, table: pa.Table, report: ValidationReport) -> None:
    unknown = set(table.column("status").to_pylist()) - set(ANNOTATION_STATUSES)
    if unknown:
        report.add(rel, f"unknown status values {sorted(unknown)}")
    keys = table.select(["episode_id", "critic"]).to_pylist()
    if len({(k["episode_id"], k["critic"]) for k in keys}) != len(keys):
        report.add(rel, "duplicate (episode_id, critic) rows")


def _check_step_rows(rel: str, table: pa.Table, report: ValidationReport) -> None:
    """Within one steps shard: episode ends, reward_team, Shapley efficiency."""
    ids = table.column("episode_id").to_numpy()
    term = table.column("terminated").to_numpy(zero_copy_only=False)
    trunc = table.column("truncated").to_numpy(zero_copy_only=False)
    if np.any(term & trunc):
        report.add(rel, f"{int(np.sum(term & trunc))} steps are both terminated and truncated")
    last = np.append(ids[1:] != ids[:-1], True)  # last row of each episode within the shard
    if np.any((term | trunc) & ~last):
        report.add(rel, "an episode ends (terminated/truncated) before its last step")
    if np.any(last & ~(term | trunc)):
        report.add(rel, "an episode's last step is neither terminated nor truncated (cut episode?)")
    n = table.schema.field("reward_env").type.list_size
    reward_env = from_fsl(table.column("reward_env"), (n,))
    team = table.column("reward_team").to_numpy()
    if not np.allclose(reward_env.sum(axis=1), team, atol=1e-5):
        report.add(rel, "reward_team differs from the sum of reward_env")
    if SHAPLEY in table.column_names:
        credit = from_fsl(table.column(SHAPLEY), (n,)).sum(axis=1)
        ok = np.isnan(credit) | np.isclose(credit, team, atol=1e-4)
        if not ok.all():
            report.add(rel, f"Shapley efficiency fails on {int((~ok).sum())} steps (credits must sum to reward_team)")


def _check_episodes(
    env_id: str,
    tier: str,
    steps: list[tuple[np.ndarray, np.ndarray]],
    episodes: list[tuple[np.ndarray, np.ndarray]],
    report: ValidationReport,
) -> None:
    """Across the steps shards of one (env, tier): sort order, t, and agreement with the episodes table."""
    where = f"data/{env_id}/steps/{tier}-*"
    ids, t = np.concatenate([i for i, _ in steps]), np.concatenate([t for _, t in steps])
    if ids.size == 0:
        return
    new_ep = np.append(True, ids[1:] != ids[:-1])
    if np.any(np.diff(ids) < 0) or len(np.unique(ids)) != int(new_ep.sum()):
        report.add(where, "steps are not sorted by episode_id (an episode's rows must be contiguous and ordered)")
        return
    expected_t = np.arange(len(t)) - np.maximum.accumulate(np.where(new_ep, np.arange(len(t)), 0))
    if not np.array_equal(t, expected_t):
        report.add(where, "t is not 0, 1, 2, ... within every episode")
    if not episodes:
        report.add(where, f"no episodes shard for tier {tier}")
        return
    ep_ids = np.concatenate([i for i, _ in episodes])
    step_ids, counts = np.unique(ids, return_counts=True)
    if len(np.unique(ep_ids)) != len(ep_ids):
        report.add(f"data/{env_id}/episodes/{tier}-*", "duplicate episode ids")
    if not np.array_equal(np.sort(ep_ids), step_ids):
        report.add(where, "the episode ids of steps and episodes tables differ")
        return
    order = np.argsort(ep_ids)
    lengths = np.concatenate([n for _, n in episodes])[order]
    if not np.array_equal(lengths, counts):
        bad = step_ids[lengths != counts][:5].tolist()
        report.add(f"data/{env_id}/episodes/{tier}-*", f"length differs from the number of steps for episodes {bad}")
