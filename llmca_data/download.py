"""Download a verified copy of a Hub dataset repo, or bring an earlier download up to date.

Input: a Hub dataset repo id, a revision and a destination folder. Output: the folder holding
exactly the files ``meta/manifest.json`` lists at that commit (every one checked for size and
sha256), ``meta/info.json``, and ``meta/source.json`` recording where it came from.

Only manifest files are fetched, into ``.staging/download-<sha>/`` under the destination; a repo
file the manifest does not list (a journal, a hidden ``.pending`` shard, a hand-written extra)
is never downloaded, and a manifest that names a path outside the dataset layout (absolute,
``..``, hidden) is refused before anything is fetched. Verified files enter the dataset through
the writer's journal (``shards.Commit``), so a kill at any point leaves either the previous
dataset or the new one, and a rerun finishes the install.

A destination that is not empty must hold an earlier download of the same repo, unchanged
since (its manifest is the one recorded in ``meta/source.json``), at the requested commit or
an ancestor of it; anything else is refused, so a download never overwrites a user's dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmca_data.errors import LlmcaError
from llmca_data.hub import DEFAULT_BRANCH, DownloadVerifyError, HubError, endpoint, hf_api, hub_errors
from llmca_data.layout import INFO_PATH, LOCK_NAME, MANIFEST_PATH, SOURCE_PATH, STAGING_DIR, TRASH_DIR
from llmca_data.shards import Commit, DatasetLock, Manifest, regular_file, sha256_file, write_json_atomic

if TYPE_CHECKING:
    from huggingface_hub import HfApi

IGNORED_REPO_FILES = (".gitattributes",)
"""Repo files that are expected besides the dataset and are not reported as ignored."""


class DownloadTargetError(HubError, ValueError):
    """The destination folder holds something a download must not overwrite."""


@dataclass(frozen=True)
class DownloadResult:
    """A verified download: the commit it came from and every manifest file checked."""

    repo_id: str
    revision: str
    commit_sha: str
    path: Path
    files: list[str]
    bytes: int
    previous_sha: str | None = None
    """The commit the folder held before (an update), or None (a fresh download)."""
    fetched: int = 0
    """Files downloaded by this call (an update fetches only what changed)."""
    ignored: list[str] = field(default_factory=list)
    """Repo files not in the manifest, which were not downloaded."""


def download(
    repo_id: str, out: Path | str, *, revision: str = DEFAULT_BRANCH, token: str | None = None
) -> DownloadResult:
    """Download ``repo_id`` at one commit into ``out`` (see the module docstring).

    Raises:
        DownloadVerifyError: the revision has no manifest, its manifest is malformed or names a
            path outside the layout, or a file's size or sha256 differs from it.
        DownloadTargetError: ``out`` is not empty and does not hold an unchanged earlier download
            of ``repo_id`` at this commit or an ancestor of it.
        HubError: the repo or revision does not exist, or the Hub cannot be reached.
    """
    api = hf_api(token)
    out = Path(out)
    sha = _resolve(api, repo_id, revision)
    source = _check_target(api, repo_id, sha, out)
    installing = source is not None and source.get("state") == "installing"
    before = None if source is None else source.get("previous_sha" if installing else "commit_sha")
    if source is not None and not installing and before == sha:
        manifest = Manifest.load(out)
        return DownloadResult(repo_id, revision, sha, out, sorted(manifest.files), _size(manifest), previous_sha=sha)
    stage = out / STAGING_DIR / f"download-{sha[:12]}"
    manifest, ignored = _fetch_manifest(api, repo_id, sha, stage)
    old = Manifest.load(out) if (out / MANIFEST_PATH).is_file() else Manifest()
    wanted = [p for p, e in sorted(manifest.files.items()) if old.files.get(p) != e or not (out / p).is_file()]
    have_info = _fetch(api, repo_id, sha, stage, [*wanted, INFO_PATH])
    _verify(repo_id, sha, stage, manifest, wanted)
    _install(out, stage, {"repo_id": repo_id, "endpoint": endpoint(), "commit_sha": sha}, before, manifest, old,
             wanted, have_info)  # fmt: skip
    shutil.rmtree(stage, ignore_errors=True)
    return DownloadResult(
        repo_id, revision, sha, out, sorted(manifest.files), _size(manifest), before, len(wanted), ignored
    )


def _size(manifest: Manifest) -> int:
    return sum(e.bytes for e in manifest.files.values())


def _resolve(api: HfApi, repo_id: str, revision: str) -> str:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        with hub_errors(api, repo_id):
            sha = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no revision {revision!r}; check the branch, tag or sha") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"dataset repo {repo_id} not found at {api.endpoint}; check the id, or set HF_TOKEN if it is private"
        ) from exc
    if sha is None:
        raise HubError(f"the Hub returned no commit sha for {repo_id}@{revision}; try again")
    return sha


def _read_source(out: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(regular_file(out / SOURCE_PATH).read_text())
    except (OSError, ValueError, LlmcaError) as exc:
        raise DownloadTargetError(f"{out / SOURCE_PATH} is unreadable ({exc}); download into a new folder") from exc
    return raw if isinstance(raw, dict) else None


def _check_target(api: HfApi, repo_id: str, sha: str, out: Path) -> dict[str, Any] | None:
    """The source record of the earlier download in ``out``, or None when ``out`` is empty."""
    if out.exists() and not out.is_dir():
        raise DownloadTargetError(f"{out} is a file, not a folder; choose a new folder for the download")
    if not out.exists() or not [p for p in out.iterdir() if p.name not in (STAGING_DIR, LOCK_NAME)]:
        return None
    fix = "download into an empty or new folder (or remove this one)"
    if not (out / SOURCE_PATH).exists():
        raise DownloadTargetError(f"{out} is not empty and holds no download (no {SOURCE_PATH}); {fix}")
    source = _read_source(out)
    if source is None or source.get("repo_id") != repo_id:
        held = source.get("repo_id") if source else "unknown"
        raise DownloadTargetError(f"{out} holds a download of {held!r}, not of {repo_id}; {fix}")
    if source.get("state") == "installing":
        return source  # an interrupted install of this repo: finish it
    manifest = out / MANIFEST_PATH
    digest = sha256_file(manifest) if manifest.is_file() else None
    if digest != source.get("manifest_sha256"):
        raise DownloadTargetError(
            f"{out} has changed since it was downloaded from {repo_id}@{source.get('commit_sha')} (its manifest "
            f"differs), so updating it would lose local work; {fix}"
        )
    held_sha = source.get("commit_sha")
    if held_sha != sha:
        with hub_errors(api, repo_id):
            history = {c.commit_id for c in api.list_repo_commits(repo_id, repo_type="dataset", revision=sha)}
        if held_sha not in history:
            raise DownloadTargetError(
                f"{out} holds {repo_id}@{held_sha}, which is not an ancestor of {sha} (a newer or unrelated "
                f"revision); {fix}"
            )
    return source


def _fetch(api: HfApi, repo_id: str, sha: str, stage: Path, paths: list[str]) -> bool:
    """Download exactly ``paths`` (those the repo has) into ``stage``; whether ``meta/info.json`` came."""
    from huggingface_hub import snapshot_download

    with hub_errors(api, repo_id):
        snapshot_download(repo_id, repo_type="dataset", revision=sha, local_dir=stage, token=api.token,
                          endpoint=endpoint(), allow_patterns=paths)  # fmt: skip
    return (stage / INFO_PATH).is_file()


def _fetch_manifest(api: HfApi, repo_id: str, sha: str, stage: Path) -> tuple[Manifest, list[str]]:
    """The repo's manifest at ``sha`` (paths checked) and the repo files it does not list."""
    from huggingface_hub import RepoFile

    with hub_errors(api, repo_id):
        listing = api.list_repo_tree(repo_id, recursive=True, revision=sha, repo_type="dataset")
        tree = [f.path for f in listing if isinstance(f, RepoFile)]
    if MANIFEST_PATH not in tree:
        raise DownloadVerifyError(
            f"{repo_id}@{sha} has no {MANIFEST_PATH}, so nothing can be verified; this is not an llmca "
            "dataset or it was published incompletely (publish it again with `llmca publish`)"
        )
    _fetch(api, repo_id, sha, stage, [MANIFEST_PATH])
    try:
        manifest = Manifest.load(stage)
    except LlmcaError as exc:
        raise DownloadVerifyError(f"{repo_id}@{sha}: {exc}; nothing else was downloaded") from exc
    expected = {*manifest.files, MANIFEST_PATH, INFO_PATH, *IGNORED_REPO_FILES}
    return manifest, sorted(p for p in tree if p not in expected)


