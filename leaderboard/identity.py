"""Dataset identities: compute one for a dataset, and check a submission's against the Hub or a dataset.

Input: a local dataset directory or a Hub dataset repo id (and revision). Output: a
``DatasetIdentity`` — ``{"kind": "local", "manifest_sha256"}`` (the sha256 of
``meta/manifest.json``, which lists the sha256 of every data file, so it pins every byte) or
``{"kind": "hub", "repo_id", "commit"}`` (the revision resolved to a commit sha) — and the
problems found when a claimed identity does not exist or does not match.

Hub calls go to ``HF_ENDPOINT`` read at each call (tests point it at a local server).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from llmca_data.errors import LlmcaError
from llmca_data.extras import install_hint
from llmca_data.layout import MANIFEST_PATH, is_repo_id

from .submission import SUBMISSION_FILE, DatasetIdentity, Problem

HUB_FIX = "give the commit sha of the exact revision you trained on (HfApi().dataset_info(repo).sha)"


class IdentityError(LlmcaError, ValueError):
    """A dataset whose identity cannot be computed: no manifest, or no such Hub repo or revision."""


def _hub_sha(repo_id: str, revision: str) -> str:
    """The commit sha of ``repo_id`` at ``revision`` on the Hub at ``HF_ENDPOINT``; IdentityError when absent."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError as exc:
        raise IdentityError(f"checking a Hub dataset needs huggingface_hub: {install_hint('hub')}") from exc
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
    try:
        sha = api.dataset_info(repo_id, revision=revision).sha
    except RevisionNotFoundError as exc:
        raise IdentityError(f"{repo_id} has no revision {revision!r} on {api.endpoint}") from exc
    except RepositoryNotFoundError as exc:
        raise IdentityError(f"dataset repo {repo_id} not found on {api.endpoint}") from exc
    except HfHubHTTPError as exc:
        raise IdentityError(f"the Hub at {api.endpoint} refused {repo_id}@{revision}: {exc}") from exc
    if not sha:
        raise IdentityError(f"the Hub at {api.endpoint} returned no commit sha for {repo_id}@{revision}")
    return sha


def dataset_identity(path_or_repo: str | Path, revision: str | None = None) -> DatasetIdentity:
    """The identity of a local dataset directory, or of a Hub dataset repo at ``revision`` (default ``main``).

    Raises:
        IdentityError: a local directory without ``meta/manifest.json``, or a Hub repo/revision
            that does not exist.
    """
    path = Path(path_or_repo)
    if not path.is_dir() and not is_repo_id(str(path_or_repo)):
        raise IdentityError(
            f"no dataset directory at {path_or_repo}: give the dataset's directory or its Hub repo id "
            "(e.g. llmca/annotated)"
        )
    if path.is_dir():
        manifest = path / MANIFEST_PATH
        if not manifest.is_file():
            raise IdentityError(f"{path} has no {MANIFEST_PATH}: is it a dataset directory (`llmca validate` it)?")
        return DatasetIdentity("local", manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest())
    return DatasetIdentity("hub", repo_id=str(path_or_repo), commit=_hub_sha(str(path_or_repo), revision or "main"))


def check_identity(claimed: DatasetIdentity, expected: DatasetIdentity | None) -> list[Problem]:
    """Problems with a submission's ``claimed`` identity.

    A Hub identity must exist on the Hub (its commit resolves to itself); with ``expected``
    (the leaderboard's dataset) the identities must be equal. A local identity can only be
    checked against an ``expected`` one.
    """
    where = f"{SUBMISSION_FILE} dataset"
    problems: list[Problem] = []
    if claimed.kind == "hub":
        assert claimed.repo_id is not None and claimed.commit is not None
        try:
            if (sha := _hub_sha(claimed.repo_id, claimed.commit)) != claimed.commit:
                problems.append(Problem(where, f"revision {claimed.commit} resolves to {sha}", HUB_FIX))
        except IdentityError as exc:
            problems.append(Problem(where, str(exc), HUB_FIX))
    elif expected is None:
        fix = "pass the dataset it was trained on (--dataset DIR), or train on a published Hub revision"
        problems.append(Problem(where, "a local dataset identity cannot be checked without the dataset", fix))
    if expected is not None and expected != claimed:
        problems.append(Problem(where, f"claims {claimed}, but the leaderboard dataset is {expected}",
                                "train and submit on the leaderboard's dataset, and copy its identity"))  # fmt: skip
    return problems
