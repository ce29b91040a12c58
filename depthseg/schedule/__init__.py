"""Scheduled, incremental regional mapping: regions file, due runs, run ledger.

Entry point: ``jobs/schedule.py``; see ``docs/SCHEDULING.md``.

Names are imported on first use (PEP 562), as in :mod:`depthseg.geo`: importing the package
(or :mod:`~depthseg.schedule.cadence`, to ask whether a region is due) loads neither the
mapping pipeline nor torch. The regions file still does, through the mapping plan and the
model bundle's contract.
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.schedule.cadence import Due, is_due, last_fire, parse_time, run_id
    from depthseg.schedule.incremental import RunPlan, RunResult, execute_run, plan_run
    from depthseg.schedule.regions import Region, load_regions, parse_regions

_WHERE = {
    "Due": "cadence", "is_due": "cadence", "last_fire": "cadence", "parse_time": "cadence",
    "run_id": "cadence",
    "RunPlan": "incremental", "RunResult": "incremental", "execute_run": "incremental",
    "plan_run": "incremental",
    "Region": "regions", "load_regions": "regions", "parse_regions": "regions",
}

__all__ = ["Due", "Region", "RunPlan", "RunResult", "execute_run", "is_due", "last_fire",
           "load_regions", "parse_regions", "parse_time", "plan_run", "run_id"]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
