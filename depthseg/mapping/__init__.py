"""Province-scale mapping: plan -> Ray Data stream (read -> predict -> write) -> finalise.

Entry point: :func:`map_region` (CLI: ``jobs/map_region.py``); see ``docs/MAPPING.md``.

Names are imported on first use (PEP 562), so ``depthseg.mapping.predict`` loads without the
I/O stack (GDAL, Zarr, Ray) on a bare GPU box (``jobs/bench_model.py --predict-stage``).
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.mapping.pipeline import map_region
    from depthseg.mapping.plan import Plan, make_plan
    from depthseg.mapping.predict import ChunkPrediction, ChunkPredictor
    from depthseg.mapping.report import RunReport
    from depthseg.mapping.request import MapRequest

_WHERE = {"map_region": "pipeline", "MapRequest": "request", "Plan": "plan", "make_plan": "plan",
          "ChunkPrediction": "predict", "ChunkPredictor": "predict", "RunReport": "report"}

__all__ = ["ChunkPrediction", "ChunkPredictor", "MapRequest", "Plan", "RunReport",
           "make_plan", "map_region"]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
