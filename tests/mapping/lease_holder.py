"""A second process for the lease tests: take an output's lease, hold it, report.

Usage: ``python lease_holder.py OUT STALE_S HEARTBEAT_S HOLD_S START_AT``. It waits until
the epoch second ``START_AT`` (so racing processes try together), then prints ``held RUN``
or ``refused: ...`` (exit 2), holds the lease for ``HOLD_S`` seconds while beating, and
exits 0 after releasing it, or 3 with ``lost`` when another run took it over. Storage
settings come from the standard AWS variables (the S3 test server).
"""

from __future__ import annotations

import sys
import time

from depthseg.errors import InputError
from depthseg.io.lease import Lease
from depthseg.io.storage import Storage


def main() -> int:
    out, stale_s, heartbeat_s, hold_s, start_at = sys.argv[1:6]
    lease = Lease(out, Storage.from_env(), stale_s=float(stale_s),
                  heartbeat_s=float(heartbeat_s))
    while time.time() < float(start_at):
        time.sleep(0.001)
    try:
        lease.acquire(log=lambda line: print(line, flush=True))
    except InputError as err:
        print(f"refused: {err}", flush=True)
        return 2
    print(f"held {lease.run_id}", flush=True)
    deadline = time.monotonic() + float(hold_s)
    while time.monotonic() < deadline and lease.lost is None:
        time.sleep(0.02)
    if lease.lost is not None:
        print("lost", flush=True)
        return 3
    lease.release()
    print("released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
