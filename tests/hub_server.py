"""A local stand-in for the Hugging Face hub on 127.0.0.1: enough of its protocol for huggingface_hub.

Serves `root/<owner>/<name>/<file>` as file <file> of dataset repo <owner>/<name>
(HEAD/GET `/datasets/<owner>/<name>/resolve/<rev>/<file>`, with the X-Repo-Commit, ETag and size
headers the client needs), and `root/<path>` as a plain file at `/files/<path>`. Faults can be queued per file:
  "corrupt"  the body has the right length but a garbled parquet footer
  "stall"    the headers and half the body, then nothing until `release()` (a download killed midway);
             `stalling` is set while it holds the download open
Every request is logged as (method, filename).
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "a" * 40


class HubServer:
    def __init__(self, root: Path):
        self.root = root
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.released = threading.Event()
        self.stalling = threading.Event()  # set while a "stall" fault holds a download open
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self) -> list[str]:
        return [name for method, name in self.requests if method == "GET"]

    def release(self) -> None:
        self.released.set()

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _resolve(self) -> Path | None:
                parts = self.path.split("/")  # '', 'datasets', owner, name, 'resolve', revision, file...
                if parts[1] == "files":  # a plain file download, as from S3
                    path = server.root / "/".join(parts[2:])
                    server.requests.append((self.command, path.name))
                    return path if path.is_file() else None
                if len(parts) < 7 or parts[1] != "datasets" or parts[4] != "resolve":
                    return None
                name = "/".join(parts[6:])
                path = server.root / parts[2] / parts[3] / name
                server.requests.append((self.command, name))
                return path if path.is_file() else None

            def _headers(self, path: Path | None, size: int) -> None:
                if path is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                else:
                    self.send_response(200)
                    self.send_header("ETag", f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(size))
                self.end_headers()

            def do_HEAD(self):
                path = self._resolve()
                self._headers(path, path.stat().st_size if path else 0)

            def _api(self) -> bool:
                """snapshot_download's listing calls: /api/datasets/<owner>/<name>/{revision,tree}/..."""
                parts = self.path.split("?")[0].split("/")
                if len(parts) < 7 or parts[1:3] != ["api", "datasets"]:
                    return False
                repo = server.root / parts[3] / parts[4]
                server.requests.append(("API", "/".join(parts[5:])))
                if parts[5] == "revision":
                    body = {"id": f"{parts[3]}/{parts[4]}", "sha": COMMIT}
                else:
                    body = [{"type": "file", "path": str(f.relative_to(repo)), "size": f.stat().st_size,
                             "oid": hashlib.sha1(f.read_bytes()).hexdigest()}
                            for f in sorted(repo.rglob("*")) if f.is_file()]
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return True

            def do_GET(self):
                if self._api():
                    return
                path = self._resolve()
                if path is None:
                    return self._headers(None, 0)
                body = path.read_bytes()
                queue = server.faults.get(path.name, [])  # faults are keyed by the file's base name
                fault = queue.pop(0) if queue else None
                self._headers(path, len(body))
                if fault == "corrupt":
                    body = body[:-64] + bytes(64)
                elif fault == "stall":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.stalling.set()
                    server.released.wait(timeout=600)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler
