"""A Hub-compatible HTTP server on 127.0.0.1, enough for the real `huggingface_hub` / `datasets` clients to
create a dataset repo, upload to it (regular files and legacy LFS) and read it back.

Why not a mock: the push code must run the real client end to end (preupload, LFS batch, NDJSON commit,
HfFileSystem listing and reads), so the test catches protocol drift when those libraries are upgraded.
Xet uploads are not implemented; clients must run with `HF_HUB_DISABLE_XET=1` (`client_env` sets it).

Endpoints (the subset the clients call, shaped like the Hub's responses):

    POST /api/validate-yaml                                   card metadata check
    GET  /api/whoami-v2                                       who owns the token
    POST /api/repos/create                                    409 when it exists (`exist_ok` handles it)
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]            repo info (sha, siblings, private)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}             upload mode per file (lfs for binaries)
    POST /{type}s/{ns}/{name}.git/info/lfs/objects/batch       LFS basic transfer: upload actions
    PUT  /_lfs/{key}/{oid}                                     LFS object bytes (checked against the oid)
    POST /api/{type}s/{ns}/{name}/commit/{rev}                NDJSON commit: file (base64), lfsFile, deletes
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]          listing, `recursive` supported
    POST /api/{type}s/{ns}/{name}/paths-info/{rev}            info for given paths
    HEAD/GET /{type}s/{ns}/{name}/resolve/{rev}/{path}         file bytes, Range requests supported

Every revision a commit creates stays readable by its sha (datasets reads at the parent commit).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<type>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+?)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("GET", re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/_lfs/(?P<key>[0-9a-f]+)/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
_LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".gz", ".zip")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob, what the Hub reports as `oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The Hub's `oid`: the LFS pointer's git sha for LFS files, the blob's git sha otherwise."""
        return git_blob_sha(self.pointer() if self.lfs else self.data)

    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        ).encode()


@dataclass
class Commit:
    sha: str
    message: str
    description: str
    files: dict[str, HubFile]


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, bytes]:
        """Path -> bytes at the head of main (what a test checks)."""
        return {path: f.data for path, f in self.head.files.items()}

    def at(self, rev: str) -> Commit | None:
        if rev in ("main", "refs/heads/main"):
            return self.head
        return next((c for c in self.commits if c.sha == rev or c.sha.startswith(rev)), None)


