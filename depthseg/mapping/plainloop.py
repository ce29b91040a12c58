"""A plain inference loop over a region, written the way a TorchGeo user writes one.

The baseline of ``jobs/bench.py`` (not our product): one region-wide sliding-window sampler
(stride ``tile - overlap``, the last window shifted inward to end at the region's edge, like
TorchGeo's ``GridGeoSampler``), a ``Dataset`` that reads each window from every GeoTIFF of the
imagery folder that meets it (``rasterio.merge.merge``, first valid pixel wins, files opened
once per worker process, like TorchGeo's ``RasterDataset``), a ``DataLoader``, the bundle's
model (bf16 autocast on CUDA, as the pipeline runs it), logits averaged into a region-sized
sum and count, and the argmax written to one GeoTIFF::

    python -m depthseg.mapping.plainloop --imagery DIR --model BUNDLE --bounds MINX MINY MAXX \
        MAXY --tile 518 --overlap 64 --batch-size 8 --num-workers 1 --out map.tif --json t.json

Bounds are in the CRS of the first GeoTIFF (sorted by name), whose resolution the output
takes; files in another CRS are warped to it. ``--json`` gets epoch times (``start``, taken
before the heavy imports, ``first_batch_done``, ``last_batch_done``, ``end``) and the counts
``tiles``, ``batches``, ``first_batch_tiles``.
"""

# ruff: noqa: E402
import time

START = time.time()  # before the heavy imports: end to end includes imports and model load

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.merge
import torch
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from torch.utils.data import DataLoader, Dataset

from depthseg.geo.tiles import lattice_overlap
from depthseg.io.bundle import load_bundle
from depthseg.mapping.predict import inference_autocast
from depthseg.mapping.request import BATCH_SIZE, PRECISIONS
from depthseg.model import normalize


def window_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: ``0, stride, ...``, the last one ending at ``length``."""
    if length <= tile:
        return [0]
    return [min(i * stride, length - tile) for i in range(math.ceil((length - tile) / stride) + 1)]


class RegionWindows(Dataset[torch.Tensor]):
    """The square windows of one sliding-window sampler over ``bounds``, as raw band values."""

    def __init__(self, imagery: str, bounds: tuple[float, float, float, float], tile: int,
                 stride: int, bands: tuple[int, ...]) -> None:
        self.files = sorted(str(p) for p in Path(imagery).iterdir()
                            if p.suffix.lower() in (".tif", ".tiff"))
        if not self.files:
            raise SystemExit(f"no GeoTIFF in {imagery}")
        with rasterio.open(self.files[0]) as first:
            self.crs, self.res, self.dtype = first.crs, first.res[0], first.dtypes[0]
        self.footprints = []
        for path in self.files:
            with rasterio.open(path) as src:
                self.footprints.append(transform_bounds(src.crs, self.crs, *src.bounds))
        minx, miny, maxx, maxy = bounds
        self.width = round((maxx - minx) / self.res)
        self.height = round((maxy - miny) / self.res)
        self.transform = from_origin(minx, maxy, self.res, self.res)
        self.windows = [(r, c) for r in window_offsets(self.height, tile, stride)
                        for c in window_offsets(self.width, tile, stride)]
        self.tile, self.bands = tile, list(bands)
        self._open_files: dict[str, rasterio.io.DatasetReaderBase] = {}
        self._pid = -1

    def _open(self, path: str) -> rasterio.io.DatasetReaderBase:
        if self._pid != os.getpid():  # one cache per worker process
            self._open_files, self._pid = {}, os.getpid()
        if path not in self._open_files:
            src = rasterio.open(path)
            self._open_files[path] = src if src.crs == self.crs else WarpedVRT(src, crs=self.crs)
        return self._open_files[path]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        row, col = self.windows[index]
        size = self.tile * self.res
        left, top = self.transform * (col, row)
        box = (left, top - size, left + size, top)
        meeting = [self._open(path)
                   for path, (x0, y0, x1, y1) in zip(self.files, self.footprints, strict=True)
                   if x0 < box[2] and x1 > box[0] and y0 < box[3] and y1 > box[1]]
        if not meeting:
            return torch.zeros((len(self.bands), self.tile, self.tile),
                               dtype=getattr(torch, self.dtype))
        pixels, _ = rasterio.merge.merge(meeting, bounds=box, res=self.res, indexes=self.bands)
        return torch.from_numpy(np.ascontiguousarray(pixels[:, :self.tile, :self.tile]))


def main(argv: list[str] | None = None) -> int:
    """Map the region with the plain loop; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagery", required=True, help="folder of GeoTIFFs")
    parser.add_argument("--model", required=True, help="model bundle folder")
    parser.add_argument("--bounds", type=float, nargs=4, required=True,
                        metavar=("MINX", "MINY", "MAXX", "MAXY"))
    parser.add_argument("--tile", type=int, default=None,
                        help="default: the bundle's tile size, as the pipeline")
    parser.add_argument("--overlap", type=int, default=None,
                        help="default: the pipeline's for the tile (lattice_overlap)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--out", required=True, help="output GeoTIFF")
    parser.add_argument("--json", default=None, help="write the times here")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="as map_region's --precision (auto: bf16 on CUDA, fp32 on CPU)")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.model)
    contract = bundle.contract
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = bundle.model.to(device).eval()
    tile = args.tile or contract.tile_size
    overlap = lattice_overlap(tile) if args.overlap is None else args.overlap
    data = RegionWindows(args.imagery, tuple(args.bounds), tile, tile - overlap,
                         contract.band_indices)
    loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.num_workers)
    sums = np.zeros((len(contract.class_names), data.height, data.width), dtype=np.float32)
    counts = np.zeros((data.height, data.width), dtype=np.float32)
    times: dict[str, float] = {"start": START}
    done = batches = first_batch_tiles = 0
    with torch.inference_mode(), inference_autocast(args.precision, device):
        for images in loader:
            inputs = normalize(images.to(device), contract.mean, contract.std)
            logits = model(inputs).logits.float().cpu().numpy()
            placed = data.windows[done:done + len(logits)]
            for tile_logits, (row, col) in zip(logits, placed, strict=True):
                rows, cols = min(tile, data.height - row), min(tile, data.width - col)
                sums[:, row:row + rows, col:col + cols] += tile_logits[:, :rows, :cols]
                counts[row:row + rows, col:col + cols] += 1
            done, batches = done + len(logits), batches + 1
            times["last_batch_done"] = time.time()
            if batches == 1:
                times["first_batch_done"], first_batch_tiles = times["last_batch_done"], done
    sums /= np.maximum(counts, 1)
    profile = {"driver": "GTiff", "height": data.height, "width": data.width, "count": 1,
               "dtype": "uint8", "crs": data.crs, "transform": data.transform, "tiled": True,
               "compress": "deflate"}
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(sums.argmax(0).astype(np.uint8), 1)
    times["end"] = time.time()
    if args.json:
        Path(args.json).write_text(json.dumps({**times, "tiles": done, "batches": batches,
                                               "first_batch_tiles": first_batch_tiles},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
