"""Land-cover polygons (``--polygons``): GeoParquet, whole across chunk borders.

A polygon is a 4-connected region of one class (as ``gdal_polygonize`` draws it, pixel
edges as its boundary). Polygons are made in two places, neither of them the driver:

1. **Per chunk**, where the chunk is written (:func:`write_chunk`): the chunk's land cover is
   polygonised in *global pixel coordinates* (integers, so a border edge has the same
   coordinates seen from both sides) with each polygon's class, pixel count and summed
   confidence, and a flag for the polygons that touch the chunk's border. One file per
   chunk: ``<out>/vector/chunks/<chunk>.parquet``.
2. **At finalise** (:func:`finalize`), up a quadtree of chunks: level ``k`` joins blocks of
   ``2^k x 2^k`` chunks. A block's task reads the border polygons of its four children,
   unions the ones of one class that share an edge (union-find over an STRtree's pairs), and
   keeps as *pending* only what touches its own border (inside the grid); everything else is
   final. The top block finalises what is left. Tasks run as Ray tasks when Ray is up, each
   over a group of blocks; the driver only does arithmetic on the chunk ids.

Output: ``<out>/vector/landcover/`` is a GeoParquet 1.1 dataset (a folder of parquet files,
one per finalise task): ``geopandas.read_parquet(folder)``, ``ogr2ogr``, DuckDB
``'<folder>/*.parquet'``. Columns: ``class`` (uint8), ``class_name``, ``pixels``,
``area_m2``, ``confidence`` (the polygon's mean confidence, 0-1), ``geometry`` (WKB, the
output CRS) and a ``bbox`` covering column. Pixels outside the bbox or without imagery are
no data and are in no polygon.

Rewriting a chunk writes the same bytes; finalise rebuilds the dataset from the done chunks'
files each time (a resumed run's polygons equal a clean run's).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from depthseg.geo import ChunkId, OutputGrid
from depthseg.io.storage import Storage, join
from depthseg.mapping.layers import LANDCOVER_NODATA

VECTOR = "vector"
DATASET = "landcover"
#: Finalise tasks per quadtree level, at most (each writes one file of the dataset).
MAX_TASKS = 64


def chunk_uri(out: str, chunk: ChunkId) -> str:
    """Where one chunk's polygons (global pixel coordinates) live."""
    return join(out, VECTOR, "chunks", f"{chunk.key}.parquet")


def pending_uri(out: str, level: int, block: tuple[int, int]) -> str:
    """Where a block's polygons that still touch its border live."""
    return join(out, VECTOR, "pending", f"L{level}", f"r{block[0]}_c{block[1]}.parquet")


def dataset_uri(out: str) -> str:
    """The GeoParquet dataset folder of the run's polygons."""
    return join(out, VECTOR, DATASET)


# ------------------------------------------------------------------------------------------
# Per chunk


def polygonize(landcover: np.ndarray, confidence: np.ndarray, row0: int, col0: int,
               ) -> dict[str, np.ndarray]:
    """The 4-connected regions of one class in ``landcover`` as polygons.

    Coordinates are global pixel (column, row) corners: the window's top-left is
    (``col0``, ``row0``). Returns columns ``geometry`` (shapely polygons), ``class``,
    ``pixels`` and ``conf_sum`` (the sum of the region's uint8 confidence).
    """
    import shapely
    from rasterio.features import shapes
    from scipy import ndimage

    valid = landcover != LANDCOVER_NODATA
    labels = np.zeros(landcover.shape, dtype=np.int32)
    count = 0
    cross = ndimage.generate_binary_structure(2, 1)
    for value in np.unique(landcover[valid]):
        component, found = ndimage.label(landcover == value, structure=cross)
        inside = component > 0
        labels[inside] = component[inside] + count
        count += found
    flat = labels.ravel()
    classes = np.full(count + 1, LANDCOVER_NODATA, dtype=np.uint8)
    classes[flat] = landcover.ravel()
    pixels = np.bincount(flat, minlength=count + 1)
    conf_sum = np.bincount(flat, weights=confidence.ravel().astype(np.float64),
                           minlength=count + 1).round().astype(np.int64)
    ids, geometries = [], []
    from affine import Affine

    # Each label is one 4-connected region, so GDAL draws exactly one polygon per label.
    for geometry, value in shapes(labels, mask=valid, connectivity=4,
                                  transform=Affine(1.0, 0.0, col0, 0.0, 1.0, row0)):
        ids.append(int(value))
        rings = geometry["coordinates"]
        geometries.append(shapely.Polygon(rings[0], rings[1:]))
    index = np.asarray(ids, dtype=np.int64)
    return {"geometry": np.asarray(geometries, dtype=object).reshape(-1),
            "class": classes[index], "pixels": pixels[index].astype(np.int64),
            "conf_sum": conf_sum[index]}


