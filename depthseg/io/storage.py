"""Where bytes live: local paths and ``s3://`` URIs, for fsspec/s3fs and for GDAL alike.

One :class:`Storage` value travels with every job (it is a small frozen dataclass, so Ray
pickles it to workers). It answers three questions for a URI:

- which fsspec filesystem and path serve it (:meth:`Storage.fs`),
- which path GDAL opens for it (``s3://b/k`` -> ``/vsis3/b/k``, :meth:`Storage.gdal_path`),
- which GDAL configuration options make ``/vsis3/`` reach the same endpoint
  (:meth:`Storage.gdal_options`).

Nothing here reads environment variables on import; :meth:`S3Config.from_env` is called
explicitly by the ``jobs/`` entry points.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import fsspec

from depthseg.errors import InputError, StorageError

T = TypeVar("T")

_SCHEMES_LOCAL = ("", "file")
_GDAL_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SCHEMES_S3 = ("s3",)
_REDACTED_FIELDS = ("secret", "token")  # '***' in repr(); pickling keeps the real value


@dataclass(frozen=True)
class S3Config:
    """How to reach an S3-compatible object store.

    Attributes:
        endpoint_url: Full URL of the S3 API (``http://127.0.0.1:9000``); None for AWS itself.
        key: Access key id; None to let botocore find credentials (roles, profiles).
        secret: Secret access key; None likewise.
        token: Session token of temporary credentials (STS, SSO, IRSA); None for long-term
            keys.
        region: Region name sent with signed requests.
        anon: Unsigned requests (public buckets).

    ``repr()``/``str()`` (and so :class:`Storage`'s, logs and tracebacks) show the secret as
    ``'***'``; pickles (Ray ships these to workers) carry the real value.
    """

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str = "us-east-1"
    anon: bool = False
    token: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise InputError(
                    f"S3 endpoint {self.endpoint_url!r} is not a URL; expected "
                    "http(s)://HOST:PORT, e.g. http://127.0.0.1:9000"
                )

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "'***'" if f.name in _REDACTED_FIELDS and value is not None else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Read the standard AWS variables (``AWS_ENDPOINT_URL``, keys, region).

        Args:
            environ: Mapping to read instead of ``os.environ`` (for tests).
        """
        env = os.environ if environ is None else environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            anon=env.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1"),
            token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem``."""
        options: dict[str, Any] = {"anon": self.anon}
        if self.key is not None:
            options["key"] = self.key
        if self.secret is not None:
            options["secret"] = self.secret
        if self.token is not None:
            options["token"] = self.token
        client_kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url is not None:
            client_kwargs["endpoint_url"] = self.endpoint_url
        options["client_kwargs"] = client_kwargs
        # s3fs retries throttling and 5xx itself; give it a few more attempts than default.
        options["config_kwargs"] = {"retries": {"max_attempts": 8, "mode": "adaptive"}}
        return options

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options that point ``/vsis3/`` at the same store."""
        options: dict[str, str] = {
            "AWS_REGION": self.region,
            # Do not list a whole prefix to open one file.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MAX_RETRY": "5",
            "GDAL_HTTP_RETRY_DELAY": "0.5",
        }
        if self.anon:
            options["AWS_NO_SIGN_REQUEST"] = "YES"
        if self.key is not None:
            options["AWS_ACCESS_KEY_ID"] = self.key
        if self.secret is not None:
            options["AWS_SECRET_ACCESS_KEY"] = self.secret
        if self.token is not None:
            options["AWS_SESSION_TOKEN"] = self.token
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            options["AWS_S3_ENDPOINT"] = parsed.netloc
            options["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
            # Custom endpoints (moto, MinIO) serve path-style URLs.
            options["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return options


@dataclass(frozen=True)
class Storage:
    """Access to local paths and ``s3://`` URIs with one set of settings.

    Attributes:
        s3: Settings for ``s3://`` URIs.
    """

    s3: S3Config = field(default_factory=S3Config)

    @classmethod
    def from_env(cls) -> Storage:
        """Storage configured from the standard AWS environment variables."""
        return cls(s3=S3Config.from_env())

    def fs(self, uri: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem serving ``uri`` and the path to use with it."""
        text = os.fspath(uri)
        scheme = scheme_of(text)
        if scheme in _SCHEMES_LOCAL:
            return fsspec.filesystem("file"), str(Path(text.removeprefix("file://")).absolute())
        if scheme in _SCHEMES_S3:
            return fsspec.filesystem("s3", **self.s3.fsspec_options()), text.removeprefix("s3://")
        raise InputError(
            f"URI {text!r} has scheme {scheme!r}; expected a local path or s3://BUCKET/KEY"
        )

    def gdal_path(self, uri: str | os.PathLike[str]) -> str:
        """The path GDAL/rasterio opens for ``uri`` (``s3://b/k`` -> ``/vsis3/b/k``)."""
        text = os.fspath(uri)
        scheme = scheme_of(text)
        if scheme in _SCHEMES_LOCAL:
            return text.removeprefix("file://")
        if scheme in _SCHEMES_S3:
            return "/vsis3/" + text.removeprefix("s3://")
        raise InputError(
            f"URI {text!r} has scheme {scheme!r}; expected a local path or s3://BUCKET/KEY"
        )

    def gdal_options(self) -> dict[str, str]:
        """GDAL options for ``rasterio.Env`` (S3 endpoint, credentials, retries)."""
        return self.s3.gdal_options()

    @contextmanager
    def gdal_env(self) -> Iterator[None]:
        """A ``rasterio.Env`` carrying :meth:`gdal_options`."""
        # Local import: keeps `depthseg.io.storage` importable without GDAL loaded.
        import rasterio
        from rasterio.session import DummySession

        options = self.gdal_options()
        # rasterio refuses AWS keys as plain options, so they travel in a session object.
        credentials = {k: options.pop(k) for k in list(options) if k in _GDAL_CREDENTIAL_KEYS}

        class _StaticCredentials(DummySession):
            def get_credential_options(self) -> dict[str, str]:
                return credentials

        with rasterio.Env(session=_StaticCredentials(), **options):
            yield

    def exists(self, uri: str) -> bool:
        """Whether a file or prefix exists at ``uri``."""
        fs, path = self.fs(uri)
        return bool(with_retries(lambda: fs.exists(path)))

    def read_bytes(self, uri: str) -> bytes:
        """All bytes of the object at ``uri``."""
        fs, path = self.fs(uri)
        try:
            return with_retries(lambda: fs.cat_file(path))
        except FileNotFoundError as err:
            raise StorageError(f"{uri!r} does not exist; check the path or URI") from err

    def write_bytes_atomic(self, uri: str, data: bytes) -> None:
        """Write ``data`` so that readers see either nothing or all of it.

        Local files go to a temporary sibling and are renamed; an S3 PUT is atomic already.
        """
        fs, path = self.fs(uri)
        if scheme_of(uri) in _SCHEMES_LOCAL:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{path}.tmp-{os.getpid()}-{random.getrandbits(32):08x}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)  # a full disk or a bad target leaves nothing
                raise
            return
        with_retries(lambda: fs.pipe_file(path, data))

    def remove_tree(self, uri: str) -> None:
        """Remove the file or folder/prefix at ``uri`` and everything under it, if present."""
        fs, path = self.fs(uri)
        if with_retries(lambda: fs.exists(path)):
            with_retries(lambda: fs.rm(path, recursive=True))

    def upload(self, local_path: str | os.PathLike[str], uri: str) -> None:
        """Copy a local file to ``uri`` (a local path or an object key)."""
        fs, path = self.fs(uri)
        if scheme_of(uri) in _SCHEMES_LOCAL:
            self.write_bytes_atomic(uri, Path(local_path).read_bytes())
            return
        with_retries(lambda: fs.put_file(os.fspath(local_path), path))


def info_fingerprint(info: dict[str, Any], local: bool) -> str:
    """A cheap identity of an object from one ``info`` call: ETag, else size + time."""
    if not local:
        etag = info.get("ETag") or info.get("etag")
        if etag:
            return f"etag:{str(etag).strip(chr(34))}"
        modified = info.get("LastModified") or info.get("last_modified")
        return f"size:{info.get('size')},modified:{modified}"
    return f"size:{info.get('size')},mtime:{info.get('mtime')}"


def object_fingerprint(uri: str, storage: Storage) -> str:
    """ETag of an object, or size + mtime of a local file.

    Raises:
        StorageError: Nothing at ``uri``.
    """
    fs, path = storage.fs(uri)
    fs.invalidate_cache(path)  # s3fs answers info() from cached listings; ask the store
    try:
        info = with_retries(lambda: fs.info(path))
    except FileNotFoundError as err:
        raise StorageError(f"{uri!r} does not exist; cannot fingerprint it") from err
    return info_fingerprint(info, scheme_of(uri) in ("", "file"))


def open_zarr_store(uri: str, storage: Storage, read_only: bool = False) -> Any:
    """A Zarr store for a local folder or ``s3://`` prefix (zarr is imported here, not above)."""
    from zarr.storage import FsspecStore, LocalStore

    if scheme_of(uri) in _SCHEMES_LOCAL:
        return LocalStore(uri.removeprefix("file://"), read_only=read_only)
    return FsspecStore.from_url(
        uri, storage_options=storage.s3.fsspec_options(), read_only=read_only
    )


def scheme_of(uri: str) -> str:
    """The URI scheme, ``""`` for plain paths (Windows drive letters count as paths)."""
    parsed = urlparse(uri)
    return "" if len(parsed.scheme) <= 1 else parsed.scheme.lower()


def absolute(uri: str) -> str:
    """A plain relative path made absolute (from this process's directory); URIs unchanged.

    Ray workers do not run in the driver's directory (Ray Train moves them into its run
    folder), so every job turns the local paths it was given into absolute ones first.
    """
    if uri and scheme_of(uri) == "":  # "" stays "": the job's own check names it
        return os.path.abspath(os.path.expanduser(uri))
    return uri


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with ``/``."""
    if scheme_of(uri) in _SCHEMES_LOCAL:
        return str(Path(uri.removeprefix("file://")).joinpath(*parts))
    return posixpath.join(uri.rstrip("/"), *parts)


def _transient_types() -> tuple[type[BaseException], ...]:
    """Connection-level error classes of Python, botocore and aiohttp (s3fs's transport)."""
    import asyncio

    import aiohttp
    import botocore.exceptions

    return (ConnectionError, TimeoutError, asyncio.TimeoutError,
            botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
            botocore.exceptions.IncompleteReadError, aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError)


def _is_transient(err: BaseException) -> bool:
    """Whether :func:`with_retries` should run the whole operation again.

    One retry policy per kind of failure: botocore already retries every HTTP answer that
    means "try again" (5xx, throttling, ``SlowDown``: adaptive mode, 8 attempts, configured
    in :class:`S3Config`) and GDAL its own (``GDAL_HTTP_MAX_RETRY``), so an S3 error that
    reaches us is final. What neither covers is a connection dropped or a body cut off in
    the middle of an operation (a multipart upload, a streamed read): those, and only those,
    are retried here, found by class along the exception's causes (s3fs raises ``OSError``
    from the transport's error), never by message text.
    """
    transient = _transient_types()
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, transient):
            return True
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return False


_retries = [0]


def count_retry() -> None:
    """Count one retried storage operation (see :func:`retries_so_far`)."""
    _retries[0] += 1


class _LoggedRetries(logging.Filter):
    """Counts the retries a library logs; lets records through exactly as before.

    botocore and s3fs say "retrying" only at DEBUG level, so their loggers are lowered to
    DEBUG, and this filter (on the logger itself, so before any handler or propagation)
    drops again what the logger's previous level would have dropped.
    """

    def __init__(self, marker: str, floor: int) -> None:
        super().__init__()
        self.marker, self.floor = marker, floor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.marker in record.getMessage():
            count_retry()
        return record.levelno >= self.floor


#: (logger, message fragment) of the retries botocore's retry handlers, s3fs's own retry
#: loop and GDAL's HTTP layer (through rasterio) make.
_LIBRARY_RETRIES = (("botocore.retries.standard", "Retry needed, retrying"),
                    ("botocore.retryhandler", "Retry needed, action of"),
                    ("s3fs", "Retryable error"),
                    ("rasterio._env", "Retrying again in"),
                    ("rasterio._err", "Retrying again in"))
_counting = [False]


def _count_library_retries() -> None:
    if _counting[0]:
        return
    _counting[0] = True
    for name, marker in _LIBRARY_RETRIES:
        logger = logging.getLogger(name)
        floor = logger.getEffectiveLevel()
        logger.addFilter(_LoggedRetries(marker, floor))
        if floor > logging.DEBUG:
            logger.setLevel(logging.DEBUG)


def retries_so_far() -> int:
    """Storage operations retried in this process so far.

    Counts :func:`with_retries`, the remote reads of
    :func:`depthseg.io.warp.read_with_retries`, and the retries botocore, s3fs and GDAL make
    on their own (from their log records, which stay as they were); the mapping stages
    report the increase per chunk, and ``run.json`` the run's total.
    """
    _count_library_retries()
    return _retries[0]


def with_retries(
    fn: Callable[[], T], attempts: int = 5, base_delay_s: float = 0.2, max_delay_s: float = 5.0
) -> T:
    """Call ``fn``, retrying transient storage errors with jittered exponential backoff.

    Permanent errors (missing key, access denied) are raised at once.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - filtered by _is_transient
            if attempt == attempts - 1 or not _is_transient(err):
                raise
            count_retry()
            delay = min(max_delay_s, base_delay_s * 2**attempt)
            time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------
# Local temporary folders

_TEMP_NAME = re.compile(r"^depthseg-[a-z]+-(\d+)-")


@contextmanager
def temp_dir(kind: str) -> Iterator[Path]:
    """A private temporary folder, removed when the block ends (also on errors).

    Its name carries this process's id (``depthseg-<kind>-<pid>-...``), so the folders of a
    process that was killed (SIGKILL runs no cleanup) are found and removed later by
    :func:`sweep_temp_dirs`.
    """
    with tempfile.TemporaryDirectory(prefix=f"depthseg-{kind}-{os.getpid()}-") as name:
        yield Path(name)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temp_dirs(root: str | os.PathLike[str] | None = None) -> int:
    """Remove the :func:`temp_dir` folders of processes that no longer exist; return how many.

    Called as jobs and workers start, so a killed run's temporary COGs and checkpoint
    copies do not pile up in the system's temporary folder.
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not process_alive(int(match[1])):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def remove_partial_files(out: str) -> int:
    """Remove ``*.tmp-*`` files a killed writer left in a local output; return how many.

    :meth:`Storage.write_bytes_atomic` writes local files under such names and renames them
    into place, so one that is still there was never complete. Object stores have none (a
    PUT is atomic). The Zarr mosaic is not walked: its chunks are rewritten whole.
    """
    if scheme_of(out) not in _SCHEMES_LOCAL:
        return 0
    root = Path(out.removeprefix("file://"))
    removed = 0
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root and "mosaic.zarr" in dirs:
            dirs.remove("mosaic.zarr")
        for name in files:
            if ".tmp-" in name:
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed
