"""Progress of a job: a bar with an ETA on a terminal, plain lines in a log.

On a TTY it is a tqdm bar (rate, ETA, a short status). Anywhere else (a log file, ``ray job
logs``, CI) a bar's carriage returns would be noise, so it prints one plain line at most every
``every_s`` seconds (a job shorter than that prints none: its own summary line says it all):
``prepare: 120/400 chips (30%), 8.1 chips/s, ETA 0m35s``.
Messages that must not be lost (a failed chunk) go through :meth:`Progress.write`, which
prints above a bar without breaking it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _eta(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts ``total`` units of work; see the module docs.

    Example:
        >>> with Progress(400, "prepare", "chips") as bar:  # doctest: +SKIP
        ...     bar.update(8, status="val split")
    """

    def __init__(self, total: int, desc: str, unit: str, stream: IO[str] | None = None,
                 every_s: float = 10.0, tty: bool | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """A bar (on a terminal) or plain lines (elsewhere) for ``total`` units.

        ``log``, when given, receives the plain lines instead (never a bar): a job's own
        line sink, such as a Ray worker's print.
        """
        self.stream = stream if stream is not None else sys.stderr
        self._log = log
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.every_s = every_s
        self.done = 0
        self.status = ""
        self.started = time.monotonic()
        self._printed_at = self.started
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.tty = False if log is not None else (isatty() if tty is None else tty)
        self._bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=f" {unit}", file=self.stream,
                             dynamic_ncols=True, leave=True)

    def update(self, n: int = 1, status: str = "") -> None:
        """``n`` more units done; ``status`` is shown beside the count."""
        self.done += n
        self.status = status or self.status
        if self._bar is not None:
            self._bar.update(n)
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            return
        now = time.monotonic()
        if now - self._printed_at >= self.every_s and self.done < self.total:
            self._printed_at = now
            self._emit(self.line())

    def _emit(self, text: str) -> None:
        if self._log is not None:
            self._log(text)
        else:
            print(text, file=self.stream, flush=True)

    def iterate(self, items: Iterable[T], sizes: Callable[[T], int] = lambda _: 1,
                ) -> Iterator[T]:
        """Yield ``items``, counting ``sizes(item)`` units after each."""
        for item in items:
            yield item
            self.update(sizes(item))

    def line(self) -> str:
        """The plain progress line."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.3g} {self.unit}/s"
        if 0 < self.done < self.total and rate > 0:
            text += f", ETA {_eta((self.total - self.done) / rate)}"
        elif self.done >= self.total:
            text += f", {_eta(elapsed)}"
        return text + (f"; {self.status}" if self.status else "")

    def write(self, message: str) -> None:
        """Print a message (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self._emit(message)

    def close(self) -> None:
        """End the bar (plain lines need no ending)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet_ray(verbose: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``ray.init`` that keep Ray's own INFO chatter out of a job's output.

    Ray Core's driver messages go to WARNING, the root logger of every task and actor of the
    job too, and Ray Data's logger (in the driver and, through the runtime environment, in
    every worker). Our own warnings (retries, a lost lease) still show.
    ``verbose`` returns Ray's defaults. Merge ``runtime_env`` with a job's own.
    """
    import logging
    import os

    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in log files
    if verbose:
        return {"runtime_env": {"env_vars": {}}}
    import ray

    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    # Ray Data configures its logger when it is first imported, which may have been before
    # this call (Ray Train imports it): set the driver's level directly too.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Notices that are not about this job: the local cluster's token authentication and the
    # progress bars we turn off ourselves. (The core worker's C++ notes stay: quieting them
    # through RAY_BACKEND_LOG_LEVEL makes every process print that it did.)
    for name in ("ray._private.authentication.authentication_token_setup",
                 "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Root loggers of the job's tasks and actors at WARNING (some Ray Train messages log to
    # a logger named after its file, outside "ray.train").
    return {"logging_level": logging.WARNING,
            "logging_config": ray.LoggingConfig(log_level="WARNING"),
            "runtime_env": {"env_vars": {"RAY_DATA_LOG_LEVEL": "WARNING"}}}
