"""The output grid of a mapping run and its chunks: pure maths, no I/O.

Every run shares one *global* pixel grid per (CRS, resolution, phase): its origin is the CRS
origin shifted by the *phase* ``(phase_x, phase_y)`` (each in ``[0, resolution)``), pixels are
``resolution`` metres square, north up, so global pixel (row, col) has its top-left corner at
``x = phase_x + col * resolution``, ``y = phase_y - row * resolution`` (rows grow southwards,
so rows north of the origin are negative). The phase is 0 unless the imagery has its own:
imagery in the output CRS and resolution gives the grid its pixel phase, so output pixel edges
are the image's pixel edges and no pixel is resampled (a 30 m Landsat scene is not shifted by
half a pixel onto a grid through x=0). Chunks are ``chunk_size`` x
``chunk_size`` blocks of that global grid, and ``ChunkId(row, col)`` holds *global* chunk
indices. A run's :class:`OutputGrid` is a rectangle of whole chunks, so two runs over
overlapping or neighbouring regions give the same chunk the same id and the same pixels: their
mosaics line up exactly and a chunk can be resumed or re-mapped on its own.

The grid is this module's own maths, not odc-geo's ``GridSpec``: what it must guarantee is
that every run computes bit-identical coordinates from integer global indices and a
sub-pixel phase, and that chunk ids are exact integers (resume, incremental runs and
neighbouring runs depend on both). pyproj and shapely do the geodesy. odc-geo is optional
interop (``pip install 'depthseg[odc]'``): :meth:`OutputGrid.geobox`,
:meth:`OutputGrid.chunk_geobox` and :meth:`OutputGrid.from_geobox` hand grids to and from
odc-stac/xarray code, and odc-geo geometries are accepted as footprints; nothing in the
pipeline needs it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from depthseg.errors import InputError
from depthseg.geo.tiles import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox

Bounds: TypeAlias = tuple[float, float, float, float]
"""(minx, miny, maxx, maxy) in CRS units, the order of shapely and rasterio."""

Footprint: TypeAlias = BaseGeometry | Sequence[float] | Any
"""A shapely geometry, an odc-geo geometry (reprojected if it has another CRS) or bounds."""


# Snapping tolerance in chunks: a bbox edge on a chunk boundary up to float noise must not pull
# in a whole extra row of chunks (1e-9 chunk is micrometres).
_SNAP_EPS = 1e-9


class PixelWindow(NamedTuple):
    """A window of pixels: offsets relative to some grid's top-left, sizes in pixels."""

    row_off: int
    col_off: int
    height: int
    width: int


@dataclass(frozen=True, order=True)
class ChunkId:
    """Global chunk indices: the chunk covers global pixel rows ``row * chunk_size`` onwards.

    Ids do not depend on the bbox of a run, only on the CRS, resolution and chunk size.
    """

    row: int
    col: int

    @property
    def key(self) -> str:
        """A stable name for storage keys and done markers, e.g. ``r-1646_c284``."""
        return f"r{self.row}_c{self.col}"

    @classmethod
    def parse(cls, key: str) -> ChunkId:
        """Inverse of :attr:`key`."""
        match = re.fullmatch(r"r(-?\d+)_c(-?\d+)", key)
        if match is None:
            raise InputError(f"chunk key {key!r} is not of the form r<ROW>_c<COL>; "
                             "give e.g. 'r-1646_c284'")
        return cls(row=int(match[1]), col=int(match[2]))


def parse_crs(crs: str | CRS, *, what: str = "crs") -> CRS:
    """Parse a user CRS string, turning pyproj's error into a one-line InputError."""
    try:
        return CRS.from_user_input(crs)
    except CRSError:
        raise InputError(
            f"{what} {crs!r} is not a CRS pyproj understands; give e.g. 'EPSG:32649' or 'auto'"
        ) from None


