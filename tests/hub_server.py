"""A real HTTP server speaking enough of the Hugging Face Hub protocol for tests.

Input: requests from ``huggingface_hub`` 2.4 and ``datasets`` 5.2 (point them at
:attr:`HubServer.endpoint` through ``HF_ENDPOINT``). Output: in-memory git-like repos
(commits whose sha is the sha1 of their content, branches, tags), Hub-shaped JSON answers,
and a record of every request (method, path) so tests can count reads and writes.

Routes (``{t}`` is ``model``/``dataset``/``space``, ``{rev}`` and paths URL-quoted):
``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml``,
``POST /api/{t}s/{repo}/preupload/{rev}`` (``uploadMode: "regular"`` for every file, with the
remote ``oid`` so unchanged files are skipped), ``POST /api/{t}s/{repo}/commit/{rev}`` (NDJSON:
header with optional ``parentCommit`` → 412 when the branch moved; ``file`` base64,
``deletedFile``, ``deletedFolder``), ``GET /api/{t}s/{repo}[/revision/{rev}]`` (``sha``,
``siblings``), ``GET /api/{t}s/{repo}/tree/{rev}[/{path}]`` (``recursive``; 404 with
``X-Error-Code: EntryNotFound``), ``POST /api/{t}s/{repo}/paths-info/{rev}``,
``GET /api/{t}s/{repo}/refs``, ``GET /api/{t}s/{repo}/commits/{rev}`` (history, newest first),
``POST``/``DELETE`` ``/api/{t}s/{repo}/tag/...``,
``POST /api/{t}s/{repo}/branch/{name}``, ``HEAD``/``GET /[{t}s/]{repo}/resolve/{rev}/{path}``
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``Range``); ``GET /api/agent-harnesses``
and anything unknown answer 404 (unknown routes are also listed in :attr:`HubServer.unknown`).

Files whose names end with one of ``lfs_suffixes`` are *described* like LFS files (tree
entries carry ``lfs.oid`` = sha256, as the real Hub does for Parquet) although they travel
as regular base64 content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with content ``data`` (what the Hub calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev) or self.tags.get(rev) or rev
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str


class HubServer:
    """The Hub on 127.0.0.1 (port 0, daemon thread); use as a context manager."""

    def __init__(self, lfs_suffixes: tuple[str, ...] = (".parquet",)) -> None:
        self.lfs_suffixes = lfs_suffixes
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.unknown: list[Request] = []
        self.before_commit: Callable[[], object] | None = None
        """One-shot hook run when a commit request arrives, before its parent is checked."""
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # ---- test helpers -------------------------------------------------------------------

    def calls(self, method: str | None = None, pattern: str = "") -> list[Request]:
        """Recorded requests with this method (any when None) whose path matches ``pattern``."""
        with self.lock:
            return [r for r in self.requests if (method in (None, r.method)) and re.search(pattern, r.path)]

    def writes(self) -> list[Request]:
        """Every recorded request that could change state (POST/PUT/DELETE/PATCH, validate-yaml aside)."""
        return [r for r in self.calls() if r.method in WRITE_METHODS and not r.path.endswith("/validate-yaml")]

    def commit_requests(self) -> list[Request]:
        return self.calls("POST", r"^/api/\w+s/.+/commit/")

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        with self.lock:
            return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, branch: str = "main", repo_type: str = "dataset") -> Commit:
        repo = self.repo(repo_id, repo_type)
        with self.lock:
            return repo.commits[repo.branches[branch]]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        assert commit is not None, f"no revision {revision} in {repo_id}"
        return dict(commit.files)

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main", repo_type: str = "dataset") -> None:
        """Replace a stored file's bytes in place (same commit sha): simulated storage corruption."""
        with self.lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            assert commit is not None and path in commit.files, f"{path} not in {repo_id}@{revision}"
            commit.files[path] = data

    def push(
        self,
        repo_id: str,
        add: dict[str, bytes] | None = None,
        delete: tuple[str, ...] = (),
        branch: str = "main",
        message: str = "direct push",
        repo_type: str = "dataset",
    ) -> str:
        """Commit directly on the server (as another client would; creates the repo); returns the new sha."""
        with self.lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id, private=False))
            files = dict(repo.commits[repo.branches[branch]].files) if branch in repo.branches else {}
            files.update(add or {})
            for p in delete:
                files.pop(p, None)
            return self._commit(repo, branch, files, message)

    # ---- state changes (under self.lock) ----------------------------------------------

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> str:
        parent = repo.branches.get(branch)
        body = json.dumps(
            {"parent": parent, "message": message, "files": {p: git_blob_sha1(d) for p, d in sorted(files.items())}},
            sort_keys=True,
        )
        sha = hashlib.sha1(body.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, parent, message, dict(files))
        repo.branches[branch] = sha
        return sha

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def entry(self, path: str, data: bytes) -> dict[str, Any]:
        """A tree / paths-info entry for one file."""
        out: dict[str, Any] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if path.endswith(self.lfs_suffixes):
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
            out["oid"] = git_blob_sha1(pointer.encode())
            out["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": len(pointer)}
        return out


