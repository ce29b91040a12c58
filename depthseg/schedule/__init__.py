"""Scheduled, incremental regional mapping: regions file, due runs, run ledger.

Entry point: ``jobs/schedule.py``; see ``docs/SCHEDULING.md``.
"""

from depthseg.schedule.cadence import Due, is_due, last_fire, parse_time, run_id
from depthseg.schedule.incremental import RunPlan, RunResult, execute_run, plan_run
from depthseg.schedule.regions import Region, load_regions, parse_regions

__all__ = ["Due", "Region", "RunPlan", "RunResult", "execute_run", "is_due", "last_fire",
           "load_regions", "parse_regions", "parse_time", "plan_run", "run_id"]