def _verify(repo_id: str, sha: str, stage: Path, manifest: Manifest, wanted: list[str]) -> None:
    bad: list[str] = []
    for path in wanted:
        entry, local = manifest.files[path], stage / path
        if not local.is_file() or local.is_symlink():
            bad.append(f"{path}: listed in the manifest but not in the repo")
        elif (size := local.stat().st_size) != entry.bytes:
            bad.append(f"{path}: {size} bytes, manifest says {entry.bytes}")
        elif (digest := sha256_file(local)) != entry.sha256:
            bad.append(f"{path}: sha256 {digest}, manifest says {entry.sha256}")
    if bad:
        raise DownloadVerifyError(
            f"{len(bad)} file(s) of {repo_id}@{sha} do not match {MANIFEST_PATH}; nothing was installed:\n"
            + "\n".join(f"  {b}" for b in bad)
            + "\nDownload again; if it persists, the published copy is damaged: re-publish it from a valid dataset."
        )


def _install(
    out: Path,
    stage: Path,
    source: dict[str, Any],
    before: str | None,
    manifest: Manifest,
    old: Manifest,
    wanted: list[str],
    have_info: bool,
) -> None:
    """Move the verified files in through one journaled commit, ``meta/source.json`` first and last."""
    with DatasetLock(out) as lock:
        write_json_atomic(out / SOURCE_PATH, {**source, "state": "installing", "previous_sha": before})
        commit = Commit(out, Manifest(dict(manifest.files)))
        for path in wanted:
            commit.adopt(stage / path, manifest.files[path])
        commit.apply(lock.token)
        os.replace(stage / MANIFEST_PATH, out / MANIFEST_PATH)  # the same entries, byte for byte as published
        if have_info:
            os.replace(stage / INFO_PATH, out / INFO_PATH)
        gone = [p for p in old.files if p not in manifest.files and (out / p).is_file()]
        for path in gone:
            dest = out / TRASH_DIR / f"{int(time.time())}" / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / path, dest)
        digest = sha256_file(out / MANIFEST_PATH)
        write_json_atomic(out / SOURCE_PATH, {**source, "state": "complete", "previous_sha": before,
                                              "manifest_sha256": digest})  # fmt: skip