def _folders(paths: Iterator[str] | list[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined,no-any-return]

    def _on_request(self) -> None:
        self._dispatch(self.command)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = _on_request

    # ---- plumbing -------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, ctype: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        request = Request(method, unquote(url.path), url.query)
        hub = self.hub
        with hub.lock:
            hub.requests.append(request)
        body = self._body() if method in WRITE_METHODS else b""
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            for pattern, handler in _ROUTES:
                m = pattern.fullmatch(f"{method} {url.path}")
                if m is not None:
                    groups = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    handler(self, groups, query, body)
                    return
            with hub.lock:
                hub.unknown.append(request)
            raise HubError(404, f"no route for {method} {url.path}")
        except HubError as err:
            self._error(err)

    # ---- routes ---------------------------------------------------------------------------

    def create_repo(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        req = json.loads(body)
        repo_type = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.endpoint}/{prefix}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._send(409, json.dumps({"error": "You already created this repo", "url": url}).encode())
                return
            repo = Repo(repo_type, repo_id, req.get("visibility") == "private" or bool(req.get("private")))
            self.hub.repos[(repo_type, repo_id)] = repo
            self.hub._commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        self._json({"warnings": []})

    def preupload(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            commit = repo.resolve(g["rev"])
            existing = commit.files if commit else {}
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None,
                }
                for f in json.loads(body)["files"]
            ]
        self._json({"files": files, "commitOid": commit.sha if commit else None})

    def commit(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        hub, branch = self.hub, g["rev"]
        hook, hub.before_commit = hub.before_commit, None
        if hook is not None:
            hook()
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with hub.lock:
            repo = hub._get_repo(g["type"], g["repo"])
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent is not None and parent != repo.branches[branch]:
                raise HubError(
                    412,
                    f"A commit has happened since {parent}: {branch} is now at {repo.branches[branch]}. "
                    "Please refresh and try again.",
                )
            files = dict(repo.commits[repo.branches[branch]].files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r} (this test Hub takes regular files)")
            sha = hub._commit(repo, branch, files, header.get("summary", ""))
        prefix = "" if g["type"] == "model" else f"{g['type']}s/"
        self._json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{hub.endpoint}/{prefix}{g['repo']}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def repo_info(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            commit = self.hub._get_commit(repo, g.get("rev", "main"))
            siblings = []
            for path, data in sorted(commit.files.items()):
                sib: dict[str, Any] = {"rfilename": path}
                if q.get("blobs") in ("True", "true", "1"):
                    e = self.hub.entry(path, data)
                    sib.update(size=e["size"], blobId=e["oid"])
                    if "lfs" in e:
                        sib["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 130}
                siblings.append(sib)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        self._json(
            {
                "_id": hashlib.sha1(g["repo"].encode()).hexdigest()[:24],
                "id": g["repo"],
                "author": g["repo"].split("/")[0],
                "sha": commit.sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": now,
                "createdAt": now,
                "siblings": siblings,
            }
        )

    def tree(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        base = g.get("path", "").strip("/")
        recursive = q.get("recursive") in ("True", "true", "1")
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            files = dict(self.hub._get_commit(repo, g["rev"]).files)
        folders = _folders(list(files))
        if base and base not in folders:
            raise HubError(404, f"{base} does not exist on {g['rev']}", "EntryNotFound")
        prefix = f"{base}/" if base else ""
        out: list[dict[str, Any]] = []
        for folder in sorted(folders):
            rest = folder[len(prefix) :]
            if folder.startswith(prefix) and (recursive or "/" not in rest):
                out.append({"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0, "path": folder})
        for path in sorted(files):
            rest = path[len(prefix) :]
            if path.startswith(prefix) and (recursive or "/" not in rest):
                out.append(self.hub.entry(path, files[path]))
        self._json(out)

    def paths_info(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        form = parse_qs(body.decode())
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            files = dict(self.hub._get_commit(repo, g["rev"]).files)
        folders = _folders(list(files))
        out: list[dict[str, Any]] = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in files:
                out.append(self.hub.entry(path, files[path]))
            elif path in folders or path == "":
                out.append({"type": "directory", "oid": git_blob_sha1(path.encode()), "size": 0, "path": path})
        self._json(out)

    def refs(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()]
            tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()]
        self._json({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    def commits(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            commit: Commit | None = self.hub._get_commit(repo, g["rev"])
            history = []
            while commit is not None:
                history.append({"id": commit.sha, "title": commit.message, "message": "",
                                "authors": [{"user": "test"}], "date": "2026-01-01T00:00:00.000Z"})  # fmt: skip
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(history)

    def create_tag(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        tag = json.loads(body)["tag"]
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            commit = self.hub._get_commit(repo, g["rev"])
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.sha
        self._json({})

    def delete_tag(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            if repo.tags.pop(g["rev"], None) is None:
                raise HubError(404, f"Tag {g['rev']} not found", "RevisionNotFound")
        self._json({})

    def create_branch(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        with self.hub.lock:
            repo = self.hub._get_repo(g["type"], g["repo"])
            if g["rev"] in repo.branches:
                raise HubError(409, f"Branch {g['rev']} already exists")
            repo.branches[g["rev"]] = self.hub._get_commit(repo, start).sha
        self._json({})

    def resolve(self, g: dict[str, str], q: dict[str, str], body: bytes) -> None:
        repo_type = g.get("type", "model")
        with self.hub.lock:
            repo = self.hub._get_repo(repo_type, g["repo"])
            commit = self.hub._get_commit(repo, g["rev"])
            data = commit.files.get(g["path"])
            if data is None:
                raise HubError(404, f"{g['path']} does not exist at {g['rev']}", "EntryNotFound")
            entry = self.hub.entry(g["path"], data)
        etag = f'"{entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]}"'
        headers = {"X-Repo-Commit": commit.sha, "ETag": etag, "Accept-Ranges": "bytes"}
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if rng is None:
            self._send(200, data, headers, "application/octet-stream")
            return
        first, last = rng.groups()
        start = int(first) if first else max(0, len(data) - int(last))
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        if start >= len(data) and len(data) > 0:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            return
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start : end + 1], headers, "application/octet-stream")


_REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)"
_RESOLVE = r"(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
_ROUTES: list[tuple[re.Pattern[str], Callable[[_Handler, dict[str, str], dict[str, str], bytes], None]]] = [
    (re.compile(r"POST /api/repos/create"), _Handler.create_repo),
    (re.compile(r"POST /api/validate-yaml"), _Handler.validate_yaml),
    (re.compile(rf"POST /api/{_REPO}/preupload/(?P<rev>[^/]+)"), _Handler.preupload),
    (re.compile(rf"POST /api/{_REPO}/commit/(?P<rev>[^/]+)"), _Handler.commit),
    (re.compile(rf"GET /api/{_REPO}(?:/revision/(?P<rev>[^/]+))?/?"), _Handler.repo_info),
    (re.compile(rf"GET /api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), _Handler.tree),
    (re.compile(rf"POST /api/{_REPO}/paths-info/(?P<rev>[^/]+)"), _Handler.paths_info),
    (re.compile(rf"GET /api/{_REPO}/refs"), _Handler.refs),
    (re.compile(rf"GET /api/{_REPO}/commits/(?P<rev>[^/]+)"), _Handler.commits),
    (re.compile(rf"POST /api/{_REPO}/tag/(?P<rev>[^/]+)"), _Handler.create_tag),
    (re.compile(rf"DELETE /api/{_REPO}/tag/(?P<rev>[^/]+)"), _Handler.delete_tag),
    (re.compile(rf"POST /api/{_REPO}/branch/(?P<rev>[^/]+)"), _Handler.create_branch),
    (re.compile(rf"(?:GET|HEAD) /{_RESOLVE}"), _Handler.resolve),
]
