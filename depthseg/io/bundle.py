"""Model bundles: weights + model config + preprocessing contract, one directory at a path or URI.

Layout (``<bundle>/`` is a local folder or an ``s3://`` prefix)::

    bundle.json          {"format": "depthseg-bundle", "version": 1, "model": {...},
                          "contract": {...}, "depthseg_version": "...", "created": "..."}
    weights.safetensors  the model's state dict (tensors only; safe to load)

``bundle.json`` is written last, so a folder without it is not a bundle (a half-written export
is never mistaken for a complete one). Loading validates the contract on its own and against
the model config before any weights are read.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import depthseg
from depthseg.errors import InputError, StorageError
from depthseg.io.storage import Storage, join
from depthseg.model import ModelConfig, build_model

BUNDLE_FORMAT = "depthseg-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "weights.safetensors"

_DTYPE_RANGES = {"uint8": (0, 255), "uint16": (0, 65535)}


@dataclass(frozen=True)
class Contract:
    """What the model expects of the imagery it is given.

    Attributes:
        band_indices: 1-based bands of the imagery, in the order the model's channels take them
            (e.g. ``(3, 2, 1)`` takes R,G,B from a B,G,R,NIR GaoFen-2 scene).
        band_names: Names of those channels, for messages and STAC metadata.
        input_dtype: ``uint8`` or ``uint16``: the dtype of the imagery.
        value_range: (min, max) of valid pixel values (``(0, 1023)`` for 10-bit GaoFen-2).
        mean: Per-channel mean in raw pixel units, subtracted before the model.
        std: Per-channel standard deviation in raw pixel units, divided by before the model.
        class_names: One name per output class, in logit order.
        palette: One (r, g, b) colour per class, 0-255.
        tile_size: Model input window in pixels.
        nodata: Input value meaning "no data" (None when the imagery has none).
        gsd: Ground sample distance of the training imagery in metres (None: unknown).
        band_descriptions: The training imagery's descriptions of the bands the model reads
            (``""`` where it had none): mapping compares them with the imagery's own.
        source_bands: Band count of the training imagery (0: unknown).
        resampling: How training scenes off the label grid were resampled; mapping uses it
            by default.
        depth_source: What the depth head was trained on: ``height`` (nDSM/DSM heights),
            ``teacher`` (Depth Anything depth), ``none``, or ``""`` (not recorded). Either
            way the depth layer is relative (each training image stretched to [0, 1]).
    """

    band_indices: tuple[int, ...]
    band_names: tuple[str, ...]
    input_dtype: str
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    tile_size: int
    nodata: float | None = 0
    gsd: float | None = None
    band_descriptions: tuple[str, ...] = ()
    source_bands: int = 0
    resampling: str = "nearest"
    depth_source: str = ""

    def __post_init__(self) -> None:
        n = len(self.band_indices)
        if self.band_descriptions and len(self.band_descriptions) != n:
            raise InputError(
                f"contract band_descriptions has {len(self.band_descriptions)} entries but "
                f"band_indices has {n}; give one description ('' if none) per model channel")
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise InputError(f"contract gsd {self.gsd} must be a positive number of metres")
        if n == 0 or any(int(b) != b or b < 1 for b in self.band_indices):
            raise InputError(
                f"contract band_indices {self.band_indices} are invalid; expected 1-based band "
                "numbers such as (3, 2, 1)"
            )
        for name in ("band_names", "mean", "std"):
            if len(getattr(self, name)) != n:
                raise InputError(
                    f"contract {name} has {len(getattr(self, name))} entries but band_indices has "
                    f"{n}; give one {name} entry per model channel"
                )
        if self.input_dtype not in _DTYPE_RANGES:
            raise InputError(
                f"contract input_dtype {self.input_dtype!r} is not supported; expected one of "
                f"{sorted(_DTYPE_RANGES)}"
            )
        lo, hi = self.value_range
        dtype_lo, dtype_hi = _DTYPE_RANGES[self.input_dtype]
        if not dtype_lo <= lo < hi <= dtype_hi:
            raise InputError(
                f"contract value_range {self.value_range} does not fit {self.input_dtype} "
                f"[{dtype_lo}, {dtype_hi}]; expected min < max inside that range"
            )
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise InputError(f"contract std {self.std} must be finite and > 0 for every channel")
        if any(not math.isfinite(m) for m in self.mean):
            raise InputError(f"contract mean {self.mean} must be finite for every channel")
        if len(self.palette) != len(self.class_names) or not self.class_names:
            raise InputError(
                f"contract has {len(self.class_names)} class names but {len(self.palette)} palette "
                "colours; give one (r, g, b) colour per class"
            )
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise InputError(f"contract palette {self.palette} must hold (r, g, b) values 0-255")
        if self.tile_size < 16:
            raise InputError(f"contract tile_size {self.tile_size} is too small; expected >= 16")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        """Build from :meth:`to_dict` output, refusing unknown or missing keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"contract has unknown keys {unknown}; expected only {sorted(known)}")
        optional = {"nodata", "gsd", "band_descriptions", "source_bands", "resampling",
                    "depth_source"}
        missing = sorted(f.name for f in fields(cls) if f.name not in data
                         and f.name not in optional)
        if missing:
            raise InputError(f"contract is missing keys {missing}")
        return cls(
            band_indices=tuple(int(b) for b in data["band_indices"]),
            band_names=tuple(data["band_names"]),
            input_dtype=str(data["input_dtype"]),
            value_range=(float(data["value_range"][0]), float(data["value_range"][1])),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            class_names=tuple(data["class_names"]),
            palette=tuple((int(c[0]), int(c[1]), int(c[2])) for c in data["palette"]),
            tile_size=int(data["tile_size"]),
            nodata=None if data.get("nodata") is None else float(data["nodata"]),
            gsd=None if data.get("gsd") is None else float(data["gsd"]),
            band_descriptions=tuple(str(d) for d in data.get("band_descriptions", ())),
            source_bands=int(data.get("source_bands", 0)),
            resampling=str(data.get("resampling", "nearest")),
            depth_source=str(data.get("depth_source", "")),
        )

    def check_model(self, config: ModelConfig) -> None:
        """Refuse a contract that does not fit the model config."""
        if len(self.band_indices) != config.in_channels:
            raise InputError(
                f"contract feeds {len(self.band_indices)} bands {self.band_indices} but the model "
                f"takes in_channels={config.in_channels}; make them agree"
            )
        if len(self.class_names) != config.num_classes:
            raise InputError(
                f"contract names {len(self.class_names)} classes but the model has "
                f"num_classes={config.num_classes}; make them agree"
            )


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, on CPU) with its config and contract."""

    model: torch.nn.Module
    config: ModelConfig
    contract: Contract
    uri: str


def save_bundle(
    uri: str,
    model: torch.nn.Module,
    config: ModelConfig,
    contract: Contract,
    storage: Storage | None = None,
) -> str:
    """Write a bundle to a local folder or ``s3://`` prefix; returns ``uri``.

    The weights go first and ``bundle.json`` last, so readers never see a half bundle.
    """
    storage = storage or Storage()
    contract.check_model(config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    storage.write_bytes_atomic(join(uri, WEIGHTS), save_safetensors(state))
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model": config.to_dict(),
        "contract": contract.to_dict(),
        "depthseg_version": depthseg.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_bytes_atomic(join(uri, MANIFEST), json.dumps(manifest, indent=2).encode())
    return uri


def read_manifest(uri: str, storage: Storage | None = None) -> tuple[ModelConfig, Contract]:
    """Read and validate ``bundle.json`` without touching the weights."""
    storage = storage or Storage()
    try:
        raw = storage.read_bytes(join(uri, MANIFEST))
    except StorageError as err:
        raise InputError(
            f"{uri!r} is not a model bundle (no {MANIFEST}); expected a folder written by "
            "save_bundle / jobs/train.py, e.g. <storage>/best/"
        ) from err
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{join(uri, MANIFEST)!r} is not valid JSON ({err})") from err
    if manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(
            f"{join(uri, MANIFEST)!r} has format {manifest.get('format')!r}; expected "
            f"{BUNDLE_FORMAT!r}"
        )
    if manifest.get("version") != BUNDLE_VERSION:
        raise InputError(
            f"bundle {uri!r} has version {manifest.get('version')!r}; this depthseg reads version "
            f"{BUNDLE_VERSION}: re-export it with a matching depthseg"
        )
    config = ModelConfig.from_dict(manifest["model"])
    contract = Contract.from_dict(manifest["contract"])
    contract.check_model(config)
    return config, contract


def verify_bundle(uri: str, storage: Storage | None = None) -> tuple[ModelConfig, Contract]:
    """Check a bundle without loading its weights: manifest, then the weights file's header.

    Reads ``bundle.json`` and the safetensors header (two small reads, also on S3) and
    compares the tensor names and shapes with the model the config builds (on the ``meta``
    device: no memory). A corrupt or truncated weights file, or one of another model, is an
    :class:`InputError` here, on the driver, before any worker starts.
    """
    import struct

    storage = storage or Storage()
    config, contract = read_manifest(uri, storage)
    weights_uri = join(uri, WEIGHTS)
    fs, path = storage.fs(weights_uri)
    try:
        size = int(fs.size(path))
        with fs.open(path, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = json.loads(handle.read(length)) if 0 < length <= min(size, 1 << 27) else None
    except FileNotFoundError as err:
        raise InputError(f"bundle {uri!r} has no {WEIGHTS}; re-export it") from err
    except (json.JSONDecodeError, UnicodeDecodeError, struct.error):
        header = None
    if not isinstance(header, dict):
        raise InputError(f"bundle weights {weights_uri!r} are not a safetensors file (corrupt or "
                         "truncated); re-export the bundle or copy it again")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    if 8 + length + end != size:
        raise InputError(f"bundle weights {weights_uri!r} hold {size} bytes but their header "
                         f"describes {8 + length + end} (truncated or corrupt); copy the bundle "
                         "again")
    with torch.device("meta"):
        model = build_model(_without_pretrained_weights(config), load_weights=False)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    found = {k: list(v["shape"]) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])[:3]
        raise InputError(f"bundle weights {weights_uri!r} do not match its model config "
                         f"(missing {missing}, unexpected {unexpected}, other shapes "
                         f"{reshaped}); re-export the bundle")
    return config, contract


def bundle_fingerprint(uri: str, storage: Storage | None = None) -> str:
    """A bundle's identity: the hash of ``bundle.json`` and its weights' ETag (or size+mtime).

    Cheap (two small requests), so a resumed run can tell another model from the same one.
    """
    import hashlib

    from depthseg.io.storage import object_fingerprint

    storage = storage or Storage()
    manifest = storage.read_bytes(join(uri, MANIFEST))
    weights = object_fingerprint(join(uri, WEIGHTS), storage)
    return "sha256:" + hashlib.sha256(manifest + b"\n" + weights.encode()).hexdigest()


def load_bundle(uri: str, storage: Storage | None = None) -> Bundle:
    """Load a bundle: validate its manifest, build the model, load the weights strictly.

    The encoder weights come from the bundle itself, so the config's encoder ``weights`` path
    (a pretraining file on the training machine) is not needed here and is ignored.
    """
    storage = storage or Storage()
    config, contract = read_manifest(uri, storage)
    model = build_model(_without_pretrained_weights(config))
    state = load_safetensors(storage.read_bytes(join(uri, WEIGHTS)))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"bundle {uri!r} weights do not match its model config: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}; re-export it"
        )
    model.eval()
    return Bundle(model=model, config=config, contract=contract, uri=uri)


def _without_pretrained_weights(config: ModelConfig) -> ModelConfig:
    import dataclasses

    encoder = getattr(config, "encoder", None)
    if encoder is None or getattr(encoder, "weights", None) is None:
        return config
    return dataclasses.replace(config, encoder=dataclasses.replace(encoder, weights=None))
