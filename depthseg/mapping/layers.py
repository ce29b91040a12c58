"""The three mapped layers of a chunk and their no-data values (numpy only, no torch).

Everything that writes or reads outputs (write stage, products, finaliser, scheduler) imports
these from here, so none of it loads the predict module and torch for two constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANDCOVER_NODATA = 255
CONFIDENCE_NODATA = 0
#: Per-class probability rasters (``--probabilities``): ``round(254 x p)``, 255 = no data.
PROBABILITY_SCALE = 254
PROBABILITY_NODATA = 255


@dataclass
class ChunkPrediction:
    """Outputs of one chunk, (row, col) arrays of the chunk size (halo cropped)."""

    landcover: np.ndarray
    confidence: np.ndarray
    depth: np.ndarray
    probabilities: np.ndarray | None = None  # (classes, row, col) uint8, when asked for
