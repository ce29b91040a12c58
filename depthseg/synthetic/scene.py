"""Scene physics: layout -> surface reflectance -> illumination and shadows -> sensor image.

Pure numpy/scipy; no file I/O (see :mod:`depthseg.synthetic.writer` for that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from depthseg.errors import InputError
from depthseg.synthetic.classes import BUILDING, FOREST
from depthseg.synthetic.layout import make_layout
from depthseg.synthetic.noise import smooth_noise
from depthseg.synthetic.shadows import cast_shadows, relief_shading
from depthseg.synthetic.spectra import BANDS, VARIANTS, Mat, surface_reflectance

#: Band names of each product dtype, in file order.
BAND_NAMES: dict[str, tuple[str, ...]] = {
    "uint16": ("blue", "green", "red", "nir"),  # GaoFen-2 PMS order, 10-bit values
    "uint8": ("red", "green", "blue"),  # 8-bit RGB product, like the WorldView-3 sample
}
#: Largest valid value per dtype (10-bit in uint16, like GaoFen-2).
MAX_VALUE = {"uint16": 1023, "uint8": 255}

# Diffuse sky light as a fraction of direct sunlight per band (B, G, R, NIR): the sky is
# blue, so shadows are darker and bluer; 25-40 % of direct light, as in clear-sky imagery.
_DIFFUSE = np.array([0.40, 0.34, 0.29, 0.25], np.float32)
# Additive path radiance (haze) in reflectance units per band, strongest in blue.
_HAZE = np.array([0.045, 0.030, 0.018, 0.010], np.float32)
# Reflectance -> digital number gain per product, and read noise (DN) / shot-noise factor.
_GAIN = {"uint16": 1750.0, "uint8": 520.0}
_READ_NOISE = {"uint16": 2.0, "uint8": 0.8}
_SHOT = {"uint16": 0.35, "uint8": 0.08}


@dataclass
class SceneArrays:
    """One simulated region in memory. Axis order is (band, row, col).

    Attributes:
        labels: (rows, cols) uint8 class (LiuZhou order, see :data:`CLASS_NAMES`).
        height: (rows, cols) float32 height above ground in metres (nDSM).
        image: (bands, rows, cols) uint16 (10-bit B, G, R, NIR) or uint8 (R, G, B).
        shadow: (rows, cols) bool, True where the sun is blocked.
        band_names: Names of the image bands, in order.
        resolution: Pixel size in metres.
        sun_azimuth: Degrees clockwise from north.
        sun_elevation: Degrees above the horizon.
        radiance: (4, rows, cols) float32 top-of-atmosphere reflectance-like values before
            the sensor (B, G, R, NIR), for rendering scenes with their own radiometry.
    """

    labels: np.ndarray
    height: np.ndarray
    image: np.ndarray
    shadow: np.ndarray
    band_names: tuple[str, ...]
    resolution: float
    sun_azimuth: float
    sun_elevation: float
    radiance: np.ndarray


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if supported, else raise :class:`InputError`."""
    if dtype not in BAND_NAMES:
        raise InputError(
            f"dtype {dtype!r} is not supported; expected 'uint16' (4-band 10-bit) or 'uint8' "
            "(3-band RGB)"
        )
    return dtype


