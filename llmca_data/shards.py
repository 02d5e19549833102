"""Shard files, the manifest and the writer lock.

Input: Arrow tables. Output: zstd Parquet shards with page checksums, written to a
temporary name and renamed into place, and ``meta/manifest.json`` (every data file's
rows, bytes and sha256), which is written last and is the commit point of every writer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.errors import DatasetLockedError, MetadataError, ShardError
from llmca_data.layout import (
    LOCK_NAME,
    MANIFEST_PATH,
    PENDING_PATH,
    TRASH_DIR,
    ShardName,
    data_files,
    is_manifest_path,
)

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 100_000_000
"""Upper bound on a shard's uncompressed Arrow size; compressed files are far smaller."""
ROW_GROUP_ROWS = 50_000


@dataclass(frozen=True)
class FileEntry:
    """One manifest line."""

    path: str
    rows: int
    bytes: int
    sha256: str


def regular_file(path: Path) -> Path:
    """``path`` itself, after checking it is a regular file and not a link (nothing else is opened).

    A FIFO would block a reader forever, a device never ends, and a link can point outside the
    dataset, so a dataset file that is any of these is refused before it is opened.

    Raises:
        ShardError: ``path`` is a FIFO, socket, device, directory or symbolic link.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path  # the caller's open reports the missing file
    if not stat.S_ISREG(mode):
        kind = "symbolic link" if stat.S_ISLNK(mode) else "FIFO, socket, device or directory"
        raise ShardError(
            f"{path}: is a {kind}, not a regular file, so it was not opened; replace it with the real file "
            "(re-download or re-collect the dataset)"
        )
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with regular_file(path).open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename (the parent is created):
    a reader sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` (indented, keys sorted) as ``write_text_atomic`` does."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_file(table: pa.Table, tmp: Path, rel_path: str) -> FileEntry:
    """Write ``table`` to ``tmp`` (zstd, page checksums), fsync it, and describe it as ``rel_path``."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        write_page_checksum=True,
        write_statistics=True,
    )
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    return FileEntry(rel_path, table.num_rows, tmp.stat().st_size, sha256_file(tmp))


def write_shard(root: Path, rel_path: str, table: pa.Table) -> FileEntry:
    """Write ``table`` to ``root/rel_path`` atomically (temporary name, then rename) and describe it.

    This does not touch the manifest; dataset writers use ``Commit`` instead.
    """
    path = root / rel_path
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    entry = _write_file(table, tmp, rel_path)
    os.replace(tmp, path)
    return entry


class Commit:
    """Several shard writes and the manifest update as one step that survives a kill.

    ``write`` puts each table under a hidden ``.pending`` name; ``apply`` then writes the
    journal ``meta/pending.json`` (the commit point), renames every file into place and saves
    the manifest. A writer killed after the journal is written is rolled forward by the next
    ``DatasetLock``; one killed before it leaves the dataset exactly as it was.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.entries: list[FileEntry] = []

    def write(self, rel_path: str, table: pa.Table) -> FileEntry:
        entry = _write_file(table, _pending_name(self.root / rel_path), rel_path)
        self.entries.append(entry)
        return entry

    def write_bytes(self, rel_path: str, data: bytes) -> FileEntry:
        """Stage a plain file (the card, a plot) like a shard: it joins the same commit."""
        staged = _pending_name(self.root / rel_path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        entry = FileEntry(rel_path, 0, len(data), hashlib.sha256(data).hexdigest())
        self.entries.append(entry)
        return entry

    def adopt(self, src: Path, entry: FileEntry) -> None:
        """Stage the finished file ``src`` (moved, same filesystem) as ``entry``; ``apply`` checks its sha256."""
        staged = _pending_name(self.root / entry.path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, staged)
        self.entries.append(entry)

    def apply(self, token: str) -> None:
        """Journal, rename and save the manifest; ``token`` is the holder's ``DatasetLock.token``."""
        if not self.entries:
            return
        write_json_atomic(self.root / PENDING_PATH, {"files": [asdict(e) for e in self.entries], "token": token})
        roll_forward(self.root, self.manifest, token)
        self.entries = []


def _pending_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.pending")


def _journal_problem(root: Path, raw: Any, token: str) -> str | None:
    """Why the journal ``raw`` must not be applied, or None when every staged file checks out."""
    if not isinstance(raw, dict) or not isinstance(raw.get("files"), list):
        return "it is not a journal of this package"
    if not token or raw.get("token") != token:
        return "no writer of this dataset wrote it (its token does not match the last writer's lock)"
    for item in raw["files"]:
        try:
            entry = FileEntry(**item)
        except TypeError:
            return f"entry {item!r} is malformed"
        if not (_well_typed(entry) and is_manifest_path(entry.path)):
            return f"entry {entry.path!r} is not a dataset file path"
        staged, target = _pending_name(root / entry.path), root / entry.path
        done = staged if staged.exists() else target
        if not done.exists() or sha256_file(done) != entry.sha256:
            return f"the staged content of {entry.path} does not have the journaled sha256"
    return None


