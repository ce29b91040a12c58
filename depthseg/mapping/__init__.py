"""Province-scale mapping: plan -> Ray Data stream (read -> predict -> write) -> finalise.

Entry point: :func:`map_region` (CLI: ``jobs/map_region.py``); see ``docs/MAPPING.md``.

Names are imported on first use (PEP 562), so ``depthseg.mapping.predict`` loads without the
I/O stack (GDAL, Zarr, Ray) on a bare GPU box (``jobs/bench_model.py --predict-stage``).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depthseg.mapping.pipeline import map_region
    from depthseg.mapping.plan import MapRequest, Plan, make_plan
    from depthseg.mapping.predict import ChunkPrediction, ChunkPredictor
    from depthseg.mapping.report import RunReport

_WHERE = {"map_region": "pipeline", "MapRequest": "plan", "Plan": "plan", "make_plan": "plan",
          "ChunkPrediction": "predict", "ChunkPredictor": "predict", "RunReport": "report"}

__all__ = ["ChunkPrediction", "ChunkPredictor", "MapRequest", "Plan", "RunReport",
           "make_plan", "map_region"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"depthseg.mapping.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'depthseg.mapping' has no attribute {name!r}")