def simulate(
    size: int | tuple[int, int],
    seed: int,
    dtype: str = "uint16",
    sun_azimuth: float | None = None,
    sun_elevation: float | None = None,
    resolution: float = 0.8,
) -> SceneArrays:
    """Simulate a region: layout, reflectance, sun and shadows, then a 0.8 m-class sensor.

    Args:
        size: Pixels per side, or (rows, cols).
        seed: Seed; the same arguments give the same arrays bit for bit.
        dtype: "uint16" (B, G, R, NIR, values 1..1023) or "uint8" (R, G, B, 1..255).
        sun_azimuth: Degrees clockwise from north; drawn from the seed when None.
        sun_elevation: Degrees above the horizon; drawn from the seed when None.
        resolution: Pixel size in metres.

    Returns:
        The arrays.

    Raises:
        InputError: For a bad size, resolution, dtype or sun angle.
    """
    check_dtype(dtype)
    rows, cols = size if isinstance(size, tuple) else (size, size)
    if int(rows) < 16 or int(cols) < 16:
        raise InputError(f"size {size!r} is too small; expected at least 16 pixels per side")
    if not resolution > 0:
        raise InputError(f"resolution {resolution!r} must be a positive number of metres")
    rng = np.random.default_rng(seed)
    # Late-morning sun of a sun-synchronous overpass, from the south-east to south-west.
    # Always draw both, so passing a sun angle does not change the layout of the seed.
    drawn_azimuth, drawn_elevation = rng.uniform(115, 200), rng.uniform(38, 62)
    azimuth = float(drawn_azimuth if sun_azimuth is None else sun_azimuth)
    elevation = float(drawn_elevation if sun_elevation is None else sun_elevation)
    if not 5 <= elevation <= 90:
        raise InputError(f"sun_elevation {elevation} must be between 5 and 90 degrees")

    layout = make_layout(int(rows), int(cols), float(resolution), rng)
    shape = layout.labels.shape
    noises = (
        layout.grain,
        smooth_noise(shape, 3.0 / resolution, rng),
        smooth_noise(shape, 40.0 / resolution, rng),
    )
    reflectance = surface_reflectance(layout.material, layout.keys, layout.pattern, noises, rng)
    del noises

    shadow = cast_shadows(layout.height, resolution, azimuth, elevation)
    # Slope shading where surfaces are not flat: tree crowns and pitched (tiled) roofs.
    sloped = (layout.labels == FOREST) & (layout.height > 2.0)
    sloped |= (layout.labels == BUILDING) & (layout.material // VARIANTS == Mat.TILE_RED)
    direct = relief_shading(layout.height, sloped, resolution, azimuth, elevation)
    del sloped
    direct[shadow] = 0.0
    # Sky view: pixels at the foot of tall neighbours (narrow streets, forest gaps) see
    # less of the sky and get less diffuse light.
    around = ndi.gaussian_filter(layout.height, 4.0 / resolution)
    sky = np.clip(1.0 - (around - layout.height) / 30.0, 0.55, 1.0).astype(np.float32)
    del around
    # Haze (path radiance) varies slowly across the scene. Illumination is normalised so
    # that flat, sunlit, open ground receives 1.0 in every band.
    haze_field = 1.0 + 0.25 * smooth_noise(shape, 300.0 / resolution, rng)
    radiance = np.empty_like(reflectance)
    for band in range(len(BANDS)):
        light = (direct + _DIFFUSE[band] * sky) / (1.0 + _DIFFUSE[band])
        radiance[band] = reflectance[band] * light + _HAZE[band] * haze_field
    del reflectance, direct, sky, haze_field

    image = sensor(radiance, dtype, rng)
    return SceneArrays(
        labels=layout.labels,
        height=layout.height,
        image=image,
        shadow=shadow,
        band_names=BAND_NAMES[dtype],
        resolution=float(resolution),
        sun_azimuth=azimuth,
        sun_elevation=elevation,
        radiance=radiance,
    )


def sensor(
    radiance: np.ndarray,
    dtype: str,
    rng: np.random.Generator,
    gain: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """Image (band, row, col) as a sensor records it: blur, noise, quantisation.

    Args:
        radiance: (4, rows, cols) float32 B, G, R, NIR at-sensor values (reflectance units).
        dtype: "uint16" (10-bit B, G, R, NIR) or "uint8" (R, G, B).
        rng: Random generator (noise).
        gain: Optional per-band (4,) multiplier (per-scene calibration differences).
        offset: Optional per-band (4,) additive offset in reflectance units.

    Returns:
        Quantised image, valid values clipped to >= 1 so that 0 can mean no data.
    """
    check_dtype(dtype)
    order = [0, 1, 2, 3] if dtype == "uint16" else [2, 1, 0]
    max_value = MAX_VALUE[dtype]
    out = np.empty((len(order), *radiance.shape[1:]), np.dtype(dtype))
    for index, band in enumerate(order):
        value = radiance[band]
        if gain is not None:
            value = value * np.float32(gain[band])
        if offset is not None:
            value = value + np.float32(offset[band])
        # Point spread function of a 0.8 m-class sensor: a Gaussian of about 1 px FWHM.
        dn = ndi.gaussian_filter(value * np.float32(_GAIN[dtype]), 0.55)
        if dtype == "uint8":
            # 8-bit products are usually delivered with a brightening gamma.
            dn = np.float32(255.0) * (np.clip(dn, 0, None) / np.float32(255.0)) ** np.float32(0.8)
        sigma = np.sqrt(_READ_NOISE[dtype] ** 2 + _SHOT[dtype] * np.clip(dn, 0, None))
        dn = dn + sigma * rng.standard_normal(dn.shape, dtype=np.float32)
        out[index] = np.clip(np.rint(dn), 1, max_value).astype(out.dtype)
    return out


__all__ = ["BAND_NAMES", "MAX_VALUE", "Mat", "SceneArrays", "check_dtype", "sensor", "simulate"]
