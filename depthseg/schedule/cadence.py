"""When a region is due: its cron cadence (UTC) against the time of its last complete run.

A region is due at ``now`` when the most recent fire time of its cron expression at or before
``now`` is later than the ``scheduled_for`` time of its last complete run, or when it has never
completed a run. A failed run does not move ``latest``, so the region stays due and the next
invocation retries the same fire time (and resumes its run folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from depthseg.errors import InputError

RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (naive times are taken as UTC).

    Raises:
        InputError: Not an ISO time.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise InputError(f"time {text!r} is not an ISO 8601 time; expected e.g. "
                         "2026-11-28T02:00:00Z") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_time(moment: datetime) -> str:
    """``2026-11-28T02:00:00Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_id(fire: datetime) -> str:
    """The run id of a fire time: ``20261128T020000Z``."""
    return fire.astimezone(timezone.utc).strftime(RUN_ID_FORMAT)


def last_fire(schedule: str, now: datetime) -> datetime:
    """The most recent fire time of ``schedule`` at or before ``now`` (UTC)."""
    from croniter import croniter

    # Cron fires on whole minutes: the last fire strictly before (now, truncated) + 1 s is the
    # last one at or before now.
    start = now.astimezone(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    fire = croniter(schedule, start).get_prev(datetime)
    return fire.astimezone(timezone.utc)


@dataclass(frozen=True)
class Due:
    """The due decision for one region.

    Attributes:
        due: Whether a run should happen now.
        fire: The most recent fire time at or before now (the run's ``scheduled_for``).
        last: ``scheduled_for`` of the last complete run, None if there is none.
    """

    due: bool
    fire: datetime
    last: datetime | None

    @property
    def run_id(self) -> str:
        """Run id of the fire time."""
        return run_id(self.fire)


def is_due(schedule: str, last_complete: datetime | None, now: datetime) -> Due:
    """Decide whether a region with ``schedule`` is due at ``now``."""
    fire = last_fire(schedule, now)
    return Due(due=last_complete is None or fire > last_complete, fire=fire, last=last_complete)