def _table(columns: dict[str, np.ndarray], **extra: np.ndarray) -> Any:
    import pyarrow as pa
    import shapely

    return pa.table({"class": pa.array(columns["class"], pa.uint8()),
                     "pixels": pa.array(columns["pixels"], pa.int64()),
                     "conf_sum": pa.array(columns["conf_sum"], pa.int64()),
                     **{name: pa.array(values) for name, values in extra.items()},
                     "geometry": pa.array(shapely.to_wkb(columns["geometry"]), pa.binary())})


def _columns(table: Any) -> dict[str, np.ndarray]:
    import shapely

    return {"class": table["class"].to_numpy().astype(np.uint8),
            "pixels": table["pixels"].to_numpy().astype(np.int64),
            "conf_sum": table["conf_sum"].to_numpy().astype(np.int64),
            "geometry": shapely.from_wkb(np.asarray(table["geometry"].to_pylist(),
                                                    dtype=object))}


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _read(storage: Storage, uri: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(storage.read_bytes(uri)))


def write_chunk(out: str, storage: Storage, grid: OutputGrid, chunk: ChunkId,
                landcover: np.ndarray, confidence: np.ndarray) -> int:
    """Polygonise one chunk and write its file; returns how many polygons it holds."""
    import shapely

    size = grid.chunk_size
    row0, col0 = chunk.row * size, chunk.col * size
    columns = polygonize(landcover, confidence, row0, col0)
    bounds = shapely.bounds(columns["geometry"]).reshape(-1, 4)
    edge = ((bounds[:, 0] <= col0) | (bounds[:, 2] >= col0 + size)
            | (bounds[:, 1] <= row0) | (bounds[:, 3] >= row0 + size))
    storage.write_bytes_atomic(chunk_uri(out, chunk),
                               _parquet_bytes(_table(columns, edge=edge)))
    return len(edge)


# ------------------------------------------------------------------------------------------
# Finalise: merge up the quadtree


def merge(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Union the polygons of one class that share an edge (a shared corner does not join).

    Pixel counts and confidence sums add up.
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    geometries = columns["geometry"]
    n = len(geometries)
    if n < 2:
        return columns
    tree = shapely.STRtree(geometries)
    left, right = tree.query(geometries, predicate="intersects")
    pairs = (left < right) & (columns["class"][left] == columns["class"][right])
    left, right = left[pairs], right[pairs]
    # Regions of one class inside one chunk never share an edge (they would be one region):
    # a shared edge means the same region seen from two chunks.
    shared = shapely.length(shapely.intersection(geometries[left], geometries[right])) > 0
    left, right = left[shared], right[shared]
    if not len(left):
        return columns
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = np.argsort(component, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(component[order]) != 0])
    groups = np.split(order, starts[1:])
    merged = []
    for group in groups:
        if len(group) == 1:
            merged.append(geometries[group[0]])
        else:
            # Integer coordinates: the union is exact; drop the vertices the old border left.
            merged.append(shapely.simplify(shapely.union_all(geometries[group]), 0))
    first = np.array([g[0] for g in groups])
    return {"geometry": np.asarray(merged, dtype=object).reshape(-1),
            "class": columns["class"][first],
            "pixels": np.array([columns["pixels"][g].sum() for g in groups], dtype=np.int64),
            "conf_sum": np.array([columns["conf_sum"][g].sum() for g in groups],
                                 dtype=np.int64)}


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {"geometry": np.empty(0, dtype=object), "class": np.empty(0, np.uint8),
                "pixels": np.empty(0, np.int64), "conf_sum": np.empty(0, np.int64)}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _select(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[keep] for name, values in columns.items()}


