"""One way into a dataset directory: what is committed, reading it once, and writing it.

Input: a dataset directory (DESIGN.md §6, ``llmca_data.layout``). Output, for readers
(``Dataset``): the committed shards, episode ids and critics present, each shard's schema and
content (page checksums verified), and ``scan``, which reads each shard once and feeds several
``ShardVisitor`` consumers. For writers (``DatasetWriter``, under the dataset's lock): new
episodes (steps and episodes shards, optionally annotations), one critic's columns
(``credit_<critic>``, ``task_<critic>``) with its annotation rows, critic columns padded across
shards, the card's files, and provenance in ``meta/info.json``. Every shard goes through one
journaled ``shards.Commit``; ``commit()`` writes ``meta/manifest.json`` last.

Reading never creates anything: ``Dataset.open`` and ``writing(root, create=False)`` raise
``DatasetNotFoundError`` for a path that holds no dataset. Column names and types come from
``llmca_data.schema`` only.

Example::

    with writing(root, create=False) as ds:  # the lock; DatasetNotFoundError if there is no dataset
        ds.write_critic(shard, ds.read(shard), "my-critic", n_agents, episode_credits, annotation_rows)
        ds.commit()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmca_data.envs.base import EnvSpec
from llmca_data.errors import DatasetNotFoundError, ShardError
from llmca_data.info import critic_columns, load_info, record_collection, record_critic
from llmca_data.layout import INFO_PATH, MANIFEST_PATH, PENDING_PATH, ShardName
from llmca_data.schema import (
    CREDIT,
    TASK,
    CriticColumnKind,
    credit_column,
    critic_column_kind,
    critic_of_column,
    from_fsl,
    task_column,
    to_fsl,
)
from llmca_data.shards import (
    MAX_SHARD_BYTES,
    Commit,
    DatasetLock,
    Manifest,
    read_shard,
    regular_file,
    write_json_atomic,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(shards_done, shards_total)``."""
OnError = Callable[[ShardName, ShardError], None]
"""Takes an unreadable shard during ``scan`` (which then skips it) instead of raising."""


def require_dataset(root: Path) -> Path:
    """``root``, if it holds a dataset (a manifest, or the journal of a first commit); creates nothing.

    Raises:
        DatasetNotFoundError: ``root`` does not exist, is a file, or has no ``meta/manifest.json``.
    """
    root = Path(root)
    if root.is_dir() and ((root / MANIFEST_PATH).is_file() or (root / PENDING_PATH).is_file()):
        return root
    why = "it does not exist" if not root.exists() else "it is a file" if not root.is_dir() else "no meta/manifest.json"
    raise DatasetNotFoundError(
        f"no dataset at {root} ({why}): run `llmca collect ENV --tier TIER --episodes N --out {root}` "
        f"or `llmca download REPO --out {root}` first"
    )


class ShardVisitor(Protocol):
    """A consumer of ``Dataset.scan``: names the columns it needs from a shard, then gets them."""

    def columns(self, name: ShardName, schema: pa.Schema) -> Sequence[str] | None:
        """Columns wanted from ``name`` (absent ones are left out); None: all; empty: not this shard."""
        ...

    def visit(self, name: ShardName, table: pa.Table) -> None:
        """Consume the columns asked for (page checksums verified)."""
        ...


@dataclass(frozen=True)
class EpisodeCredits:
    """One episode's critic output, as its steps store it."""

    episode_id: int
    credits: np.ndarray
    """``[T, N]`` float32; NaN where the critic failed."""
    tasks: np.ndarray | None = None
    """``[T, N]`` int16 task ids (task critics), or None."""


