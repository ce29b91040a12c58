"""An output lease: one run at a time writes an output folder or prefix.

A run holds ``<out>/lease/<generation>.json`` (host, pid, run id, start time, heartbeat).
Generations only grow, and each is created exclusively: a local file is linked into place
(``os.link`` fails if the name exists), an S3 object is put with ``If-None-Match: *`` (S3
and S3-compatible stores refuse the second put with 412). So of two runs that race for an
output, exactly one creates the generation both tried, and the other is refused.

The holder is the newest generation. Its run rewrites it every ``heartbeat_s`` seconds. A
lease is stale when its heartbeat is older than ``stale_s`` seconds, or when its process
is gone (same host, pid not alive): a new run then takes it over by creating the next
generation (again exclusively, so two runs taking over one stale lease cannot both win),
with a warning, and removes the older generations. A holder that finds a newer
generation at its next heartbeat has lost the lease (``Lease.lost``).

Workers check :func:`holds` before they mark a chunk done, so a worker that outlives its
run (a killed driver) cannot mark chunks done in an output another run has taken over.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from depthseg.errors import InputError, StorageError
from depthseg.io.storage import Storage, join, process_alive, scheme_of, with_retries

LEASE = "lease"
#: A lease whose heartbeat is older than this is stale (taken over with a warning).
STALE_S = 300.0


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease object holds."""

    run_id: str
    generation: int
    host: str
    pid: int
    started: float
    heartbeat: float

    def describe(self, now: float) -> str:
        """``run 3f2a... (pid 123 on host, heartbeat 12 s ago)``."""
        return (f"run {self.run_id[:8]} (pid {self.pid} on {self.host}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.started))} UTC, "
                f"heartbeat {max(0.0, now - self.heartbeat):.0f} s ago)")


def _name(generation: int) -> str:
    return f"{generation:08d}.json"


def _local(uri: str) -> bool:
    return scheme_of(uri) in ("", "file")


def _generations(out: str, storage: Storage) -> list[int]:
    """The lease generations present in ``out``, oldest first."""
    fs, path = storage.fs(join(out, LEASE))
    fs.invalidate_cache(path)  # s3fs caches listings; another process may have written
    try:
        names = with_retries(lambda: fs.ls(path, detail=False))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem = str(name).rstrip("/").rsplit("/", 1)[-1]
        if stem.endswith(".json") and stem[:-5].isdigit():
            found.append(int(stem[:-5]))
    return sorted(found)


def _read(out: str, storage: Storage, generation: int) -> LeaseRecord | None:
    """One generation's record, or None when it vanished meanwhile (released, removed)."""
    fs, path = storage.fs(join(out, LEASE, _name(generation)))
    try:
        data = json.loads(with_retries(lambda: fs.cat_file(path)))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise StorageError(f"lease {join(out, LEASE, _name(generation))!r} is not a lease "
                           f"({err}); remove it if no run is writing {out!r}") from err
    return LeaseRecord(**{k: data[k] for k in LeaseRecord.__dataclass_fields__})


def current(out: str, storage: Storage) -> LeaseRecord | None:
    """The holder of ``out``'s lease (its newest generation), or None."""
    for generation in reversed(_generations(out, storage)):
        record = _read(out, storage, generation)
        if record is not None:
            return record
    return None


def holds(out: str, storage: Storage, run_id: str) -> bool:
    """Whether run ``run_id`` still holds ``out``'s lease (what writers check)."""
    record = current(out, storage)
    return record is not None and record.run_id == run_id


def _create_exclusive(uri: str, data: bytes, storage: Storage) -> bool:
    """Create ``uri`` holding ``data`` unless it exists; True if this call created it."""
    fs, path = storage.fs(uri)
    if _local(uri):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, target)  # atomic and exclusive: readers never see a partial lease
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    try:
        with_retries(lambda: fs.pipe_file(path, data, mode="create"))
        return True
    except FileExistsError:
        return False


def is_fresh(record: LeaseRecord, stale_s: float = STALE_S) -> bool:
    """Whether a lease still binds: a recent heartbeat and, on this host, a live process."""
    return time.time() - record.heartbeat < stale_s and not _process_gone(record)


def _process_gone(record: LeaseRecord) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    return record.host == socket.gethostname() and not process_alive(record.pid)


