"""A small hub-compatible server for the tests: the endpoints huggingface_hub 2.4 calls to create a repo,
make branches, commit files (regular, base64 in the NDJSON commit; no LFS) and delete them, list a branch's
commits and download files back.

No maintained local hub server on PyPI serves the client's upload calls (hf-local-hub ships only a
client for a Go binary it does not include; olah is a read-only mirror), so the tests run the real
client against this one. Writes (and reads of private repos) need a Bearer token the server was
started with, so the "no token" path is real; as on the hub, the token writes only under its own user
name and the orgs whoami lists (`orgs`, each with a role; a "read" role writes nothing). Files are stored
on disk: blobs by their git sha1, every commit as a JSON tree, refs as a JSON file per repo.

    with HubServer(tmp_path / "hub", tokens={"hf_..."}) as hub:
        HfApi(endpoint=hub.url, token="hf_...").create_repo("org/name")
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

USER = "tester"
ORGS = {"org": "write", "my-org": "admin", "bertforge-tests": "write"}
"""The orgs the token's user belongs to, with its role in each (whoami-v2's `orgs[].roleInOrg`)."""


def git_blob_sha1(data: bytes) -> str:
    """The oid git (and the hub) gives a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStore:
    """Repos on disk: <root>/blobs/<sha1>, <root>/commits/<oid>.json ({path: sha1}), <root>/repos/<org>/<name>.json."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("blobs", "commits", "repos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def repo(self, repo_id: str) -> dict | None:
        path = self.root / "repos" / f"{repo_id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, repo_id: str, repo: dict) -> None:
        path = self.root / "repos" / f"{repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo))

    def commit(self, files: dict[str, str], parent: str | None, message: str, description: str = "") -> str:
        body = json.dumps({"files": files, "parent": parent, "message": message, "description": description,
                           "time": time.time()}, sort_keys=True)
        oid = hashlib.sha1(body.encode()).hexdigest()
        (self.root / "commits" / f"{oid}.json").write_text(body)
        return oid

    def tree(self, oid: str) -> dict[str, str]:
        return json.loads((self.root / "commits" / f"{oid}.json").read_text())["files"]

    def history(self, oid: str | None) -> list[tuple[str, dict]]:
        """(oid, commit) from `oid` back to the repo's first commit, newest first."""
        found = []
        while oid:
            commit = json.loads((self.root / "commits" / f"{oid}.json").read_text())
            found.append((oid, commit))
            oid = commit["parent"]
        return found

    def put_blob(self, data: bytes) -> str:
        sha = git_blob_sha1(data)
        (self.root / "blobs" / sha).write_bytes(data)
        return sha

    def blob(self, sha: str) -> bytes:
        return (self.root / "blobs" / sha).read_bytes()

    def resolve(self, repo: dict, revision: str) -> str | None:
        """A branch name or a commit oid -> the commit oid."""
        if revision in repo["refs"]:
            return repo["refs"][revision]
        return revision if re.fullmatch(r"[0-9a-f]{40}", revision) and \
            (self.root / "commits" / f"{revision}.json").is_file() else None


