"""Print the parameter / FLOP table of docs/MODEL.md.

Builds each preset on the meta device (no memory, no weights) and counts FLOPs of one
forward pass of a single tile with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs =
2 x multiply-accumulates; convolutions, matmuls and attention; elementwise ops not counted).

    python jobs/model_stats.py                  # presets of configs/{vits,vitb,vitl}.yaml
    python jobs/model_stats.py --tile 518 --in-channels 3
"""

from __future__ import annotations

import argparse


def parse_args() -> argparse.Namespace:
    """The command line (no torch needed: ``--help`` answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["vits", "vitb", "vitl"])
    parser.add_argument("--tile", type=int, default=518)
    parser.add_argument("--in-channels", type=int, default=None)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # answers --help and bad flags before torch is imported

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from depthseg.config import load_config  # noqa: E402
from depthseg.model import ModelConfig, build_model, count_parameters  # noqa: E402

PARTS = ("encoder", "adapter", "depth_head", "prompter", "decoder")


def stats(cfg: ModelConfig, tile: int) -> dict[str, float]:
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False).eval()
    row = {part: count_parameters(getattr(model, part, None)) / 1e6 for part in PARTS}
    row["trainable"] = count_parameters(model, trainable_only=True) / 1e6
    images = torch.empty(1, cfg.in_channels, tile, tile, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model.encoder(images)
        encoder_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            model(images)
    row["encoder_gflops"] = encoder_flops / 1e9
    row["total_gflops"] = counter.get_total_flops() / 1e9
    return row


def main() -> None:
    args = parse_args()
    print(
        f"| model | encoder | adapter | depth head | prompter | decoder | trainable | "
        f"GFLOPs encoder | GFLOPs total ({args.tile} px) | encoder share |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.configs:
        cfg = load_config(name).model
        if args.in_channels is not None:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "in_channels": args.in_channels})
        r = stats(cfg, args.tile)
        print(
            f"| {name} ({cfg.in_channels} bands) | {r['encoder']:.2f} M | {r['adapter']:.2f} M "
            f"| {r['depth_head']:.2f} M | {r['prompter']:.2f} M | {r['decoder']:.2f} M "
            f"| {r['trainable']:.2f} M | {r['encoder_gflops']:.0f} | {r['total_gflops']:.0f} "
            f"| {r['encoder_gflops'] / r['total_gflops']:.0%} |"
        )
    if args.baseline:
        cfg = ModelConfig(arch="deeplabv3", in_channels=args.in_channels or 4)
        with torch.device("meta"):
            model = build_model(cfg).eval()
        images = torch.empty(1, cfg.in_channels, args.tile, args.tile, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
        total = count_parameters(model) / 1e6
        print(
            f"| DeepLabv3-R50 baseline | - | - | - | - | - | {total:.2f} M | - "
            f"| {counter.get_total_flops() / 1e9:.0f} | - |"
        )


if __name__ == "__main__":
    main()
