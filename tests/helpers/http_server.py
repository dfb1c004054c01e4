"""A real HTTP server on 127.0.0.1 for the download tests: serves files, honours ``Range`` requests, and can be
told to cut a response short, to ignore ``Range``, to answer with an error status or an HTML page.

    with FileServer({"/a/file.bin": "/path/to/file.bin"}) as server:
        download(server.url("/a/file.bin"), ...)
        server.requests  # [("/a/file.bin", None), ...]: path and Range header of every request
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")


class FileServer:
    """Serves ``files`` (URL path -> local file path or bytes) on a free port of 127.0.0.1 while in a ``with`` block.

    Settings, changeable at any time: ``ranges`` (False: ignore ``Range`` and send the whole file with 200),
    ``cut[path] = n`` (the next response for ``path`` announces its full length but closes the connection after
    ``n`` body bytes; used once), ``status[path] = code`` (answer with that error status),
    ``html[path] = True`` (answer 200 with an HTML page). ``requests`` logs ``(path, Range header or None)``.
    """

    def __init__(self, files: dict[str, str | bytes] | None = None):
        self.files: dict[str, str | bytes] = dict(files or {})
        self.ranges = True
        self.cut: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.html: dict[str, bool] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve_folder(self, prefix: str, folder: str, names: list[str] | None = None) -> None:
        """Serve ``folder``'s files (or only ``names``) as ``prefix/<name>``."""
        for name in names if names is not None else sorted(os.listdir(folder)):
            self.files[f"{prefix}/{name}"] = os.path.join(folder, name)

    def paths_requested(self) -> list[str]:
        return [path for path, _ in self.requests]

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _body(self, path: str) -> bytes | None:
        content = self.files.get(path)
        if content is None or isinstance(content, bytes):
            return content
        with open(content, "rb") as f:
            return f.read()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep the test output clean
                pass

            def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None,
                      sent: int | None = None) -> None:  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                if sent is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body if sent is None else body[:sent])
                self.wfile.flush()
                if sent is not None:
                    self.close_connection = True

            def do_GET(self):
                path = self.path
                requested_range = self.headers.get("Range")
                with server._lock:
                    server.requests.append((path, requested_range))
                    cut = server.cut.pop(path, None)
                if path in server.status:
                    self._send(server.status[path], b"error\n", "text/plain")
                    return
                if server.html.get(path):
                    page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in</body></html>"
                    self._send(200, page, "text/html; charset=utf-8")
                    return
                body = server._body(path)
                if body is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                match = _RANGE.match(requested_range or "")
                if server.ranges and match:
                    start = int(match.group(1))
                    if start >= len(body):
                        self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                        return
                    extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}", "Accept-Ranges": "bytes"}
                    self._send(206, body[start:], "application/octet-stream", extra, cut)
                    return
                extra = {"Accept-Ranges": "bytes"} if server.ranges else {}
                self._send(200, body, "application/octet-stream", extra, cut)

        return Handler
