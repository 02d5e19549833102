"""Publish a dataset directory to the Hugging Face Hub (``download.py`` brings a verified copy back).

Input: a local dataset directory. Output: one atomic Hub commit, tagged
``schema-v<SCHEMA_VERSION>`` on ``main``; the Hub helpers (client, endpoint, error mapping)
that ``download.py`` shares.

What is published: every file listed in ``meta/manifest.json``, the manifest itself,
``meta/info.json`` and ``README.md`` when present; never the writer lock, ``.staging/``,
``.trash/``, the commit journal or temporary files. Remote files under ``data/`` and
``meta/`` that are no longer local are deleted in the same commit; every other remote
file (``.gitattributes``, a hand-written extra) is left alone, and so is a remote
``README.md`` when there is no local one.

How ``publish`` decides what changed, without downloading anything: it reads the branch
head sha, then lists the tree *at that sha* (so the diff and the ``parent_commit`` describe
the same snapshot). The Hub exposes a content hash for every file: LFS/Xet files carry the
sha256 of their content (compared with the manifest's sha256, which ``validate`` has just
checked against the bytes on disk); regular files carry their git blob id, the sha1 of
``"blob <size>\\0" + content`` (compared with the same hash of the local file). Both are
exact, so equal hashes mean equal bytes and an unchanged dataset makes no commit.

The commit names that head as ``parent_commit``; if someone else committed in between,
the Hub refuses it (HTTP 412) and :class:`PublishConflictError` asks to re-run, which
recomputes the diff against the new head. After a commit to ``main`` the tag
``schema-v<N>`` is moved to it (deleted and re-created), so ``revision="schema-v1"``
always names the newest data readable by a package that reads schema 1; pin a commit sha
for exact reproducibility.

Endpoint and token: ``huggingface_hub`` reads ``HF_ENDPOINT`` once, when it is first
imported, so set it in the environment before a process imports ``huggingface_hub`` or
``datasets`` (tests point it at a local server). This module also reads it at each call and
passes it on explicitly, so ``publish`` and ``download`` follow it even when it was set
later. The token is the ``token`` argument, else ``HF_TOKEN``, else the token saved by
``hf auth login``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.errors import LlmcaError
from llmca_data.extras import install_hint
from llmca_data.layout import CARD_PATH, INFO_PATH, MANIFEST_PATH
from llmca_data.shards import Manifest, sha256_file
from llmca_data.validate import validate

if TYPE_CHECKING:
    from huggingface_hub import HfApi, RepoFile

MANAGED_PREFIXES = ("data/", "meta/")
"""Remote files under these folders belong to the dataset: publish deletes those no longer local."""
INSTALL_HINT = install_hint("hub")
DEFAULT_BRANCH = "main"


class HubError(LlmcaError, RuntimeError):
    """A Hub operation failed; the message says what to do."""


class HubDependencyError(HubError, ImportError):
    """``huggingface_hub`` is not installed."""


class PublishRefusedError(HubError):
    """The local dataset does not validate, so it is not published."""


class PublishConflictError(HubError):
    """The remote branch moved between reading its head and committing."""


class DownloadVerifyError(HubError, ValueError):
    """A downloaded file does not match ``meta/manifest.json``, or there is no manifest."""


@dataclass(frozen=True)
class FileChange:
    """One file of a publish: its repo path and size (local size; remote size for a deletion)."""

    path: str
    bytes: int


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` did (or, with ``dry_run``, would do)."""

    repo_id: str
    revision: str
    commit_sha: str | None
    """The new commit; the unchanged head when nothing changed; None for a dry run."""
    parent_sha: str | None
    """The remote head the diff was computed against (None: repo or branch does not exist yet)."""
    added: list[FileChange] = field(default_factory=list)
    changed: list[FileChange] = field(default_factory=list)
    deleted: list[FileChange] = field(default_factory=list)
    dry_run: bool = False
    tag: str | None = None
    """The tag set (or, dry run, to be set) on the commit; None when not publishing to main."""

    @property
    def committed(self) -> bool:
        return not self.dry_run and bool(self.added or self.changed or self.deleted)

    @property
    def upload_bytes(self) -> int:
        return sum(f.bytes for f in self.added + self.changed)