def _projected_metre_crs(crs: str | CRS) -> CRS:
    # Resolution and chunk span are metres, so the output CRS must be projected in metres.
    parsed = parse_crs(crs)
    if not parsed.is_projected or parsed.axis_info[0].unit_name not in ("metre", "meter"):
        raise InputError(
            f"output crs {crs!r} is not a projected CRS in metres (resolution is in metres); "
            "give a UTM CRS such as 'EPSG:32649', or 'auto'"
        )
    return parsed


def _check_sizes(resolution: float, chunk_size: int) -> None:
    if not (math.isfinite(resolution) and resolution > 0):
        raise InputError(f"resolution {resolution} is not a positive number of metres; "
                         "give e.g. --resolution 0.8")
    if chunk_size <= 0:
        raise InputError(f"chunk_size {chunk_size} must be positive; give e.g. 2048")


def _coord(value: float) -> float:
    # Products like 3332 * 0.8 carry float noise (2665.6000000000004); rounding to nanometres
    # gives the decimal value other tools compute, and + 0.0 turns -0.0 into 0.0.
    return round(value, 9) + 0.0


def _check_bbox(bbox: Sequence[float], bbox_crs: CRS) -> Bounds:
    if len(bbox) != 4:
        raise InputError(f"bbox {tuple(bbox)} has {len(bbox)} numbers; give MINX MINY MAXX MAXY")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    shown = "(" + ", ".join(f"{v:g}" for v in (minx, miny, maxx, maxy)) + ")"
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InputError(f"bbox {shown} has a non-finite value; give four finite numbers")
    for axis, low, high in (("x", minx, maxx), ("y", miny, maxy)):
        if low >= high:
            raise InputError(f"bbox {shown} has min {axis} {low:g} >= max {axis} {high:g}; "
                             "give MINX MINY MAXX MAXY")
    if bbox_crs.is_geographic and not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
        raise InputError(f"bbox {shown} is outside lon [-180, 180] / lat [-90, 90]; give lon "
                         "first (MINLON MINLAT MAXLON MAXLAT), or --bbox-crs if not in degrees")
    return minx, miny, maxx, maxy