def _touches_border(columns: dict[str, np.ndarray], grid: OutputGrid, level: int,
                    block: tuple[int, int]) -> np.ndarray:
    """Which polygons touch the block's border where another block lies (inside the grid)."""
    import shapely

    # Blocks count from the grid's first chunk (global ids may be negative).
    span = grid.chunk_size << level
    top = grid.chunk_rows.start * grid.chunk_size + block[0] * span
    left = grid.chunk_cols.start * grid.chunk_size + block[1] * span
    bottom, right = top + span, left + span
    grid_top, grid_left = grid.row_off, grid.col_off
    grid_bottom, grid_right = grid_top + grid.height, grid_left + grid.width
    minx, miny, maxx, maxy = shapely.bounds(columns["geometry"]).reshape(-1, 4).T
    return (((minx <= left) & (left > grid_left)) | ((maxx >= right) & (right < grid_right))
            | ((miny <= top) & (top > grid_top)) | ((maxy >= bottom) & (bottom < grid_bottom)))


def final_table(columns: dict[str, np.ndarray], grid: OutputGrid,
                class_names: Sequence[str]) -> Any:
    """Polygons in global pixel coordinates -> the GeoParquet table (output CRS)."""
    import pyarrow as pa
    import shapely

    res = grid.resolution

    def to_crs(coords: np.ndarray) -> np.ndarray:
        return np.stack([grid.phase_x + coords[:, 0] * res,
                         grid.phase_y - coords[:, 1] * res], axis=1)

    geometries = shapely.transform(columns["geometry"], to_crs)
    # Pixel rings run clockwise in (col, row); y flips, so orient rings the GeoJSON way.
    geometries = shapely.orient_polygons(geometries) if hasattr(
        shapely, "orient_polygons") else np.array([shapely.geometry.polygon.orient(g)
                                                  for g in geometries], dtype=object)
    boxes = shapely.bounds(geometries).reshape(-1, 4)
    names = np.asarray(list(class_names) + ["?"] * 256, dtype=object)
    pixels = columns["pixels"]
    return pa.table({
        "class": pa.array(columns["class"], pa.uint8()),
        "class_name": pa.array(names[columns["class"]].tolist(), pa.string()),
        "pixels": pa.array(pixels, pa.int64()),
        "area_m2": pa.array(pixels * res * res, pa.float64()),
        "confidence": pa.array(columns["conf_sum"] / np.maximum(pixels, 1) / 255.0,
                               pa.float32()),
        "geometry": pa.array(shapely.to_wkb(geometries), pa.binary()),
        "bbox": pa.StructArray.from_arrays([pa.array(boxes[:, k]) for k in range(4)],
                                           names=["xmin", "ymin", "xmax", "ymax"]),
    })