class Dataset:
    """The committed state of a dataset directory: only files in ``meta/manifest.json`` are seen."""

    def __init__(self, root: Path, manifest: Manifest | None = None) -> None:
        self.root = Path(root)
        self.manifest = Manifest.load(self.root) if manifest is None else manifest
        self._schemas: dict[ShardName, pa.Schema] = {}

    @classmethod
    def open(cls, root: Path) -> Dataset:
        """The dataset at ``root`` (DatasetNotFoundError when there is none; MetadataError when malformed)."""
        return cls(require_dataset(root))

    def info(self) -> dict[str, Any]:
        """``meta/info.json`` (checked; see ``info.load_info``)."""
        return load_info(self.root)

    def shards(self, env_id: str | None = None, kind: str | None = None, tier: str | None = None) -> list[ShardName]:
        """Committed shards, filtered, in (env, kind, tier, index) order."""
        return self.manifest.shards(env_id, kind, tier)

    def envs(self, kind: str = "steps") -> list[str]:
        """Env ids with committed shards of ``kind``."""
        return sorted({n.env_id for n in self.shards(kind=kind)})

    def schema(self, name: ShardName) -> pa.Schema:
        """The Arrow schema of a committed shard (read from its footer once)."""
        if name not in self._schemas:
            path = self.root / str(name)
            try:
                self._schemas[name] = pq.read_schema(regular_file(path))
            except (OSError, pa.ArrowException) as exc:
                raise ShardError(
                    f"{path}: unreadable or corrupt Parquet ({exc}); re-download or re-collect this shard "
                    "(`llmca validate` lists every damaged file)"
                ) from exc
        return self._schemas[name]

    def read(self, name: ShardName, columns: Sequence[str] | None = None) -> pa.Table:
        """A committed shard (or some of its columns), every page checksum verified."""
        return read_shard(self.root / str(name), None if columns is None else list(columns))

    def episodes_column(self, column: str, env_id: str | None = None, tier: str | None = None) -> np.ndarray:
        """One column of the committed episodes tables (every env and tier unless filtered), in shard order."""
        names = self.shards(env_id, "episodes", tier)
        if not names:
            return np.empty(0, np.int64)
        return np.concatenate([self.read(n, [column]).column(column).to_numpy() for n in names])

    def episode_ids(self, env_id: str | None = None, tier: str | None = None) -> np.ndarray:
        """Committed episode ids, int64 ``[E]`` (every env and tier unless filtered)."""
        return self.episodes_column("episode_id", env_id, tier)

    def next_episode_id(self) -> int:
        """An id above every committed episode id (of any env and tier)."""
        ids = self.episode_ids()
        return int(ids.max()) + 1 if ids.size else 0

    def critic_fields(self, env_id: str | None = None, tiers: Sequence[str] | None = None) -> dict[str, pa.Field]:
        """The ``credit_*`` / ``task_*`` fields of the committed steps shards, by name in name order."""
        out: dict[str, pa.Field] = {}
        for name in self.shards(env_id, "steps"):
            if tiers is None or name.tier in tiers:
                for f in self.schema(name):
                    if critic_column_kind(f.name) is not None:
                        out.setdefault(f.name, f)
        return dict(sorted(out.items()))

    def critics(self, env_id: str | None = None, tiers: Sequence[str] | None = None) -> dict[str, str]:
        """Credit column → critic id of every critic with credits in the committed steps shards."""
        columns = [c for c in self.critic_fields(env_id, tiers) if critic_column_kind(c) is CREDIT]
        known = critic_columns(self.info()) if columns else {}
        return {c: critic_of_column(c, known) for c in columns}

    def scan(
        self,
        visitors: Sequence[ShardVisitor],
        names: Sequence[ShardName] | None = None,
        *,
        on_error: OnError | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Read each shard of ``names`` (default: every committed shard) once, with the union of the
        columns the ``visitors`` ask for, and give each visitor its own columns.

        A visitor none of whose columns is in a shard is not called for it.

        Raises:
            ShardError: a shard is unreadable or corrupt (unless ``on_error`` takes it).
        """
        targets = self.shards() if names is None else list(names)
        for k, name in enumerate(targets):
            if progress:
                progress(k, len(targets))
            try:
                schema = self.schema(name)
                asked = [(v, v.columns(name, schema)) for v in visitors]
                wanted = [(v, None if c is None else [x for x in c if x in schema.names]) for v, c in asked]
                wanted = [(v, c) for v, c in wanted if c is None or c]
                if not wanted:
                    continue
                union = (
                    None
                    if any(c is None for _, c in wanted)
                    else list(dict.fromkeys(x for _, c in wanted for x in c or ()))
                )
                table = self.read(name, union)
            except ShardError as exc:
                if on_error is None:
                    raise
                on_error(name, exc)
                continue
            for visitor, cols in wanted:
                visitor.visit(name, table if cols is None else table.select(cols))
        if progress:
            progress(len(targets), len(targets))


class DatasetWriter(Dataset):
    """Stages shards of a dataset whose ``DatasetLock`` the caller holds (``writing`` takes it);
    ``commit`` makes everything staged since the last commit visible at once."""

    def __init__(self, lock: DatasetLock, manifest: Manifest | None = None) -> None:
        super().__init__(lock.root, manifest)
        self._lock = lock
        self._commit = Commit(self.root, self.manifest)

    def append_episodes(
        self,
        spec: EnvSpec,
        tier: str,
        steps: pa.Table,
        episodes: pa.Table,
        annotations: pa.Table | None = None,
        max_shard_bytes: int = MAX_SHARD_BYTES,
    ) -> list[str]:
        """Stage new shards of ``tier`` (next indices; shards are never appended in place).

        ``episodes`` sorted by id and ``steps`` by (episode_id, t), as ``tables.episodes_to_tables``
        builds them; split at episode boundaries so a steps shard stays near ``max_shard_bytes``.
        ``annotations`` rows go with their episodes (same index as the steps shard). Returns the files.
        """
        lengths = episodes.column("length").to_numpy().astype(np.int64)
        per_row = max(1, steps.nbytes // max(1, steps.num_rows))
        group = np.cumsum(lengths) * per_row // max_shard_bytes  # shard number of each episode
        starts = np.concatenate([[0], np.cumsum(lengths)])
        first = {kind: self.manifest.next_index(spec.env_id, kind, tier) for kind in ("steps", "episodes")}
        files = []
        for k, g in enumerate(np.unique(group)):
            lo, hi = np.searchsorted(group, g, "left"), np.searchsorted(group, g, "right")
            parts = {"steps": steps.slice(starts[lo], starts[hi] - starts[lo]), "episodes": episodes.slice(lo, hi - lo)}
            if annotations is not None:
                ids = parts["episodes"].column("episode_id")
                parts["annotations"] = annotations.filter(pc.is_in(annotations.column("episode_id"), ids))
            for kind, table in parts.items():
                name = ShardName(spec.env_id, kind, tier, first.get(kind, first["steps"]) + k)
                self._commit.write(str(name), table)
                files.append(str(name))
        return files

    def write_critic(
        self,
        shard: ShardName,
        steps: pa.Table,
        critic_id: str,
        n_agents: int,
        results: Sequence[EpisodeCredits],
        annotations: pa.Table,
    ) -> None:
        """Stage steps shard ``shard`` (``steps`` is its whole table) with ``results`` in the critic's
        columns (``set_critic_columns``), and its annotations shard with ``annotations`` replacing
        this critic's rows of those episodes."""
        self._commit.write(str(shard), set_critic_columns(steps, critic_id, n_agents, results))
        name = ShardName(shard.env_id, "annotations", shard.tier, shard.index)
        if str(name) in self.manifest.files:
            old = self.read(name)
            replaced = pc.and_(
                pc.equal(old.column("critic"), critic_id),
                pc.is_in(old.column("episode_id"), annotations.column("episode_id")),
            )
            annotations = pa.concat_tables([old.filter(pc.invert(replaced)).cast(annotations.schema), annotations])
        self._commit.write(str(name), annotations.sort_by([("episode_id", "ascending"), ("critic", "ascending")]))

    def pad_critic_columns(self) -> list[str]:
        """Stage every steps shard of an env that lacks a critic column other shards of that env have,
        with that column filled with the missing value (NaN / −1). Returns the shards."""
        padded = []
        for env_id in self.envs():
            fields = self.critic_fields(env_id)
            for name in self.shards(env_id, "steps"):
                missing = [f for c, f in fields.items() if c not in self.schema(name).names]
                if not missing:
                    continue
                table = self.read(name)
                for f in missing:
                    table = _set_column(table, f, _kind(f.name).empty(table.num_rows, f.type.list_size))
                self._commit.write(str(name), table)
                padded.append(str(name))
                log.info("%s: filled missing critic columns %s", name, ", ".join(f.name for f in missing))
        return padded

    def write_file(self, rel_path: str, data: bytes) -> None:
        """Stage a plain file of the dataset (the card, a plot); it joins the next commit."""
        self._commit.write_bytes(rel_path, data)

    def record_collection(
        self, spec: EnvSpec, tier: str, policy_ids: list[str], description: str | None = None, executor: str = "local"
    ) -> dict[str, Any]:
        """Record an env/tier collection in ``meta/info.json`` (``description`` overrides the tier's)."""
        info = record_collection(self.root, spec, tier, policy_ids, executor)
        if description is not None:
            info["envs"][spec.env_id]["tiers"][tier]["description"] = description
            self.save_info(info)
        return info

    def record_critic(self, critic_id: str, params: dict[str, Any], executor: str = "local") -> None:
        """Record a critic's provenance (column, params, package version, executor) in ``meta/info.json``."""
        info = self.info()
        record_critic(info, critic_id, params, executor)
        self.save_info(info)

    def save_info(self, info: dict[str, Any]) -> None:
        """Replace ``meta/info.json`` atomically."""
        write_json_atomic(self.root / INFO_PATH, info)

    def commit(self) -> None:
        """Make every staged file visible: journal, rename into place, manifest last."""
        self._commit.apply(self._lock.token)
        self._schemas.clear()


@contextmanager
def writing(root: Path, create: bool = True) -> Iterator[DatasetWriter]:
    """Hold the writer lock of ``root`` (clearing what an interrupted writer left) and yield a writer.

    Raises:
        DatasetNotFoundError: ``create`` is False and ``root`` holds no dataset (nothing is created).
        DatasetLockedError: another process is writing ``root``.
    """
    if not create:
        require_dataset(root)
    with DatasetLock(Path(root)) as lock:
        yield DatasetWriter(lock)


def renumber_episodes(steps: pa.Table, episodes: pa.Table, first_id: int) -> tuple[pa.Table, pa.Table]:
    """Give ``episodes`` (sorted by id) the ids ``first_id``, ``first_id + 1``, ... and their steps the same."""
    index = episodes.column("episode_id").to_numpy()
    new_ids = np.arange(first_id, first_id + len(index), dtype=np.int64)
    episodes = episodes.set_column(0, "episode_id", pa.array(new_ids))
    steps_index = steps.column("episode_id").to_numpy()
    steps = steps.set_column(0, "episode_id", pa.array(new_ids[np.searchsorted(index, steps_index)]))
    return steps, episodes


def set_critic_columns(steps: pa.Table, critic_id: str, n_agents: int, results: Sequence[EpisodeCredits]) -> pa.Table:
    """``steps`` (sorted by episode_id, t) with ``results`` written into ``credit_<critic>``, and into
    ``task_<critic>`` when any result has tasks; other episodes keep their values (new columns
    start as NaN / −1, and a result without tasks gets −1).

    Raises:
        ValueError: a result's credits are not ``[T, N]`` for its episode's T steps.
    """
    ids = steps.column("episode_id").to_numpy()
    spans = []
    for r in results:
        lo, hi = int(np.searchsorted(ids, r.episode_id, "left")), int(np.searchsorted(ids, r.episode_id, "right"))
        if r.credits.shape != (hi - lo, n_agents):
            raise ValueError(f"{critic_id}: credits of shape {r.credits.shape} for {hi - lo} steps, {n_agents} agents")
        spans.append((lo, hi, r))
    steps = _write_spans(
        steps, CREDIT, credit_column(critic_id), n_agents, [(lo, hi, r.credits) for lo, hi, r in spans]
    )
    if any(r.tasks is not None for r in results):
        steps = _write_spans(steps, TASK, task_column(critic_id), n_agents, [(lo, hi, r.tasks) for lo, hi, r in spans])
    return steps


def _write_spans(
    steps: pa.Table,
    kind: CriticColumnKind,
    column: str,
    n_agents: int,
    spans: list[tuple[int, int, np.ndarray | None]],
) -> pa.Table:
    """Write row spans ``[lo, hi)`` of a critic column (None: the missing value)."""
    if column in steps.column_names:
        values = from_fsl(steps.column(column), (n_agents,)).astype(kind.dtype)  # [M, N], a copy
    else:
        values = kind.empty(steps.num_rows, n_agents)  # [M, N]
    for lo, hi, v in spans:
        values[lo:hi] = kind.missing if v is None else v
    return _set_column(steps, kind.field(column, n_agents), values)


def _set_column(table: pa.Table, field: pa.Field, values: np.ndarray) -> pa.Table:
    """``table`` with ``field`` set to ``values`` ``[M, N]`` (replaced in place, or appended)."""
    array = to_fsl(values.astype(_kind(field.name).dtype), field.type.value_type)
    if field.name in table.column_names:
        return table.set_column(table.schema.get_field_index(field.name), field, array)
    return table.append_column(field, array)


def _kind(column: str) -> CriticColumnKind:
    kind = critic_column_kind(column)
    if kind is None:
        raise ValueError(f"{column!r} is not a critic column")
    return kind
