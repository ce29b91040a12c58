"""An embedded S3 server on 127.0.0.1 for tests and the demo (moto's standalone server).

It is a real HTTP server in its own process: s3fs, GDAL's ``/vsis3/`` and Ray workers all
reach it over the loopback network exactly as they would reach S3 or MinIO. Needs the
``moto[server]`` package (in the ``test`` extra).
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 that fails a fraction of the requests it relays.

    Put it in front of :class:`LocalS3Server` to see what a flaky object store does to a run.
    Each request is, with the given probabilities (seeded, so a run can be repeated):

    - ``fail``: answered ``503 SlowDown`` (the store's "retry later");
    - ``drop``: the connection is closed with no answer (a reset or a dead load balancer);
    - ``cut``: relayed, but the response stops halfway through its body (a GET cut off
      mid-transfer: the headers promise more bytes than arrive);

    otherwise it is relayed as it is. ``counts`` says how many of each happened. ``only``
    limits the faults to requests whose method and path it accepts (e.g. GETs of scenes).
    """

    def __init__(self, upstream_port: int, fail: float = 0.0, drop: float = 0.0,
                 cut: float = 0.0, seed: int = 0, host: str = "127.0.0.1",
                 only: Callable[[str, str], bool] | None = None) -> None:
        self.upstream = (host, upstream_port)
        self.rates = {"fail": fail, "drop": drop, "cut": cut}
        self.only = only
        self.counts = {"relayed": 0, "fail": 0, "drop": 0, "cut": 0}
        #: (method, path, headers) of every request, in arrival order.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.host = host
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    def storage(self, token: str | None = None) -> Storage:
        """Storage settings that reach the server through this proxy."""
        return Storage(s3=S3Config(endpoint_url=self.endpoint_url, key=_KEY, secret=_SECRET,
                                   token=token))

    def _fault(self, method: str, path: str) -> str | None:
        if self.only is not None and not self.only(method, path):
            return None
        with self._lock:
            draw = self._random.random()
        for kind, rate in self.rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _body(self, handler: http.server.BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = self._body(handler)
        with self._lock:
            self.requests.append((handler.command, handler.path, dict(handler.headers.items())))
        fault = self._fault(handler.command, handler.path)
        if fault == "drop":
            self._count("drop")
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "fail":
            self._count("fail")
            message = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                       b"<Message>Please reduce your request rate.</Message></Error>")
            handler.send_response(503)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(message)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(message)
            handler.close_connection = True
            return
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length")}
        if body or handler.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.putrequest(handler.command, handler.path, skip_host=True,
                                skip_accept_encoding=True)
            for key, value in headers.items():
                upstream.putheader(key, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
            status, reply = response.status, response.getheaders()
        finally:
            upstream.close()
        handler.send_response(status)
        for key, value in reply:
            if key.lower() not in ("transfer-encoding", "connection", "content-length",
                                   "date", "server"):
                handler.send_header(key, value)
        length = (dict((k.lower(), v) for k, v in reply).get("content-length", "0")
                  if handler.command == "HEAD" else str(len(data)))
        handler.send_header("Content-Length", length)
        handler.end_headers()
        if handler.command == "HEAD":
            self._count("relayed")
            return
        if fault == "cut" and len(data) > 1:
            self._count("cut")
            handler.wfile.write(data[:len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._count("relayed")
        handler.wfile.write(data)

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
