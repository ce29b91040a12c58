"""Progress: a bar with an ETA on a terminal, plain periodic lines in a log."""

from __future__ import annotations

import io
import re
import time

from depthseg.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_in_a_log_say_count_rate_and_eta() -> None:
    lines: list[str] = []
    progress = Progress(10, "map", "chunks", every_s=0.05, log=lines.append)
    for _ in range(4):
        time.sleep(0.06)
        progress.update(1, status="0 failed")
    progress.write("chunk r1_c2 FAILED (bad scene)")
    progress.close()
    assert lines[-1] == "chunk r1_c2 FAILED (bad scene)"
    assert re.fullmatch(r"map: 4/10 chunks \(40%\), [\d.]+ chunks/s, ETA 0m\d\ds; 0 failed",
                        lines[-2]), lines
    # No carriage returns or bar characters in a log.
    assert not any("\r" in line or "|" in line for line in lines)


def test_a_short_job_prints_no_progress_line() -> None:
    lines: list[str] = []
    with Progress(3, "evaluate", "chips", log=lines.append) as progress:
        for _ in progress.iterate(range(3)):
            pass
    assert lines == [] and progress.done == 3


def test_a_terminal_gets_a_bar_with_eta() -> None:
    terminal = _Terminal()
    with Progress(5, "prepare", "chips", stream=terminal) as progress:
        progress.update(2)
        progress.write("note")
        progress.update(3)
    text = terminal.getvalue()
    assert progress.tty and "prepare" in text and "5/5" in text and "\r" in text
    assert "note" in text
