"""An embedded S3 server on 127.0.0.1 for tests and the demo (moto's standalone server).

It is a real HTTP server in its own process: s3fs, GDAL's ``/vsis3/`` and Ray workers all
reach it over the loopback network exactly as they would reach S3 or MinIO. Needs the
``moto[server]`` package (in the ``test`` extra).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import TracebackType

from depthseg.errors import StorageError
from depthseg.io.storage import S3Config, Storage

# moto accepts any credentials; fixed values keep GDAL and s3fs signing identically.
_KEY = "depthseg-local"
_SECRET = "depthseg-local-secret"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalS3Server:
    """Start moto's S3 server in a subprocess; stop it on exit.

    Example:
        >>> with LocalS3Server() as server:  # doctest: +SKIP
        ...     server.make_bucket("maps")
        ...     fs, path = server.storage.fs("s3://maps/x.tif")
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT`` of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def storage(self) -> Storage:
        """Storage settings that reach this server (s3fs and GDAL)."""
        return Storage(s3=S3Config(endpoint_url=self.endpoint_url, key=_KEY, secret=_SECRET))

    def start(self, timeout_s: float = 30.0) -> LocalS3Server:
        """Start the server and wait until it answers HTTP."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StorageError(
                    f"the embedded S3 server exited with code {self._proc.returncode}; "
                    "install moto[server] (`pip install -e .[test]`)"
                )
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise StorageError(
            f"the embedded S3 server did not answer on {self.endpoint_url} within {timeout_s} s"
        )

    def stop(self) -> None:
        """Stop the server process."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def make_bucket(self, name: str) -> str:
        """Create a bucket (idempotent) and return its ``s3://`` URI."""
        fs, _ = self.storage.fs(f"s3://{name}")
        if not fs.exists(name):
            # us-east-1 takes no LocationConstraint; s3fs sends one whenever a region is set.
            fs.call_s3("create_bucket", Bucket=name)
            fs.invalidate_cache()
        return f"s3://{name}"

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays every request burst by ``latency_s``.

    Put it in front of :class:`LocalS3Server` to see what a far object store costs (each
    HTTP request waits ``latency_s`` before it reaches the server), as the province
    benchmark does. Counts the request bursts it delayed.
    """

    def __init__(self, upstream_port: int, latency_s: float = 0.03,
                 host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.latency_s = latency_s
        self.host = host
        self.requests = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, 0))
        self._server.listen(256)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    def storage(self) -> Storage:
        """Storage settings that reach the server through this proxy."""
        return Storage(s3=S3Config(endpoint_url=self.endpoint_url, key=_KEY, secret=_SECRET))

    def _pump(self, source: socket.socket, target: socket.socket, delay: bool) -> None:
        last = 0.0
        try:
            while not self._stop.is_set():
                data = source.recv(65536)
                if not data:
                    break
                now = time.monotonic()
                if delay and now - last > 0.005:  # a new request, not the rest of one
                    with self._lock:
                        self.requests += 1
                    time.sleep(self.latency_s)
                last = time.monotonic()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for source, target, delay in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, target, delay),
                                 daemon=True).start()

    def __enter__(self) -> LatencyProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