class Lease:
    """This run's hold on an output; see the module docs.

    Example:
        >>> with Lease(out, storage).acquire(log=print) as lease:  # doctest: +SKIP
        ...     ...  # write the output; lease.run_id goes with the workers
    """

    def __init__(self, out: str, storage: Storage, stale_s: float = STALE_S,
                 heartbeat_s: float | None = None, run_id: str | None = None) -> None:
        """Describe a lease on ``out`` (nothing is taken until :meth:`acquire`)."""
        if stale_s <= 0:
            raise InputError(f"lease timeout {stale_s!r} s must be positive")
        self.out = out
        self.storage = storage
        self.stale_s = float(stale_s)
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else min(30.0, stale_s / 4)
        self.run_id = run_id or uuid.uuid4().hex
        self.generation = 0
        self.started = 0.0
        self.lost: LeaseRecord | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Callable[[str], None] = lambda line: None

    def _record(self, now: float) -> bytes:
        return json.dumps(asdict(LeaseRecord(
            run_id=self.run_id, generation=self.generation, host=socket.gethostname(),
            pid=os.getpid(), started=self.started, heartbeat=now)), indent=2).encode()

    def _uri(self, generation: int | None = None) -> str:
        return join(self.out, LEASE, _name(self.generation if generation is None
                                           else generation))

    def acquire(self, log: Callable[[str], None] | None = None) -> Lease:
        """Take the lease, or take over a stale one (with a warning), and start beating.

        Raises:
            InputError: Another run holds a fresh lease on the output.
        """
        self._log = log or self._log
        for _ in range(8):  # a holder may release or be taken over between our reads
            generations = _generations(self.out, self.storage)
            holder = None
            for generation in reversed(generations):
                holder = _read(self.out, self.storage, generation)
                if holder is not None:
                    break
            now = time.time()
            if holder is not None and is_fresh(holder, self.stale_s):
                raise InputError(
                    f"output {self.out!r} is in use by {holder.describe(now)}; wait for it to "
                    f"finish, or, if that run is dead, wait "
                    f"{self.stale_s - (now - holder.heartbeat):.0f} s for its lease to go "
                    f"stale (or remove {self._uri(holder.generation)!r})")
            self.generation = (generations[-1] if generations else 0) + 1
            self.started = now
            if not _create_exclusive(self._uri(), self._record(now), self.storage):
                continue  # another run took this generation first: look again
            if holder is not None:
                why = "its process is gone" if _process_gone(holder) else (
                    f"no heartbeat for {now - holder.heartbeat:.0f} s")
                self._log(f"warning: taking over the lease on {self.out!r} from "
                          f"{holder.describe(now)}: {why}")
            for old in generations:  # older generations only: ours is the newest
                self._remove(old)
            self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                            name="depthseg-lease")
            self._thread.start()
            return self
        raise StorageError(f"could not take the lease on {self.out!r}: it changed hands 8 "
                           "times while trying; is another scheduler racing for it?")

    def _remove(self, generation: int) -> None:
        fs, path = self.storage.fs(self._uri(generation))
        try:
            with_retries(lambda: fs.rm_file(path))
        except FileNotFoundError:
            pass

    def beat(self) -> bool:
        """Renew the heartbeat; False (and ``lost`` set) when another run took the lease."""
        holder = current(self.out, self.storage)
        if holder is None or holder.run_id != self.run_id:
            self.lost = holder or LeaseRecord("(none)", 0, "", 0, 0.0, 0.0)
            self._log(f"error: lost the lease on {self.out!r}"
                      + (f" to {holder.describe(time.time())}" if holder else "")
                      + "; this run stops writing it")
            return False
        self.storage.write_bytes_atomic(self._uri(), self._record(time.time()))
        return True

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except Exception as err:  # noqa: BLE001 - a missed beat is retried next period
                self._log(f"warning: lease heartbeat on {self.out!r} failed ({err})")

    def release(self) -> None:
        """Stop beating and remove the lease (if this run still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.generation and self.lost is None and holds(self.out, self.storage,
                                                           self.run_id):
            # Ours is the newest generation: any older one left (a beat of a run we took
            # over, landing after we removed its lease) goes too.
            for generation in _generations(self.out, self.storage):
                if generation <= self.generation:
                    self._remove(generation)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def to_dict(self) -> dict[str, Any]:
        """For ``run.json``: the run id and the lease generation."""
        return {"run_id": self.run_id, "generation": self.generation}
