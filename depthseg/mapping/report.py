"""The run report: ``<out>/run.json`` and the summary printed at the end of a run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depthseg.mapping.plan import Plan
    from depthseg.mapping.request import MapRequest


def driver_usage() -> dict[str, float]:
    """CPU seconds and peak resident memory of this (the driver's) process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


@dataclass
class RunReport:
    """Counts and timings of one run.

    Attributes:
        request: The run's options.
        plan: Its plan (None until planned).
        planned: Chunks with imagery.
        skipped: Chunks of the grid without imagery.
        already_done: Chunks done by an earlier run (resume).
        todo: Chunks this run had to map.
        done: Chunks with a done marker at the end.
        finished: Chunk results received by this run (done + failed).
        failed: ``{chunk key: error}`` of chunks that could not be mapped.
        tracebacks: ``{chunk key: traceback}`` of chunks that failed unexpectedly (bugs,
            not bad input).
        inputs: The model's and the imagery's fingerprints (what a resume must match).
        lease: This run's id and lease generation on the output.
        retries: Transient storage errors (scene reads, writes) retried by this run's
            stages: cut-off responses, resets, 5xx.
        notes: What the planner decided for the user (bands, resolution, phase, warnings).
        error: The traceback of an error that stopped the whole run, or None.
        seconds: Wall seconds per phase (plan, map, finalise, total) and summed per stage
            (read, predict, write; these overlap in time across workers).
        valid_pixels: Mapped pixels with imagery (for km2).
        cogs_reused: Done chunks whose COGs were copied in, not encoded by this run.
        tiles_computed: Model tiles this run computed; ``first_chunk_tiles`` those of the
            first chunk to finish.
        tile_px: Pixels those tiles held (tiles trimmed at a bbox or imagery edge hold
            fewer than ``tile * tile``); ``first_chunk_tile_px`` those of the first chunk.
        timeline: Epoch seconds: ``command`` (the CLI started), ``map`` (the stream started),
            ``first_tile`` (the first tile batch reached a model), ``first_chunk_done``,
            ``last_chunk_done``. The steady rate is the tiles after the first chunk over
            ``last_chunk_done - first_chunk_done``.
    """

    request: MapRequest
    plan: Plan | None = None
    planned: int = 0
    skipped: int = 0
    already_done: int = 0
    todo: int = 0
    done: int = 0
    finished: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)
    finalise_steps: dict[str, float] = field(default_factory=dict)
    driver_map_cpu_s: float = 0.0
    inputs: dict[str, Any] = field(default_factory=dict)
    lease: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "predict": 0.0,
                                                              "write": 0.0})
    valid_pixels: int = 0
    cogs_reused: int = 0
    tiles_computed: int = 0
    first_chunk_tiles: int = 0
    tile_px: int = 0
    first_chunk_tile_px: int = 0
    timeline: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))

    def start(self, plan: Plan, already: int, todo: int) -> None:
        """Record the plan."""
        self.plan, self.planned, self.skipped = plan, len(plan.chunks), plan.skipped
        self.already_done, self.todo = already, todo

    def add_chunk(self, row: dict[str, Any]) -> None:
        """Record one chunk result from the write stage."""
        self.finished += 1
        self.retries += int(row.get("retries", 0))
        if row["error"]:
            self.failed[str(row["chunk"])] = str(row["error"])
            if row.get("detail"):
                self.tracebacks[str(row["chunk"])] = str(row["detail"])
        for stage in ("read", "predict", "write"):
            self.seconds[stage] += float(row[f"{stage}_s"])
        tiles, done_at = int(row.get("tiles", 0)), float(row.get("done_at", 0.0))
        tile_px = int(row.get("tile_px", 0))
        self.tiles_computed += tiles
        self.tile_px += tile_px
        first_tile = float(row.get("first_tile_at", 0.0))
        if first_tile and first_tile < self.timeline.get("first_tile", float("inf")):
            self.timeline["first_tile"] = first_tile
        if done_at and done_at < self.timeline.get("first_chunk_done", float("inf")):
            self.timeline["first_chunk_done"], self.first_chunk_tiles = done_at, tiles
            self.first_chunk_tile_px = tile_px
        if done_at > self.timeline.get("last_chunk_done", 0.0):
            self.timeline["last_chunk_done"] = done_at

    def steady_tiles_per_s(self) -> float | None:
        """Tiles per second after the first chunk (start-up excluded), if two chunks finished."""
        first, last = self.timeline.get("first_chunk_done"), self.timeline.get("last_chunk_done")
        if first is None or last is None or last <= first:
            return None
        return (self.tiles_computed - self.first_chunk_tiles) / (last - first)

    def _full_tiles(self) -> dict[str, float]:
        """The tiles' pixels in whole ``tile x tile`` tiles (trimmed tiles count in part)."""
        if self.plan is None or not self.tile_px:
            return {}
        full = self.plan.tiles.tile ** 2
        return {"full_equivalent": round(self.tile_px / full, 3),
                "first_chunk_full_equivalent": round(self.first_chunk_tile_px / full, 3)}

    @property
    def km2(self) -> float:
        """Area with imagery that was mapped, in km2."""
        res = self.plan.grid.resolution if self.plan else 0.0
        return self.valid_pixels * res * res / 1e6

    @property
    def ok(self) -> bool:
        """True when every planned chunk is done."""
        return not self.failed and self.error is None and self.done == self.planned

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        grid = self.plan.grid if self.plan else None
        hours = max(self.seconds.get("total", 0.0), 1e-9) / 3600
        return {
            "started_at": self.started_at,
            "request": asdict(self.request),
            "bbox": list(self.request.bbox), "bbox_crs": self.request.bbox_crs,
            "grid": None if grid is None else {
                "crs": grid.crs, "resolution": grid.resolution, "shape": list(grid.shape),
                "transform": list(grid.transform)[:6], "chunk_size": grid.chunk_size,
                "bounds": list(grid.bounds)},
            "chunks": {"planned": self.planned, "done": self.done, "skipped": self.skipped,
                       "already_done": self.already_done, "mapped_this_run": self.todo,
                       "failed": len(self.failed)},
            "failed_chunks": [{"chunk": k, "error": v,
                               **({"traceback": self.tracebacks[k]} if k in self.tracebacks
                                  else {})} for k, v in sorted(self.failed.items())],
            "notes": self.notes,
            "inputs": self.inputs,
            "lease": self.lease,
            "retries": self.retries,
            "error": self.error,
            "cogs": {"encoded": self.done - self.cogs_reused, "reused": self.cogs_reused},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tiles": {"computed": self.tiles_computed, "first_chunk": self.first_chunk_tiles,
                      "steady_per_s": (None if self.steady_tiles_per_s() is None else
                                       round(self.steady_tiles_per_s() or 0.0, 4)),
                      **self._full_tiles()},
            "timeline": {k: round(v, 3) for k, v in self.timeline.items()},
            "finalise_seconds": {k: round(v, 3) for k, v in self.finalise_steps.items()},
            "driver": {**driver_usage(), "map_cpu_s": round(self.driver_map_cpu_s, 3),
                       "map_ms_per_chunk": round(1000 * self.driver_map_cpu_s
                                                 / max(self.todo, 1), 3)},
            "km2_mapped": round(self.km2, 6),
            "km2_per_hour": round(self.km2 / hours, 3),
            "ok": self.ok,
        }

    def to_json(self) -> bytes:
        """``run.json`` bytes."""
        return json.dumps(self.to_dict(), indent=2).encode()

    def summary(self) -> str:
        """A few human lines for the end of a run."""
        s = self.seconds
        lines = [f"mapped {self.done}/{self.planned} chunks ({self.km2:.3f} km2) in "
                 f"{s.get('total', 0):.1f}s (map {s.get('map', 0):.1f}s, finalise "
                 f"{s.get('finalise', 0):.1f}s); {self.skipped} chunks without imagery, "
                 f"{self.already_done} done earlier"]
        if self.failed:
            lines.append(f"FAILED {len(self.failed)} chunks: " + "; ".join(
                f"{k}: {v}" for k, v in sorted(self.failed.items())[:5]))
        return "\n".join(lines)
