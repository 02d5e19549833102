"""Where everything lives in a dataset directory (DESIGN.md §6, CONTRACT).

```
README.md                                       rendered dataset card (``llmca build``)
meta/info.json                                  schema_version, versions, envs, tiers, reference returns, statistics
meta/return_hist_<env_id>.png                   return histogram per env (``llmca build``)
meta/manifest.json                              every data file: path, rows, bytes, sha256 (written last)
meta/pending.json                               journal of a commit in progress (absent when idle)
meta/source.json                                repo, commit and manifest of a download (``llmca download``)
data/<env_id>/steps/<tier>-00000.parquet        one row per (episode, t), sorted
data/<env_id>/episodes/<tier>-00000.parquet     one row per episode
data/<env_id>/annotations/<tier>-00000.parquet  one row per (episode, critic)
.llmca.lock                                     writer lock (not part of the dataset)
.staging/                                       finished-but-uncommitted work of a killed writer
.trash/                                         shards no manifest referenced, moved aside on recovery
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

INFO_PATH = "meta/info.json"
MANIFEST_PATH = "meta/manifest.json"
PENDING_PATH = "meta/pending.json"
SOURCE_PATH = "meta/source.json"
LOCK_NAME = ".llmca.lock"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
KINDS: tuple[str, ...] = ("steps", "episodes", "annotations")
CARD_PATH = "README.md"
RETURN_HIST_PATH = "meta/return_hist_{env_id}.png"
"""Format with ``env_id``; like ``README.md`` it is listed in the manifest but is not a data file."""

_NAME = r"[a-z0-9][a-z0-9.-]{0,99}"
"""An env id as it appears in a path: lower-case letters, digits, dots and dashes, never ``.`` or ``..``."""
_BUILD_FILE = re.compile(rf"README\.md|meta/return_hist_{_NAME}\.png")
_SHARD = re.compile(
    rf"data/(?P<env>{_NAME})/(?P<kind>steps|episodes|annotations)/(?P<tier>[a-z]{{1,32}})-(?P<idx>\d{{5}})\.parquet"
)


@dataclass(frozen=True, order=True)
class ShardName:
    """A parsed shard path; ``str()`` gives the POSIX path relative to the dataset root."""

    env_id: str
    kind: str
    tier: str
    index: int

    def __str__(self) -> str:
        return f"data/{self.env_id}/{self.kind}/{self.tier}-{self.index:05d}.parquet"

    @classmethod
    def parse(cls, rel_path: str) -> ShardName | None:
        m = _SHARD.fullmatch(rel_path)
        if m is None:
            return None
        return cls(m["env"], m["kind"], m["tier"], int(m["idx"]))


def data_files(root: Path) -> list[str]:
    """Every file under ``root/data`` as sorted POSIX paths relative to ``root``."""
    data = root / "data"
    if not data.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in data.rglob("*") if p.is_file())


def is_build_file(rel_path: str) -> bool:
    """True for the files ``llmca build`` lists in the manifest outside ``data/`` (card, plots)."""
    return _BUILD_FILE.fullmatch(rel_path) is not None


def is_manifest_path(rel_path: object) -> bool:
    """True for the only paths a manifest or a commit journal may name: a shard or a build file.

    Everything else (absolute paths, ``..``, ``./x``, doubled slashes, hidden or journal files,
    ``meta/manifest.json`` itself) is refused, so no listed path can point outside ``data/``,
    ``README.md`` and ``meta/return_hist_*.png`` of the dataset it belongs to.
    """
    return isinstance(rel_path, str) and (ShardName.parse(rel_path) is not None or is_build_file(rel_path))


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_repo_id(text: str) -> bool:
    """True when ``text`` has the form of a Hub repo id (``namespace/name``), not of a longer path."""
    return _REPO_ID.fullmatch(text) is not None and ".." not in text and "--" not in text
