"""Land-use layout of a synthetic region: what lies where, and how tall it is.

Layers, each painted over the previous ones: the city (streets, blocks, buildings, yards);
farmland parcels, forest stands and bare patches in the country around it; the river and
its banks; country roads and highways (bridges over water); and finally tree crowns
wherever they overtop the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthseg.synthetic.canvas import Canvas, Subset
from depthseg.synthetic.classes import BARE_LAND, IMPERVIOUS, ROAD, WATER
from depthseg.synthetic.geometry import rotated, wavy_line_distance
from depthseg.synthetic.noise import KeyTable, fine_noise, hash_keys, smooth_noise
from depthseg.synthetic.spectra import Mat, code
from depthseg.synthetic.urban import make_city
from depthseg.synthetic.vegetation import grow_crowns, make_fields, make_forest


@dataclass
class Layout:
    """The top surface of a region.

    Attributes:
        labels: (rows, cols) uint8 land-cover class (LiuZhou order).
        height: (rows, cols) float32 height above ground, metres.
        material: (rows, cols) uint8 material code (see :mod:`.spectra`).
        keys: (rows, cols) uint32 object key (per-object variation).
        pattern: (rows, cols) float32 structured texture in [-1, 1].
        grain: (rows, cols) float32 unit-variance pixel-scale noise, reused by the renderer.
    """

    labels: np.ndarray
    height: np.ndarray
    material: np.ndarray
    keys: np.ndarray
    pattern: np.ndarray
    grain: np.ndarray


def make_layout(rows: int, cols: int, res: float, rng: np.random.Generator) -> Layout:
    """Lay out one region.

    Object sizes are physical (metres), while the city radius, river width and zone sizes
    scale with the region, so that even a small region holds a mix of town and country.

    Args:
        rows: Height in pixels.
        cols: Width in pixels.
        res: Pixel size in metres.
        rng: Random generator (the only source of randomness).

    Returns:
        The layout.
    """
    canvas = Canvas.empty(rows, cols, res, rng)
    table = KeyTable(rng, 24)
    extent = canvas.extent
    width_m, height_m = cols * res, rows * res

    # Urbanisation: a Gaussian around the city centre, roughened by long sinusoids.
    centre = (rng.uniform(0.3, 0.7) * width_m, rng.uniform(0.3, 0.7) * height_m)
    radius = extent * rng.uniform(0.38, 0.55)
    waves = [(rng.uniform(0, np.pi), rng.uniform(0.25, 0.7) * extent, rng.uniform(0, 2 * np.pi))
             for _ in range(4)]

    def intensity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        value = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / radius**2)
        for angle, wavelength, phase in waves:
            along = x * np.cos(angle) + y * np.sin(angle)
            value = value + 0.06 * np.sin(2 * np.pi * along / wavelength + phase)
        return value

    n_villages = int(rng.integers(1, 4))
    far = rng.uniform(1.1, 1.6, n_villages) * radius
    bearing = rng.uniform(0, 2 * np.pi, n_villages)
    villages = np.stack([centre[0] + far * np.cos(bearing), centre[1] + far * np.sin(bearing),
                         rng.uniform(50, 110, n_villages)], axis=1)

    def village(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        value = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))
        for vx, vy, vr in villages:
            value = np.maximum(value, np.exp(-((x - vx) ** 2 + (y - vy) ** 2) / vr**2))
        return value

    # River: a meander through the middle part of the region; its width scales with it.
    river_angle = rng.uniform(0, np.pi)
    river_origin = (rng.uniform(0.2, 0.8) * width_m, rng.uniform(0.2, 0.8) * height_m)
    river_half = float(np.clip(0.03 * extent, 8, 80)) * rng.uniform(0.8, 1.2)
    n_bends = 3
    river_amp = rng.uniform(0.02, 0.08, n_bends) * extent
    river_wave = rng.uniform(0.4, 1.5, n_bends) * extent
    river_phase = rng.uniform(0, 2 * np.pi, n_bends)

    def river_edge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance (m) to the river bank; negative in the water."""
        dist, along = wavy_line_distance(
            np.asarray(x, np.float32), np.asarray(y, np.float32), river_angle, river_origin,
            river_amp, river_wave, river_phase,
        )
        return dist - river_half * (1 + 0.25 * np.sin(along / np.float32(0.3 * extent)))

    # Highways: straight, through the city, one or two.
    n_highways = 1 + int(extent > 1500)
    highways = [(rng.uniform(0, np.pi), (centre[0] + rng.uniform(-0.2, 0.2) * extent,
                                         centre[1] + rng.uniform(-0.2, 0.2) * extent),
                 rng.uniform(20, 30)) for _ in range(n_highways)]

    def keep_out(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dist = river_edge(x, y) - 12.0
        for angle, origin, width in highways:
            _, across = rotated(np.asarray(x, np.float32), np.asarray(y, np.float32), angle,
                                *origin)
            dist = np.minimum(dist, np.abs(across) - 0.5 * width)
        return dist

    # 1. The city.
    built_up, avenue = make_city(canvas, rng, table, intensity, village, keep_out, centre)
    rural = ~built_up

    # 2. Farmland in the country, parcels aligned with the first highway.
    make_fields(canvas, rng, table, highways[0][0] + rng.choice([0.0, np.pi / 2]), rural)

    # 3. Forest on the rural hills, bare patches (quarries, cleared plots).
    hills = smooth_noise(canvas.shape, 220 / res, rng)
    hills += 0.5 * smooth_noise(canvas.shape, 60 / res, rng)
    forest_cut = np.quantile(hills[::8, ::8], 0.7)
    forest = rural & (hills > forest_cut)
    tallness = np.clip((hills - forest_cut) / 2.0, 0, 1)
    make_forest(canvas, forest, rng, tallness)
    del tallness
    bare = rural & (hills < np.quantile(hills[::8, ::8], 0.035))
    soil = code(Mat.SOIL, 0) + (smooth_noise(canvas.shape, 80 / res, rng) > 0.0).astype(np.uint8)
    canvas.paint(bare, BARE_LAND, soil, 0.0, 91, 0.0)
    del soil
    del hills, forest, bare, rural

    # 4. The river, with sand banks in the country and stone embankments in town.
    shore = river_edge(canvas.x, canvas.y)
    bank_width = rng.uniform(4, 10)
    bank = (shore >= 0) & (shore < bank_width)
    canvas.paint(bank & built_up, IMPERVIOUS, code(Mat.CONCRETE, 1), 0.0, 93, 0.0)
    canvas.paint(bank & ~built_up, BARE_LAND, code(Mat.SAND, 0), 0.0, 94, 0.0)
    water = shore < 0
    canvas.paint(water, WATER, code(Mat.WATER, 0), 0.0, 95, 0.0)
    canvas.paint(water & avenue, ROAD, code(Mat.ASPHALT, 1), 8.0, 96, 0.0)  # bridges
    del avenue
    canvas.trees.add(~built_up & (shore > bank_width) & (shore < bank_width + 8)
                     & (canvas.seed_uniform < 0.02), (6, 14), (2.5, 4.0), rng)
    del shore, bank

    # 5. Country roads (concrete), ending where the city streets take over.
    country = Subset(canvas, ~built_up)
    country_water = country.take(water)
    for index in range(int(rng.integers(2, 4))):
        dist, _ = wavy_line_distance(
            country.x, country.y, rng.uniform(0, np.pi),
            (rng.uniform(0, width_m), rng.uniform(0, height_m)),
            rng.uniform(5, 40, 2), rng.uniform(300, 900, 2), rng.uniform(0, 6.3, 2),
        )
        road = dist < 0.5 * rng.uniform(4, 7)
        bridge = np.where(country_water, 3.0, 0.0).astype(np.float32)
        canvas.paint_at(country, road, ROAD, code(Mat.CONCRETE, 1 + index % 3), bridge, 100 + index,
                        0.0)
        del dist, road, bridge
    del country, country_water

    # 6. Highways: asphalt lanes with dashed markings and a concrete median; bridges on water.
    for index, (angle, origin, width) in enumerate(highways):
        along, across = rotated(canvas.x, canvas.y, angle, *origin)
        offset = np.abs(across)
        deck = offset < 0.5 * width
        lanes = (np.mod(offset - 1.0, 3.75) < 0.3) & (np.mod(along, 12.0) < 6.0)
        edge_line = np.abs(offset - 0.5 * width + 0.8) < 0.3
        pattern = (lanes | edge_line).astype(np.float32)
        bridge_h = np.where(water, 8.0, 0.0).astype(np.float32)
        canvas.paint(deck, ROAD, code(Mat.ASPHALT, 1), bridge_h,
                     hash_keys(index, salt=201), pattern)
        median = offset < 1.0
        canvas.paint(median, ROAD, code(Mat.CONCRETE, 2), bridge_h + 0.8 * ~water, None, 0.0)
        # Traffic: cars centred in the lanes on both carriageways.
        lane = np.floor((offset - 1.0) / 3.75)
        slot = np.floor(along / 10.0)
        car_key = hash_keys(lane.astype(np.int32), slot.astype(np.int32), (across > 0), salt=index)
        car = deck & ~median & (np.abs(offset - 1.0 - 3.75 * (lane + 0.5)) < 0.9)
        car &= (np.mod(along, 10.0) < 4.5) & (offset < 0.5 * width - 1.0)
        car &= table.uniform(car_key, 22) < 0.12
        variant = ((car_key >> np.uint32(24)) % np.uint32(8)).astype(np.uint8)
        canvas.paint(car, ROAD, code(Mat.CAR, 0) + variant, bridge_h + 1.5, car_key, 0.0)
        del along, across, offset, deck, lanes, edge_line, pattern, bridge_h, median
        del lane, slot, car_key, car, variant

    # 7. Tree crowns over everything lower than them.
    grain = fine_noise(canvas.shape, rng)
    grow_crowns(canvas, rng, grain)
    return Layout(
        labels=canvas.labels,
        height=canvas.height,
        material=canvas.material,
        keys=canvas.keys,
        pattern=canvas.pattern,
        grain=grain,
    )