class HubHandler(BaseHTTPRequestHandler):
    server: "HubServer._Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the tests read failures from the client's errors
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.server.requests.append((self.command, self.path, status))  # for a test to see what the client asked
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)) if "Content-Length" not in (headers or {}) else
                         headers["Content-Length"])
        self.end_headers()
        if not head and self.command != "HEAD":  # a HEAD answer has headers only, errors included
            self.wfile.write(body)

    def _json(self, status: int, data, error_code: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if error_code:
            headers["X-Error-Code"] = error_code
            headers["X-Error-Message"] = data.get("error", "") if isinstance(data, dict) else ""
        self._send(status, json.dumps(data).encode(), headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[len("Bearer "):] in self.server.tokens

    def _need_token(self) -> bool:
        if self._authorised():
            return True
        self._json(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def _may_write(self, repo_id: str) -> bool:
        """The hub's rule: a token writes under its user's name and the orgs where its role is not "read"."""
        namespace = repo_id.split("/")[0]
        if namespace == USER or self.server.orgs.get(namespace, "read") != "read":
            return True
        self._json(403, {"error": f'You don\'t have the rights to create a model under the namespace "{namespace}"'})
        return False

    def _readable_repo(self, repo_id: str) -> dict | None:
        repo = self.server.store.repo(repo_id)
        if repo is None or (repo["private"] and not self._authorised()):
            self._json(404, {"error": f"Repository Not Found for url: {self.path}"}, "RepoNotFound")
            return None
        return repo

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        m = None
        if method == "GET" and path == "/api/whoami-v2":
            return self._whoami()
        if method == "POST" and path == "/api/validate-yaml":
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/refs", path)) and method == "GET":
            return self._refs(m[1])
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/([^/]+)", path)) and method == "POST":
            return self._create_branch(m[1], unquote(m[2]))
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)) and method == "POST":
            return self._preupload(m[1])
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)) and method == "POST":
            return self._commit(m[1], unquote(m[2]))
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commits/([^/]+)", path)) and method == "GET":
            return self._commits(m[1], unquote(m[2]))
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)) and method == "GET":
            return self._info(m[1], unquote(m[2] or "main"))
        if (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)) and method == "GET":
            return self._tree(m[1], unquote(m[2]), unquote((m[3] or "/")[1:]))
        if (m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)) and method in ("GET", "HEAD"):
            return self._resolve(m[1], unquote(m[2]), unquote(m[3]), head=method == "HEAD")
        self._body()
        self._json(404, {"error": f"no route {method} {path}"})

    def _whoami(self) -> None:
        if self._need_token():
            orgs = [{"type": "org", "name": name, "fullname": name, "roleInOrg": role}
                    for name, role in self.server.orgs.items()]
            self._json(200, {"type": "user", "name": USER, "orgs": orgs,
                             "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}})

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        if not self._need_token() or not self._may_write(repo_id):
            return
        store = self.server.store
        with store.lock:
            if store.repo(repo_id) is not None:
                return self._json(409, {"error": "You already created this model repo", "url": self._url(repo_id)})
            readme = store.put_blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
            first = store.commit({".gitattributes": readme}, None, "initial commit")
            store.save_repo(repo_id, {"private": payload.get("visibility", "public") == "private" or
                                      bool(payload.get("private")), "refs": {"main": first}})
        self._json(200, {"url": self._url(repo_id), "name": repo_id})

    def _url(self, repo_id: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{repo_id}"

    def _refs(self, repo_id: str) -> None:
        if (repo := self._readable_repo(repo_id)) is None:
            return
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo["refs"].items())]
        self._json(200, {"branches": branches, "tags": [], "converts": [], "pullRequests": []})

    def _create_branch(self, repo_id: str, branch: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._need_token() or self._readable_repo(repo_id) is None or not self._may_write(repo_id):
            return
        store = self.server.store
        with store.lock:
            repo = store.repo(repo_id)
            if branch in repo["refs"]:
                return self._json(409, {"error": f"Reference refs/heads/{branch} already exists"})
            start = store.resolve(repo, payload.get("startingPoint") or "main")
            if start is None:
                return self._json(404, {"error": "Invalid rev id"}, "RevisionNotFound")
            repo["refs"][branch] = start
            store.save_repo(repo_id, repo)
        self._json(200, {})

    def _preupload(self, repo_id: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._need_token() or self._readable_repo(repo_id) is None:
            return
        # Every file goes inline in the commit (regular, base64): the client then never needs LFS or Xet.
        self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in payload.get("files", [])]})

    def _commit(self, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not self._need_token() or self._readable_repo(repo_id) is None or not self._may_write(repo_id):
            return
        store = self.server.store
        with store.lock:
            repo = store.repo(repo_id)
            if revision not in repo["refs"]:
                return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
            files = dict(store.tree(repo["refs"][revision]))
            message = description = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    message, description = value.get("summary", ""), value.get("description") or ""
                elif key == "file":
                    files[value["path"]] = store.put_blob(base64.b64decode(value["content"]))
                elif key in ("deletedFile", "deletedFolder"):
                    files = {p: s for p, s in files.items() if p != value["path"] and
                             not p.startswith(value["path"].rstrip("/") + "/")}
                else:
                    return self._json(400, {"error": f"this test server does not take {key!r} operations"})
            oid = store.commit(files, repo["refs"][revision], message, description)
            repo["refs"][revision] = oid
            store.save_repo(repo_id, repo)
        self._json(200, {"commitUrl": f"{self._url(repo_id)}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None, "success": True})

    def _commits(self, repo_id: str, revision: str) -> None:
        """A revision's history, newest first, as the hub lists it (title: the summary; message: the
        description); one page, so no Link header."""
        if (repo := self._readable_repo(repo_id)) is None:
            return
        oid = self.server.store.resolve(repo, revision)
        if oid is None:
            return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
        self._json(200, [{"id": commit_oid, "title": commit["message"], "message": commit.get("description", ""),
                          "authors": [{"user": USER}],
                          "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit["time"]))}
                         for commit_oid, commit in self.server.store.history(oid)])

    def _info(self, repo_id: str, revision: str) -> None:
        if (repo := self._readable_repo(repo_id)) is None:
            return
        oid = self.server.store.resolve(repo, revision)
        if oid is None:
            return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
        tree = self.server.store.tree(oid)
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo["private"],
                         "siblings": [{"rfilename": p} for p in sorted(tree)], "tags": [], "downloads": 0,
                         "likes": 0})

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        if (repo := self._readable_repo(repo_id)) is None:
            return
        oid = self.server.store.resolve(repo, revision)
        if oid is None:
            return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
        prefix = folder.rstrip("/") + "/" if folder.strip("/") else ""
        entries = [{"type": "file", "path": p, "oid": sha, "size": len(self.server.store.blob(sha))}
                   for p, sha in sorted(self.server.store.tree(oid).items()) if p.startswith(prefix)]
        if prefix and not entries:
            return self._json(404, {"error": f"Entry not found: {folder}"}, "EntryNotFound")
        self._json(200, entries)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        if (repo := self._readable_repo(repo_id)) is None:
            return
        oid = self.server.store.resolve(repo, revision)
        if oid is None:
            return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
        sha = self.server.store.tree(oid).get(filename)
        if sha is None:
            return self._json(404, {"error": f"Entry not found: {filename}"}, "EntryNotFound")
        data = self.server.store.blob(sha)
        self._send(200, data, {"ETag": f'"{sha}"', "X-Repo-Commit": oid, "Content-Length": str(len(data)),
                               "Content-Type": "application/octet-stream"}, head=head)


class HubServer:
    """The server on 127.0.0.1 (a free port) in a background thread; a context manager."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        store: HubStore
        tokens: set[str]
        orgs: dict[str, str]
        requests: list[tuple[str, str, int]]

    def __init__(self, root: Path, tokens: set[str], orgs: dict[str, str] | None = None):
        self.httpd = self._Server(("127.0.0.1", 0), HubHandler)
        self.httpd.store, self.httpd.tokens, self.httpd.requests = HubStore(root), set(tokens), []
        self.httpd.orgs = dict(ORGS if orgs is None else orgs)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