def geo_metadata(grid: OutputGrid) -> dict[str, Any]:
    """The GeoParquet 1.1 ``geo`` metadata of the dataset's files.

    The per-row ``bbox`` covering column stands in for a file bbox, which a file streamed
    block by block cannot know when it starts.
    """
    from pyproj import CRS

    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"],
        "crs": CRS.from_user_input(grid.crs).to_json_dict(), "edges": "planar",
        "covering": {"bbox": {"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
                              "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}}}}}


def merge_blocks(out: str, storage: Storage, grid: OutputGrid, class_names: Sequence[str],
                 level: int, blocks: list[tuple[tuple[int, int], list[Any]]], last: bool,
                 part: str) -> tuple[list[tuple[int, int]], bool]:
    """One finalise task: merge each block's children, write finals and pending polygons.

    Args:
        out: Output URI.
        storage: Storage settings.
        grid: The output grid.
        class_names: The bundle's class names.
        level: The quadtree level of ``blocks`` (1: blocks of 2 x 2 chunks).
        blocks: (block, children): at level 1 the children are the block's done chunks,
            above it the child blocks that left pending polygons.
        last: The top level: everything is final.
        part: Name of this task's file in the dataset.

    Returns:
        The blocks that left pending polygons, and whether a file of the dataset was written.
    """
    import pyarrow.parquet as pq

    from depthseg.io.storage import temp_dir

    pending_blocks: list[tuple[int, int]] = []
    with temp_dir("polygons") as tmp:
        local = tmp / f"{part}.parquet"
        writer: Any = None
        try:
            # One row group per block, streamed to a local file: a task holds one block.
            for block, children in blocks:
                finals, border = [], []
                for child in children:
                    if level == 1:
                        table = _read(storage, chunk_uri(out, child))
                        edge = table["edge"].to_numpy(zero_copy_only=False)
                        columns = _columns(table)
                        finals.append(_select(columns, ~edge))
                        border.append(_select(columns, edge))
                    else:
                        border.append(_columns(_read(storage, pending_uri(out, level - 1,
                                                                          child))))
                joined = merge(_concat(border))
                if not last:
                    touching = _touches_border(joined, grid, level, block)
                    if touching.any():
                        storage.write_bytes_atomic(
                            pending_uri(out, level, block),
                            _parquet_bytes(_table(_select(joined, touching))))
                        pending_blocks.append(block)
                    joined = _select(joined, ~touching)
                finals.append(joined)
                table = final_table(_concat(finals), grid, class_names)
                if not table.num_rows:
                    continue
                if writer is None:
                    metadata = {b"geo": json.dumps(geo_metadata(grid)).encode()}
                    writer = pq.ParquetWriter(local, table.schema.with_metadata(metadata),
                                              compression="zstd")
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            storage.upload(local, join(dataset_uri(out), f"{part}.parquet"))
    return pending_blocks, writer is not None


def _groups(items: list[Any], tasks: int) -> Iterable[list[Any]]:
    size = -(-len(items) // max(1, tasks))
    for start in range(0, len(items), size):
        yield items[start:start + size]


def finalize(out: str, storage: Storage, grid: OutputGrid, chunks: Sequence[ChunkId],
             class_names: Sequence[str]) -> int:
    """Build ``<out>/vector/landcover/`` from the done ``chunks``' polygon files.

    Returns the number of files in the dataset.
    """
    import ray

    storage.remove_tree(dataset_uri(out))
    storage.remove_tree(join(out, VECTOR, "pending"))
    if not chunks:
        return 0
    use_ray = ray.is_initialized()
    remote = ray.remote(num_cpus=1)(merge_blocks) if use_ray else None
    tasks = MAX_TASKS
    if use_ray:
        tasks = max(1, min(MAX_TASKS, 2 * int(ray.cluster_resources().get("CPU", 1))))
    # Blocks count from the grid's first chunk: ids >= 0, so halving them reaches one block.
    rows = np.array([c.row for c in chunks], dtype=np.int64) - grid.chunk_rows.start
    cols = np.array([c.col for c in chunks], dtype=np.int64) - grid.chunk_cols.start
    # Level 1 children: the done chunks of each 2 x 2 block.
    children: dict[tuple[int, int], list[Any]] = {}
    for chunk, br, bc in zip(chunks, (rows >> 1).tolist(), (cols >> 1).tolist(), strict=True):
        children.setdefault((br, bc), []).append(chunk)
    level, files = 1, 0
    while children:
        last = len(children) == 1
        blocks = sorted(children.items())
        calls = [(out, storage, grid, tuple(class_names), level, group, last,
                  f"L{level:02d}-{k:03d}") for k, group in enumerate(_groups(blocks, tasks))]
        if remote is not None:
            results = ray.get([remote.remote(*call) for call in calls])
        else:
            results = [merge_blocks(*call) for call in calls]
        files += sum(wrote for _, wrote in results)
        pending = [block for blocks, _ in results for block in blocks]
        children = {}
        for block in pending:
            children.setdefault((block[0] >> 1, block[1] >> 1), []).append(block)
        if last:
            break
        level += 1
    storage.remove_tree(join(out, VECTOR, "pending"))
    return files
