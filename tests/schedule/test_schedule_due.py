"""Due decisions: the last cron fire at or before --now against the last complete run."""

from __future__ import annotations

import pytest

from depthseg.schedule.cadence import is_due, last_fire, parse_time, run_id


def t(text: str):  # noqa: ANN201
    return parse_time(text)


@pytest.mark.parametrize(("schedule", "now", "fire"), [
    ("0 2 * * *", "2026-11-28T03:00:00Z", "2026-11-28T02:00:00Z"),
    ("0 2 * * *", "2026-11-28T02:00:00Z", "2026-11-28T02:00:00Z"),  # a fire at now counts
    ("0 2 * * *", "2026-11-28T01:59:59.9Z", "2026-11-27T02:00:00Z"),
    ("*/15 * * * *", "2026-11-28T10:44:10Z", "2026-11-28T10:30:00Z"),
    ("0 6 * * 1", "2026-11-28T12:00:00Z", "2026-11-23T06:00:00Z"),  # Mondays; 28th = Saturday
    ("30 4 1 * *", "2026-11-28T12:00:00Z", "2026-11-01T04:30:00Z"),
    ("0 0 1 1 *", "2026-11-28T12:00:00Z", "2026-01-01T00:00:00Z"),
    ("0 2 * * *", "2026-11-28T10:00:00+08:00", "2026-11-28T02:00:00Z"),  # 02:00 UTC
])
def test_last_fire(schedule: str, now: str, fire: str) -> None:
    assert last_fire(schedule, t(now)) == t(fire)


def test_due_rule() -> None:
    daily = "0 2 * * *"
    never = is_due(daily, None, t("2026-11-28T03:00:00Z"))
    assert never.due and never.run_id == "20261128T020000Z"
    # Ran for today's 02:00: not due again until tomorrow's.
    ran = t("2026-11-28T02:00:00Z")
    assert not is_due(daily, ran, t("2026-11-28T23:59:00Z")).due
    assert is_due(daily, ran, t("2026-11-29T02:00:00Z")).due
    # Missed days run once, for the latest fire time only.
    late = is_due(daily, t("2026-11-20T02:00:00Z"), t("2026-11-28T03:00:00Z"))
    assert late.due and late.fire == ran
    # A last run later than the fire (e.g. cadence changed) is not due.
    assert not is_due("0 0 * * 0", t("2026-11-28T02:00:00Z"), t("2026-11-28T03:00:00Z")).due
    assert run_id(t("2026-01-02T03:04:05Z")) == "20260102T030405Z"
    assert parse_time("2026-11-28T02:00:00") == ran  # naive = UTC