class HubError(Exception):
    """An error response: `{"error": message, **extra}` with the Hub's X-Error-* headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.extra = extra or {}


class FakeHub:
    """The server's state plus its thread; `with FakeHub(token) as hub:` serves on `hub.url` until exit."""

    def __init__(self, token: str, user: str = "tester"):
        self.token = token
        self.user = user
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.unhandled: list[tuple[str, str]] = []
        self._lfs: dict[str, bytes] = {}  # uploaded LFS objects by sha256
        self._lfs_key = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self) -> dict[str, str]:
        """Environment for a client process: this endpoint, legacy LFS uploads, no telemetry."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
        }

    def repo(self, repo_id: str, repo_type: str = "dataset") -> HubRepo:
        return self.repos[(repo_type, repo_id)]

    # ---- helpers -------------------------------------------------------------------------------------
    def _authorized(self, headers: Any) -> bool:
        return headers.get("Authorization", "") == f"Bearer {self.token}"

    def _require_auth(self, headers: Any) -> None:
        if not self._authorized(headers):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _get_repo(self, repo_type: str, repo_id: str, headers: Any) -> HubRepo:
        repo = self.repos.get((repo_type.rstrip("s"), repo_id))
        if repo is None or (repo.private and not self._authorized(headers)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _get_commit(self, repo: HubRepo, rev: str) -> Commit:
        commit = repo.at(unquote(rev))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _entry(self, commit: Commit, path: str) -> dict[str, Any] | None:
        f = commit.files.get(path)
        if f is not None:
            entry: dict[str, Any] = {"type": "file", "oid": f.oid, "size": len(f.data), "path": path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer())}
            return entry
        if any(p.startswith(path.rstrip("/") + "/") for p in commit.files) or path in ("", "/"):
            tree_id = hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest()
            return {"type": "directory", "oid": tree_id, "size": 0, "path": path.rstrip("/")}
        return None

    # ---- endpoints -----------------------------------------------------------------------------------
    def validate_yaml(self, req: _Request) -> Any:
        return {"errors": [], "warnings": []}

    def whoami(self, req: _Request) -> Any:
        self._require_auth(req.headers)
        return {"type": "user", "name": self.user, "orgs": [], "auth": {"type": "access_token"}}

    def create_repo(self, req: _Request) -> Any:
        self._require_auth(req.headers)
        body = req.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                # the Hub's 409 names the existing repo's url, which `create_repo(exist_ok=True)` returns
                raise HubError(409, "You already created this repo", None, {"url": url})
            # huggingface_hub >= 1.x sends `visibility`; older clients send `private`
            private = body.get("visibility") == "private" or bool(body.get("private"))
            repo = HubRepo(repo_id, repo_type, private)
            repo.commits.append(Commit(_sha("init", repo_id), "initial commit", "", {}))
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def repo_info(self, req: _Request) -> Any:
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        commit = self._get_commit(repo, req.groups.get("rev") or "main")
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": _now(),
            "createdAt": _now(),
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "cardData": {},
        }

    def preupload(self, req: _Request) -> Any:
        self._require_auth(req.headers)
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        commit = self._get_commit(repo, req.groups["rev"])
        files = []
        for f in req.json()["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(_LFS_SUFFIXES) or b"\0" in sample
            existing = commit.files.get(f["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return {"files": files, "commitOid": commit.sha}

    def lfs_batch(self, req: _Request) -> Any:
        self._require_auth(req.headers)
        self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        body = req.json()
        objects = []
        for obj in body["objects"]:
            out: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self._lfs:
                href = f"{self.url}/_lfs/{self._lfs_key}/{obj['oid']}"
                out["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(out)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, req: _Request) -> Any:
        if req.groups["key"] != self._lfs_key:
            raise HubError(403, "bad upload key")
        if hashlib.sha256(req.body).hexdigest() != req.groups["oid"]:
            raise HubError(400, "content does not match oid")
        with self._lock:
            self._lfs[req.groups["oid"]] = req.body
        return {}

    def commit(self, req: _Request) -> Any:
        self._require_auth(req.headers)
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        with self._lock:
            parent = header.get("parentCommit")
            if parent is not None and not repo.head.sha.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.head.files)
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    files[value["path"]] = HubFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    data = self._lfs.get(value["oid"])
                    if data is None:
                        raise HubError(400, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = HubFile(data, lfs=True)
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                elif key != "header":
                    raise HubError(400, f"unsupported commit operation '{key}'")
            sha = _sha(repo.head.sha, header["summary"], *sorted(files))
            repo.commits.append(Commit(sha, header["summary"], header.get("description", ""), files))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{sha}",
            "commitMessage": header["summary"],
            "pullRequestUrl": None,
        }

    def tree(self, req: _Request) -> Any:
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        commit = self._get_commit(repo, req.groups["rev"])
        root = unquote(req.groups.get("path") or "").strip("/")
        if root and self._entry(commit, root) is None:
            raise HubError(404, f"{root} does not exist on main", "EntryNotFound")
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = root + "/" if root else ""
        seen: dict[str, dict[str, Any]] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, depth + 1):
                sub = prefix + "/".join(parts[:i])
                if sub not in seen:
                    entry = self._entry(commit, sub)
                    if entry is not None:
                        seen[sub] = entry
        return list(seen.values())

    def paths_info(self, req: _Request) -> Any:
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        commit = self._get_commit(repo, req.groups["rev"])
        if req.headers.get("Content-Type", "").startswith("application/json"):
            paths = req.json().get("paths", [])
        else:
            paths = parse_qs(req.body.decode()).get("paths", [])
        entries = [self._entry(commit, p.strip("/")) for p in paths]
        return [e for e in entries if e is not None]

    def resolve(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        repo = self._get_repo(req.groups["type"], req.groups["repo"], req.headers)
        commit = self._get_commit(repo, req.groups["rev"])
        path = unquote(req.groups["path"])
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{f.sha256 if f.lfs else f.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(len(f.data))
        data, status = f.data, 200
        match = re.match(r"bytes=(\d*)-(\d*)$", req.headers.get("Range", ""))
        if match:
            start = int(match.group(1)) if match.group(1) else max(0, len(data) - int(match.group(2)))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return status, headers, data


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    groups: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _dispatch(self) -> None:
        hub = self.server_hub
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        hub.requests.append((self.command, split.path))
        for method, pattern, name in _ROUTES:
            match = pattern.match(split.path)
            if method == self.command and match:
                groups = {k: v for k, v in match.groupdict().items() if v is not None}
                req = _Request(self.command, split.path, parse_qs(split.query), self.headers, body, groups)
                try:
                    result = getattr(hub, name)(req)
                except HubError as e:
                    self._send(e.status, {"error": e.message, **e.extra}, code=e.code)
                    return
                except Exception as e:  # a bug in the fake: make it loud in the client's error
                    self._send(500, {"error": f"fake hub failed in {name}: {e!r}"})
                    return
                if isinstance(result, tuple):
                    status, headers, data = result
                    self._send_bytes(status, headers, data)
                else:
                    self._send(200, result)
                return
        hub.unhandled.append((self.command, split.path))
        self._send(404, {"error": f"fake hub has no route for {self.command} {split.path}"})

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _send(self, status: int, payload: Any, code: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if status >= 400:
            headers["X-Error-Message"] = str(payload.get("error", ""))
            if code:
                headers["X-Error-Code"] = code
        self._send_bytes(status, headers, json.dumps(payload).encode())

    def _send_bytes(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch


def _sha(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
