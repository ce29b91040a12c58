"""An embedded S3 server on 127.0.0.1 for tests and the demo (moto's standalone server).

It is a real HTTP server in its own process: s3fs, GDAL's ``/vsis3/`` and Ray workers all
reach it over the loopback network exactly as they would reach S3 or MinIO. Needs the
``moto[server]`` package (in the ``test`` extra).
"""

from __future__ import annotations

import socket
import subprocess
import sys
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