def auto_crs(bbox_lonlat: Sequence[float]) -> str:
    """The WGS 84 UTM zone of the bbox centre, for ``--crs auto``.

    Uses the regular 6-degree zones (no Norway/Svalbard exceptions), so the answer depends on
    the centre longitude and the hemisphere only.

    Args:
        bbox_lonlat: (min lon, min lat, max lon, max lat) in degrees.

    Returns:
        ``"EPSG:326ZZ"`` north of the equator, ``"EPSG:327ZZ"`` south of it.
    """
    minx, miny, maxx, maxy = _check_bbox(bbox_lonlat, CRS.from_epsg(4326))
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    zone = min(int((lon + 180) // 6) + 1, 60)  # lon = 180 belongs to zone 60, not 61
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


@dataclass(frozen=True)
class OutputGrid:
    """A rectangle of whole chunks of the global grid: the extent of one run's mosaics.

    Attributes:
        crs: Projected CRS in metres, normalised like ``"EPSG:32649"``.
        resolution: Pixel size in metres (square pixels, north up).
        chunk_size: Chunk side in pixels.
        row_off: Global pixel row of the grid's top edge (a multiple of ``chunk_size``).
        col_off: Global pixel column of the grid's left edge (a multiple of ``chunk_size``).
        height: Rows of the grid (a positive multiple of ``chunk_size``).
        width: Columns of the grid (a positive multiple of ``chunk_size``).
        chunk_size: Chunk side in pixels.
        phase_x: x of the global grid's origin, in ``[0, resolution)`` metres.
        phase_y: y of the global grid's origin, in ``[0, resolution)`` metres.
    """

    crs: str
    resolution: float
    row_off: int
    col_off: int
    height: int
    width: int
    chunk_size: int = DEFAULT_CHUNK_SIZE
    phase_x: float = 0.0
    phase_y: float = 0.0

    def __post_init__(self) -> None:
        _projected_metre_crs(self.crs)
        _check_sizes(self.resolution, self.chunk_size)
        for name in ("phase_x", "phase_y"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < self.resolution):
                raise InputError(f"grid {name} {value} is outside [0, resolution "
                                 f"{self.resolution}); build grids with plan_grid()")
        for name in ("row_off", "col_off", "height", "width"):
            if getattr(self, name) % self.chunk_size:
                raise InputError(f"grid {name} {getattr(self, name)} is not a multiple of "
                                 f"chunk_size {self.chunk_size}; build grids with plan_grid()")
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"grid shape {self.shape} is empty; give a bbox with an area")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return self.height, self.width

    @property
    def transform(self) -> Affine:
        """Affine of the grid's top-left pixel corner (pixel (row, col) -> CRS x, y)."""
        return self.window_transform(PixelWindow(0, 0, self.height, self.width))

    @property
    def bounds(self) -> Bounds:
        """(minx, miny, maxx, maxy) of the whole grid."""
        return self.window_bounds(PixelWindow(0, 0, self.height, self.width))

    @property
    def chunk_rows(self) -> range:
        """Global chunk rows of the grid, top to bottom."""
        first = self.row_off // self.chunk_size
        return range(first, first + self.height // self.chunk_size)

    @property
    def chunk_cols(self) -> range:
        """Global chunk columns of the grid, left to right."""
        first = self.col_off // self.chunk_size
        return range(first, first + self.width // self.chunk_size)

    def geobox(self) -> GeoBox:
        """The grid as an odc-geo GeoBox (shape is (rows, cols)); needs odc-geo installed."""
        return self.window_geobox(PixelWindow(0, 0, self.height, self.width))

    @classmethod
    def from_geobox(cls, geobox: GeoBox, chunk_size: int = DEFAULT_CHUNK_SIZE,
                    phase: tuple[float, float] = (0.0, 0.0)) -> OutputGrid:
        """Inverse of :meth:`geobox`; the GeoBox must sit on whole chunks of the global grid."""
        a, res = geobox.affine, geobox.affine.a
        phase_x, phase_y = phase
        col_off, row_off = ((round((a.c - phase_x) / res), round((phase_y - a.f) / res))
                            if res > 0 else (0, 0))
        # Alignment is checked to a millionth of a pixel: anything looser would silently shift
        # the mosaic against neighbouring runs.
        aligned = (res > 0 and a.b == 0 and a.d == 0 and math.isclose(a.e, -res)
                   and abs(a.c - phase_x - col_off * res) <= 1e-6 * res
                   and abs(phase_y - a.f - row_off * res) <= 1e-6 * res)
        if not aligned:
            raise InputError(
                f"geobox transform {tuple(a)[:6]} is not north-up on the global grid "
                f"(origin at x={phase_x}, y={phase_y}, square pixels); build it with "
                "OutputGrid.geobox()"
            )
        height, width = geobox.shape.yx
        return cls(str(geobox.crs), res, row_off, col_off, height, width, chunk_size,
                   phase_x, phase_y)

    # Windows are relative to this grid's top-left and may reach outside it (halos).
    def window_transform(self, window: PixelWindow) -> Affine:
        """Affine of a window's top-left corner; the window may reach outside the grid (halo)."""
        res = self.resolution
        # From integer global pixel indices, so every run computes bit-identical coordinates.
        x_left = _coord(self.phase_x + (self.col_off + window.col_off) * res)
        y_top = _coord(self.phase_y - (self.row_off + window.row_off) * res)
        return Affine(res, 0.0, x_left, 0.0, -res, y_top)

    def pixel_window(self, bounds: Bounds) -> PixelWindow:
        """The grid pixels that ``bounds`` (grid CRS) touch, clipped to the grid."""
        minx, miny, maxx, maxy = bounds
        res, (left, _, _, top) = self.resolution, self.bounds
        col0 = max(0, math.floor((minx - left) / res + _SNAP_EPS))
        col1 = min(self.width, math.ceil((maxx - left) / res - _SNAP_EPS))
        row0 = max(0, math.floor((top - maxy) / res + _SNAP_EPS))
        row1 = min(self.height, math.ceil((top - miny) / res - _SNAP_EPS))
        return PixelWindow(row0, col0, max(0, row1 - row0), max(0, col1 - col0))

    def window_bounds(self, window: PixelWindow) -> Bounds:
        """(minx, miny, maxx, maxy) of a window."""
        res = self.resolution
        row_top, col_left = self.row_off + window.row_off, self.col_off + window.col_off
        row_bottom, col_right = row_top + window.height, col_left + window.width
        px, py = self.phase_x, self.phase_y
        return (_coord(px + col_left * res), _coord(py - row_bottom * res),
                _coord(px + col_right * res), _coord(py - row_top * res))

    def window_geobox(self, window: PixelWindow) -> GeoBox:
        """A window (e.g. chunk + halo) as an odc-geo GeoBox (e.g. for ``odc.stac.load``)."""
        return _geobox_class()((window.height, window.width), self.window_transform(window),
                               self.crs)

    def chunks(self) -> list[ChunkId]:
        """All chunks of the grid, row-major (top row first, left to right)."""
        return [ChunkId(row, col) for row in self.chunk_rows for col in self.chunk_cols]

    def __contains__(self, chunk: object) -> bool:
        rows, cols = self.chunk_rows, self.chunk_cols
        return isinstance(chunk, ChunkId) and chunk.row in rows and chunk.col in cols

    def chunk_window(self, chunk: ChunkId) -> PixelWindow:
        """The chunk's pixels, relative to the grid's top-left."""
        if chunk not in self:
            rows, cols = self.chunk_rows, self.chunk_cols
            raise InputError(f"chunk {chunk.key} is outside this grid (chunk rows {rows.start}.."
                             f"{rows.stop - 1}, cols {cols.start}..{cols.stop - 1}); plan the "
                             "grid over a bbox that covers it")
        size = self.chunk_size
        return PixelWindow(chunk.row * size - self.row_off, chunk.col * size - self.col_off,
                           height=size, width=size)

    def chunk_transform(self, chunk: ChunkId) -> Affine:
        """Affine of the chunk's top-left corner."""
        return self.window_transform(self.chunk_window(chunk))

    def chunk_bounds(self, chunk: ChunkId) -> Bounds:
        """(minx, miny, maxx, maxy) of the chunk."""
        return self.window_bounds(self.chunk_window(chunk))

    def chunk_geobox(self, chunk: ChunkId) -> GeoBox:
        """The chunk as an odc-geo GeoBox."""
        return self.window_geobox(self.chunk_window(chunk))

    def chunks_intersecting(self, footprints: Footprint | Iterable[Footprint]) -> list[ChunkId]:
        """Chunks whose interior meets the interior of any footprint, row-major.

        A footprint that only touches a chunk's edge contributes no pixel to it, so that chunk
        is not returned.

        Args:
            footprints: One footprint or an iterable of them, in the grid CRS unless they are
                odc-geo geometries that carry their own CRS. Bounds are (minx, miny, maxx, maxy).
        """
        span = self.chunk_size * self.resolution
        found: set[ChunkId] = set()
        for shape in self._as_shapes(footprints):
            if shape.is_empty:
                continue
            minx, miny, maxx, maxy = shape.bounds
            px, py = self.phase_x, self.phase_y
            rows = range(max(math.floor((py - maxy) / span), self.chunk_rows.start),
                         min(math.floor((py - miny) / span) + 1, self.chunk_rows.stop))
            cols = range(max(math.floor((minx - px) / span), self.chunk_cols.start),
                         min(math.floor((maxx - px) / span) + 1, self.chunk_cols.stop))
            if not rows or not cols:
                continue
            row_idx, col_idx = np.meshgrid(np.array(rows), np.array(cols), indexing="ij")
            row_idx, col_idx = row_idx.ravel(), col_idx.ravel()
            boxes = shapely.box(px + col_idx * span, py - (row_idx + 1) * span,
                                px + (col_idx + 1) * span, py - row_idx * span)
            hits = shapely.relate_pattern(shape, boxes, "T********")  # interiors intersect
            found.update(map(ChunkId, row_idx[hits].tolist(), col_idx[hits].tolist()))
        return sorted(found)

    def _as_shapes(self, footprints: Any) -> list[BaseGeometry]:
        if _is_bounds(footprints) or _is_geometry(footprints):
            footprints = [footprints]
        shapes = []
        for item in footprints:
            if isinstance(item, BaseGeometry):
                shapes.append(item)
            elif _is_geometry(item):  # an odc-geo Geometry: shapely inside, its own CRS
                crs = item.crs
                same = crs is None or parse_crs(str(crs)) == parse_crs(self.crs)
                shapes.append(item.geom if same else
                              reproject_geometry(item.geom, str(crs), self.crs))
            elif _is_bounds(item):
                shapes.append(shapely.box(*item))
            else:
                raise InputError(f"footprint {item!r} is not a geometry or (minx, miny, maxx, "
                                 "maxy) bounds; give shapely/odc-geo polygons in the grid CRS")
        return shapes


def reproject_geometry(shape: BaseGeometry, src_crs: str, dst_crs: str) -> BaseGeometry:
    """A shapely geometry from ``src_crs`` to ``dst_crs``, edges densified first.

    Straight edges in the source CRS become curves in the target; densifying (20 segments
    along the longer side) keeps footprints and bboxes contained once warped. Done with pyproj
    rather than odc-geo's ``to_crs``, which calls a deprecated shapely function.
    """
    minx, miny, maxx, maxy = shape.bounds
    step = max(maxx - minx, maxy - miny) / 20
    if step > 0:
        shape = shapely.segmentize(shape, step)
    transformer = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    return shapely.transform(
        shape, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


def _is_geometry(value: Any) -> bool:
    """A shapely geometry, or an odc-geo Geometry (a shapely ``geom`` and a ``crs``)."""
    return isinstance(value, BaseGeometry) or (
        isinstance(getattr(value, "geom", None), BaseGeometry) and hasattr(value, "crs"))


def _geobox_class() -> Any:
    try:
        from odc.geo.geobox import GeoBox
    except ImportError as err:
        raise InputError("OutputGrid geoboxes need odc-geo, which is optional; install it "
                         "with pip install 'depthseg[odc]' (or pip install odc-geo)") from err
    return GeoBox


def _is_bounds(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 4 and all(
        isinstance(v, (int, float, np.number)) for v in value)


def bbox_ring(bbox: Sequence[float], bbox_crs: str | CRS, crs: str | CRS,
              densify: int = 21) -> list[tuple[float, float]]:
    """The bbox as a closed ring in ``crs``, each edge densified to ``densify`` points.

    A lon/lat bbox is a curved quadrilateral in a projected CRS: its densified edges follow
    the curves (what ``transform_bounds`` contains, before it takes the bounding box).
    """
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    t = np.linspace(0.0, 1.0, densify)[:-1]
    xs = np.concatenate([minx + (maxx - minx) * t, np.full_like(t, maxx),
                         maxx - (maxx - minx) * t, np.full_like(t, minx)])
    ys = np.concatenate([np.full_like(t, miny), miny + (maxy - miny) * t,
                         np.full_like(t, maxy), maxy - (maxy - miny) * t])
    to_target = Transformer.from_crs(parse_crs(bbox_crs, what="bbox crs"), crs, always_xy=True)
    x, y = to_target.transform(xs, ys)
    ring = [(float(a), float(b)) for a, b in zip(x, y, strict=True)]
    return [*ring, ring[0]]


def plan_grid(
    bbox: Sequence[float],
    bbox_crs: str | CRS = "EPSG:4326",
    crs: str = "auto",
    resolution: float = 0.8,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    phase: tuple[float, float] = (0.0, 0.0),
) -> OutputGrid:
    """The smallest rectangle of whole global chunks that contains the bbox.

    The bbox is reprojected with densified edges (21 points per edge) so curved edges in the
    output CRS are contained, then snapped outward to multiples of ``chunk_size * resolution``
    from the global grid's origin (the CRS origin shifted by ``phase``).

    Args:
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs`` (lon/lat order for EPSG:4326).
        bbox_crs: CRS of the bbox.
        crs: Output CRS (projected, metres), or ``"auto"`` for the UTM zone of the bbox centre.
        resolution: Output pixel size in metres.
        chunk_size: Chunk side in pixels.
        phase: (x, y) of the global grid's origin, each in ``[0, resolution)``: the imagery's
            pixel phase (see :func:`pixel_phase`), so output pixels are the image's pixels.

    Raises:
        InputError: Bad bbox, CRS, resolution or chunk size; the message says the fix.
    """
    source_crs = parse_crs(bbox_crs, what="bbox crs")
    bbox = _check_bbox(bbox, source_crs)
    _check_sizes(resolution, chunk_size)
    if crs == "auto":
        to_lonlat = Transformer.from_crs(source_crs, "EPSG:4326", always_xy=True)
        crs = auto_crs(to_lonlat.transform_bounds(*bbox, densify_pts=21))
    target_crs = _projected_metre_crs(crs)

    to_target = Transformer.from_crs(source_crs, target_crs, always_xy=True)
    minx, miny, maxx, maxy = projected = to_target.transform_bounds(*bbox, densify_pts=21)
    if not all(math.isfinite(v) for v in projected):
        raise InputError(f"bbox {bbox} cannot be projected to {target_crs.to_string()} (outside "
                         "its area of use); choose a CRS that covers the region, or 'auto'")

    span = chunk_size * resolution
    phase_x, phase_y = (_coord(p) for p in phase)
    # Global rows grow southwards: the top (max y) edge gives the first chunk row.
    first_row = math.floor((phase_y - maxy) / span + _SNAP_EPS)
    stop_row = math.ceil((phase_y - miny) / span - _SNAP_EPS)
    first_col = math.floor((minx - phase_x) / span + _SNAP_EPS)
    stop_col = math.ceil((maxx - phase_x) / span - _SNAP_EPS)
    return OutputGrid(
        crs=target_crs.to_string(),
        resolution=float(resolution),
        row_off=first_row * chunk_size,
        col_off=first_col * chunk_size,
        height=max(stop_row - first_row, 1) * chunk_size,
        width=max(stop_col - first_col, 1) * chunk_size,
        chunk_size=chunk_size,
        phase_x=phase_x,
        phase_y=phase_y,
    )


def pixel_phase(transform: Sequence[float], resolution: float) -> tuple[float, float]:
    """The pixel phase of a north-up raster on a grid of ``resolution``: (x, y) in [0, res).

    ``transform`` is an affine's first six numbers (a, b, c, d, e, f). A phase within a
    millionth of a pixel of 0 (or of a whole pixel) is 0, so float noise in a header does not
    shift a grid that is really on the CRS origin.
    """
    def fold(value: float) -> float:
        phase = math.fmod(value, resolution)
        phase = phase + resolution if phase < 0 else phase
        if min(phase, resolution - phase) <= 1e-6 * resolution:
            return 0.0
        return _coord(phase)

    return fold(float(transform[2])), fold(float(transform[5]))