@dataclass(frozen=True)
class _Remote:
    head: str | None
    files: Mapping[str, RepoFile]
    """path → file entry at ``head``."""


def hf_api(token: str | None) -> HfApi:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise HubDependencyError(f"publishing and downloading need huggingface_hub: {INSTALL_HINT}") from exc
    return HfApi(endpoint=endpoint(), token=token if token is not None else (os.environ.get("HF_TOKEN") or None))


_NETWORK_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")


@contextmanager
def hub_errors(api: HfApi, repo_id: str) -> Iterator[None]:
    """Run Hub calls for ``repo_id``; a bad repo id, an unreachable endpoint or an HTTP error
    becomes a ``HubError`` that names the endpoint and the fix (the specific errors callers
    handle, such as a missing repo, pass through)."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except HFValidationError as exc:
        raise HubError(f"{repo_id!r} is not a Hub repo id ({exc}); use namespace/name, e.g. llmca/annotated") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except HfHubHTTPError as exc:
        raise HubError(f"the Hub at {api.endpoint} refused a request for {repo_id}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _NETWORK_MODULES:
            raise HubError(
                f"cannot reach the Hub at {api.endpoint} ({type(exc).__name__}: {exc}); check HF_ENDPOINT, "
                "your network and proxy settings, then run the command again"
            ) from None
        raise


def endpoint() -> str | None:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it only once, at import), else its default."""
    return os.environ.get("HF_ENDPOINT") or None


def schema_tag() -> str:
    return f"schema-v{SCHEMA_VERSION}"


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file, which the Hub reports as a regular file's ``oid``."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def local_files(root: Path) -> dict[str, str | None]:
    """The files to publish: path → sha256 known from the (validated) manifest, else None."""
    files: dict[str, str | None] = {p: e.sha256 for p, e in Manifest.load(root).files.items()}
    for extra in (MANIFEST_PATH, INFO_PATH, CARD_PATH):
        if (root / extra).is_file():
            files.setdefault(extra, None)
    return files


def _read_remote(api: HfApi, repo_id: str, revision: str) -> _Remote:
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return _Remote(None, {})
    tree = api.list_repo_tree(repo_id, recursive=True, revision=head, repo_type="dataset")
    return _Remote(head, {f.path: f for f in tree if isinstance(f, RepoFile)})


def _same(root: Path, path: str, sha256: str | None, remote: RepoFile) -> bool:
    """Whether the local file has exactly the remote file's content (see the module docstring)."""
    local = root / path
    if remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == (sha256 or sha256_file(local))
    return remote.blob_id == git_blob_sha1(local)


def _diff(root: Path, local: dict[str, str | None], remote: _Remote) -> tuple[list[FileChange], ...]:
    added, changed, deleted = [], [], []
    for path, sha256 in sorted(local.items()):
        size = (root / path).stat().st_size
        if path not in remote.files:
            added.append(FileChange(path, size))
        elif not _same(root, path, sha256, remote.files[path]):
            changed.append(FileChange(path, size))
    for path, entry in sorted(remote.files.items()):
        if path not in local and path.startswith(MANAGED_PREFIXES):
            deleted.append(FileChange(path, entry.size))
    return added, changed, deleted


