"""Model-level benchmark: training step and inference throughput of the DepthSeg presets.

Measures, per preset (random weights; numbers do not depend on weight values):

- the training step (forward + backward + AdamW) at the paper's batch size and 512 px, with
  bf16 autocast on CUDA: steps/s, samples/s and peak memory (GPU memory on CUDA, process RSS on
  CPU);
- inference at 518 px: tiles/s of the full model and of the bare timm encoder (the same DINOv2
  ViT, no heads), eager and (with ``--compile``) ``torch.compile``d, and their ratio (the design
  target is >= 0.75).

- with ``--predict-stage``: the mapping predict stage alone (``ChunkPredictor.predict_chunk``
  on a chunk + halo already in memory: uint8/uint16 to the device, normalise, batched bf16
  forward, blending and encoding on the device, the three layers back to the host), eager and
  compiled, tiles/s and peak memory, as a fraction of the bare encoder's tiles/s from the same
  run (the mapping target is >= 0.75).

Needs only torch + timm (+ fsspec and safetensors, which transformers brings; no Ray, no
GDAL, no Zarr), so it runs on a bare GPU box:

    python jobs/bench_model.py --presets vits vitl --compile --predict-stage    # GPU
    python jobs/bench_model.py --presets tiny vits --infer-batch 2 --steps 2   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (no torch needed: ``--help`` answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["vits", "vitb", "vitl"])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:n]")
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--infer-size", type=int, default=518)
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed repeats per measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--predict-stage", action="store_true",
                        help="also time the mapping predict stage on one chunk in memory")
    parser.add_argument("--chunk", type=int, default=4096, help="predict-stage chunk side")
    parser.add_argument("--overlap", type=int, default=64, help="predict-stage tile overlap")
    parser.add_argument("--json", type=Path, help="write the results here too")
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # answers --help and bad flags before torch is imported

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from depthseg.config import load_config  # noqa: E402
from depthseg.model import DepthSegLoss, build_model  # noqa: E402
from depthseg.model.encoder import build_vit  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call after ``warmup`` calls (compilation happens there)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench_train(preset: str, device: torch.device, size: int, steps: int) -> dict[str, float]:
    """Training step at the preset's batch size."""
    config = load_config(REPO_ROOT / "configs" / f"{preset}.yaml")
    model = build_model(config.model).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    loss_fn = DepthSegLoss()
    batch = config.train.batch_size
    images = torch.randn(batch, config.model.in_channels, size, size, device=device)
    labels = torch.randint(0, config.model.num_classes, (batch, size, size), device=device)
    teacher = torch.rand(batch, 1, size, size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(images)
        parts = loss_fn(out.logits.float(), [d.float() for d in out.depths], labels, teacher)
        parts.loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(step, device, warmup=2, repeats=steps)
    return {
        "batch": batch,
        "size": size,
        "steps_per_s": 1 / seconds,
        "samples_per_s": batch / seconds,
        "peak_mb": _peak_mb(device),
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
    }


def bench_infer(
    preset: str, device: torch.device, size: int, batch: int, repeats: int, compile_: bool
) -> dict[str, float]:
    """Inference tiles/s of the full model and of its bare encoder."""
    config = load_config(REPO_ROOT / "configs" / f"{preset}.yaml")
    model = build_model(config.model).to(device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model.to(dtype)
    images = torch.randn(batch, config.model.in_channels, size, size, device=device, dtype=dtype)
    # The bare encoder: the same DINOv2 ViT as timm builds it (RGB, all blocks, no heads).
    encoder = build_vit(config.model.encoder).to(device, dtype).eval()
    rgb = images[:, :3]
    results: dict[str, float] = {"batch": batch, "size": size}
    variants: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("eager", lambda: model(images), lambda: encoder.forward_features(rgb)),
    ]
    if compile_:
        compiled_model = torch.compile(model)
        compiled_encoder = torch.compile(encoder.forward_features)
        variants.append(
            ("compiled", lambda: compiled_model(images), lambda: compiled_encoder(rgb))
        )
    with torch.inference_mode():
        for name, full, bare in variants:
            warmup = 3 if name == "compiled" else 1
            full_s = _timed(full, device, warmup, repeats)
            bare_s = _timed(bare, device, warmup, repeats)
            results[f"model_{name}_tiles_per_s"] = batch / full_s
            results[f"encoder_{name}_tiles_per_s"] = batch / bare_s
            results[f"ratio_{name}"] = bare_s / full_s
    results["peak_mb"] = _peak_mb(device)
    return results


def bench_predict(preset: str, device: torch.device, chunk: int, tile: int, overlap: int,
                  batch: int, repeats: int, compile_: bool) -> dict[str, float]:
    """The mapping predict stage on one chunk + halo in memory, eager and compiled."""
    import numpy as np

    from depthseg.geo.tiles import TileSpec
    from depthseg.io.bundle import Contract
    from depthseg.mapping.predict import ChunkPredictor

    config = load_config(REPO_ROOT / "configs" / f"{preset}.yaml")
    bands = config.model.in_channels
    dtype = "uint8" if bands == 3 else "uint16"
    contract = Contract(band_indices=tuple(range(1, bands + 1)),
                        band_names=tuple(f"b{i}" for i in range(bands)), input_dtype=dtype,
                        value_range=(0, 255 if dtype == "uint8" else 1023),
                        mean=(100.0,) * bands, std=(50.0,) * bands,
                        class_names=tuple(f"c{i}" for i in range(config.model.num_classes)),
                        palette=((0, 0, 0),) * config.model.num_classes, tile_size=tile)
    tiles = TileSpec(tile=tile, overlap=overlap)
    side = chunk + 2 * tiles.halo_px
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (bands, side, side)).astype(dtype)
    valid = np.ones((side, side), dtype=bool)
    n_tiles = len(tiles.layout(chunk, chunk))
    model = build_model(config.model).eval()
    results: dict[str, float] = {"chunk": chunk, "tile": tile, "batch": batch,
                                 "tiles_per_chunk": n_tiles}
    variants = [("eager", False)] + ([("compiled", True)] if compile_ else [])
    for name, compiled in variants:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        predictor = ChunkPredictor(torch.compile(model) if compiled else model, contract, tiles,
                                   batch_size=batch, device=device)
        seconds = _timed(lambda p=predictor: p.predict_chunk(pixels, valid), device,
                         warmup=3 if compiled else 1, repeats=repeats)
        results[f"predict_{name}_tiles_per_s"] = n_tiles / seconds
        results[f"predict_{name}_peak_mb"] = _peak_mb(device)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for preset in args.presets:
        results[preset] = {}
        if not args.skip_train:
            results[preset]["train"] = bench_train(preset, device, args.train_size, args.steps)
            print(preset, "train", json.dumps(results[preset]["train"]), flush=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        results[preset]["infer"] = bench_infer(
            preset, device, args.infer_size, args.infer_batch, args.steps, args.compile
        )
        print(preset, "infer", json.dumps(results[preset]["infer"]), flush=True)
        if args.predict_stage:
            stage = bench_predict(preset, device, args.chunk, args.infer_size, args.overlap,
                                  args.infer_batch, args.steps, args.compile)
            infer = results[preset]["infer"]
            for name in ("eager", "compiled"):
                if f"predict_{name}_tiles_per_s" in stage:
                    stage[f"over_encoder_{name}"] = (stage[f"predict_{name}_tiles_per_s"]
                                                     / infer[f"encoder_{name}_tiles_per_s"])
            results[preset]["predict_stage"] = stage
            print(preset, "predict-stage", json.dumps(stage), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