def roll_forward(root: Path, manifest: Manifest, token: str) -> None:
    """Finish the commit journaled in ``meta/pending.json``, if any (idempotent).

    The journal is applied only when the writer that wrote it held the lock last (``token``)
    and every staged file has the journaled path and sha256; otherwise nothing is renamed, the
    journal is moved to ``.trash/`` with a warning, and ``DatasetLock`` removes its staged files.
    """
    journal = root / PENDING_PATH
    if not journal.exists():
        return
    problem: str | None
    try:
        raw = json.loads(regular_file(journal).read_text())
    except (OSError, ValueError, ShardError) as exc:
        raw, problem = None, f"it is unreadable ({exc})"
    else:
        problem = _journal_problem(root, raw, token)
    if problem is not None:
        _set_aside_journal(root, problem)
        return
    for item in raw["files"]:
        entry = FileEntry(**item)
        staged = _pending_name(root / entry.path)
        if staged.exists():
            os.replace(staged, root / entry.path)
        manifest.files[entry.path] = entry
    manifest.save(root)
    journal.unlink()


def _set_aside_journal(root: Path, problem: str) -> None:
    dest = root / TRASH_DIR / f"journal-{int(time.time())}"
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(root / PENDING_PATH, dest / "pending.json")
    log.warning("did not apply %s: %s; moved it to %s (the committed dataset is unchanged)",
                PENDING_PATH, problem, dest)  # fmt: skip


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard, verifying every page checksum.

    Raises:
        ShardError: the file is truncated, corrupt, or not Parquet; the message names the file.
    """
    try:
        return pq.ParquetFile(regular_file(path), page_checksum_verification=True).read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(
            f"{path}: unreadable or corrupt Parquet ({exc}); re-download or re-collect this shard "
            "(`llmca validate` lists every damaged file)"
        ) from exc


def _well_typed(entry: FileEntry) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (entry.rows, entry.bytes))
    return ints and isinstance(entry.path, str) and isinstance(entry.sha256, str)


class Manifest:
    """The set of committed data files of a dataset directory."""

    def __init__(self, files: dict[str, FileEntry] | None = None) -> None:
        self.files: dict[str, FileEntry] = dict(files or {})

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = root / MANIFEST_PATH
        if not path.exists():
            return cls()
        try:
            raw = json.loads(regular_file(path).read_text())
            files = {f["path"]: FileEntry(**f) for f in raw["files"]}
            bad = [e for e in files.values() if not _well_typed(e)]
            if bad:
                raise ValueError(f"entry {asdict(bad[0])} needs a str path and sha256, and int rows and bytes")
            outside = [p for p in files if not is_manifest_path(p)]
            if outside:
                raise ValueError(
                    f"entry {outside[0]!r} is not a dataset file path (only data/<env>/<kind>/<tier>-NNNNN.parquet, "
                    "README.md and meta/return_hist_<env>.png may be listed; never absolute, '..' or hidden paths)"
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MetadataError(f"{path}: malformed manifest ({exc}); restore it from the Hub or re-collect") from exc
        return cls(files)

    def save(self, root: Path) -> None:
        body = {
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": [asdict(self.files[p]) for p in sorted(self.files)],
        }
        write_json_atomic(root / MANIFEST_PATH, body)

    def shards(self, env_id: str | None = None, kind: str | None = None, tier: str | None = None) -> list[ShardName]:
        """Committed shards, filtered, in (env, kind, tier, index) order."""
        names = [n for n in map(ShardName.parse, self.files) if n is not None]
        return sorted(
            n
            for n in names
            if (env_id is None or n.env_id == env_id)
            and (kind is None or n.kind == kind)
            and (tier is None or n.tier == tier)
        )

    def next_index(self, env_id: str, kind: str, tier: str) -> int:
        names = self.shards(env_id, kind, tier)
        return names[-1].index + 1 if names else 0


def lock_holder(content: bytes) -> str:
    """The pid recorded in a lock file's ``content`` (digits only), or ``"unknown"``."""
    words = content.decode(errors="replace").split()
    return words[0] if words and words[0].isdigit() else "unknown"


class DatasetLock:
    """Exclusive writer lock on a dataset directory (``fcntl.flock``; released if the process dies).

    Entering also clears what an interrupted writer left behind: temporary files are removed,
    and shards that no manifest commit references are moved to ``.trash/`` (never deleted:
    their content is normally still in ``.staging``, but a hand-edited directory loses nothing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(16)
        """This holder's random token: the lock file holds ``<pid> <token>`` and every journal it
        writes carries it, so recovery applies only journals written by the last holder."""
        self._fd: int | None = None

    def __enter__(self) -> DatasetLock:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(os.pread(fd, 128, 0))
            os.close(fd)
            raise DatasetLockedError(
                f"{self.root} is being written by another process (pid {holder}); wait for it to finish "
                "or stop it — the lock is released automatically when that process exits"
            ) from None
        previous = os.pread(fd, 128, 0).decode(errors="replace").split()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.token}".encode(), 0)
        self._fd = fd
        self._recover(previous[1] if len(previous) == 2 else "")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _recover(self, last_token: str) -> None:
        manifest = Manifest.load(self.root)
        if (self.root / PENDING_PATH).exists():
            log.warning("finishing a commit that an interrupted writer journaled in %s", PENDING_PATH)
            roll_forward(self.root, manifest, last_token)
        for rel in data_files(self.root):
            name = Path(rel).name
            if name.startswith(".") and (".tmp-" in name or name.endswith(".pending")):
                (self.root / rel).unlink()
                log.warning("removed temporary file %s left by an interrupted writer", rel)
            elif ShardName.parse(rel) is not None and rel not in manifest.files:
                dest = self.root / TRASH_DIR / f"{int(time.time())}" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.root / rel, dest)
                log.warning("moved shard %s, which no manifest references, to %s", rel, dest)