def publish(
    root: Path | str,
    repo_id: str,
    *,
    revision: str = DEFAULT_BRANCH,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    message: str | None = None,
) -> PublishResult:
    """Publish the dataset at ``root`` to the Hub dataset repo ``repo_id`` as one atomic commit.

    Args:
        root: A dataset directory; it must pass ``validate``.
        repo_id: ``"namespace/name"``; created (as a dataset repo) when missing.
        revision: The branch to commit to; created from ``main`` when missing.
        private: Visibility of a newly created repo (an existing repo keeps its own).
        dry_run: Only compute and return what would change; make no write call at all.
        token: Hub token; defaults to ``HF_TOKEN``, then the saved login.
        message: Commit message; a summary of the change by default.

    Returns:
        The files added, changed and deleted (with bytes), and the commit made, if any.

    Raises:
        PublishRefusedError: ``validate`` found problems (all listed).
        PublishConflictError: the branch moved while publishing; re-run to publish on top.
        HubDependencyError: huggingface_hub is not installed.
    """
    root = Path(root)
    report = validate(root)
    if not report.ok:
        listed = "\n".join(f"  {p}" for p in report.problems[:50])
        more = f"\n  ... and {len(report.problems) - 50} more" if len(report.problems) > 50 else ""
        raise PublishRefusedError(
            f"{root} does not validate, so it was not published ({len(report.problems)} problem(s)):\n"
            f"{listed}{more}\nFix them (`llmca validate {root}` shows the same list) and publish again."
        )
    api = hf_api(token)
    local = local_files(root)
    with hub_errors(api, repo_id):
        return _publish(api, root, local, repo_id, revision, private, dry_run, message)


def _publish(
    api: HfApi,
    root: Path,
    local: dict[str, str | None],
    repo_id: str,
    revision: str,
    private: bool,
    dry_run: bool,
    message: str | None,
) -> PublishResult:
    remote = _read_remote(api, repo_id, revision)
    missing = remote.head is None
    if missing and revision != DEFAULT_BRANCH:
        remote = _read_remote(api, repo_id, DEFAULT_BRANCH)  # a new branch starts from main
    added, changed, deleted = _diff(root, local, remote)
    tag = schema_tag() if revision == DEFAULT_BRANCH else None
    if dry_run:
        return PublishResult(repo_id, revision, None, remote.head, added, changed, deleted, True, tag)
    if missing:
        # Create the repo (the Hub gives it a first commit) or the branch, then diff against what is there now.
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        if revision != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        remote = _read_remote(api, repo_id, revision)
        added, changed, deleted = _diff(root, local, remote)
    if remote.head is None:
        raise HubError(f"{repo_id}@{revision} still has no commit after creating it; try again")
    sha = remote.head
    if added or changed or deleted:
        sha = _commit(api, root, repo_id, revision, remote.head, added + changed, deleted, message)
    _move_tag(api, repo_id, tag, sha)
    return PublishResult(repo_id, revision, sha, remote.head, added, changed, deleted, False, tag)


def _commit(
    api: HfApi,
    root: Path,
    repo_id: str,
    revision: str,
    parent: str | None,
    uploads: list[FileChange],
    deletions: list[FileChange],
    message: str | None,
) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    ops: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(root / f.path)) for f in uploads
    ]
    ops += [CommitOperationDelete(path_in_repo=f.path) for f in deletions]
    summary = message or (
        f"llmca publish: {len(uploads)} file(s) uploaded, {len(deletions)} deleted "
        f"(schema v{SCHEMA_VERSION}, llmca-data {__version__})"
    )
    try:
        info = api.create_commit(
            repo_id, ops, commit_message=summary, repo_type="dataset", revision=revision, parent_commit=parent
        )
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code in (409, 412):
            raise PublishConflictError(
                f"{repo_id}@{revision} changed while publishing (it is no longer at {parent}); nothing was "
                f"committed. Re-run the publish: it compares with the new head and commits on top of it. "
                f"(Hub said: {exc})"
            ) from exc
        raise
    return str(info.oid)


def _move_tag(api: HfApi, repo_id: str, tag: str | None, sha: str) -> None:
    """Point ``tag`` at ``sha`` (no call beyond one read when it already does)."""
    if tag is None:
        return
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    current = next((t.target_commit for t in refs.tags if t.name == tag), None)
    if current == sha:
        return
    if current is not None:
        api.delete_tag(repo_id, tag=tag, repo_type="dataset")
    api.create_tag(repo_id, tag=tag, revision=sha, repo_type="dataset", tag_message=f"llmca schema {SCHEMA_VERSION}")
