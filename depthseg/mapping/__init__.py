"""Province-scale mapping: plan -> Ray Data stream (read -> predict -> write) -> finalise.

Entry point: :func:`map_region` (CLI: ``jobs/map_region.py``); see ``docs/MAPPING.md``.
"""

from depthseg.mapping.pipeline import map_region
from depthseg.mapping.plan import MapRequest, Plan, make_plan
from depthseg.mapping.predict import ChunkPrediction, ChunkPredictor
from depthseg.mapping.report import RunReport

__all__ = ["ChunkPrediction", "ChunkPredictor", "MapRequest", "Plan", "RunReport",
           "make_plan", "map_region"]
