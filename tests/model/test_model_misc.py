"""Baseline, input normalisation, and the import boundary of depthseg.model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from depthseg.errors import InputError
from depthseg.model import DeepLabV3Baseline, DepthSegLoss, DepthSegOutput, build_model, normalize

MODEL_DIR = Path(__file__).resolve().parents[2] / "depthseg" / "model"
ALLOWED_IMPORTS = {
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "transformers",
    "safetensors",
    "depthseg",
}
FORBIDDEN = ("ray", "rasterio", "zarr", "s3fs", "xarray", "fsspec")


@pytest.mark.parametrize(("in_channels", "hw"), [(3, (70, 70)), (4, (100, 130))])
def test_deeplabv3_baseline_has_the_same_interface(shrunk, in_channels, hw):
    cfg = shrunk(
        "tiny", arch="deeplabv3", baseline_backbone="mobilenet_v3_large", in_channels=in_channels
    )
    model = build_model(cfg).train()
    assert isinstance(model, DeepLabV3Baseline)
    images = torch.randn(2, in_channels, *hw)
    out = model(images)
    assert isinstance(out, DepthSegOutput) and out.depths == []
    assert out.logits.shape == (2, 7, *hw)
    labels = torch.randint(0, 7, (2, *hw))
    parts = DepthSegLoss()(*out, labels, torch.rand(2, 1, *hw))
    assert parts.l_depth == 0
    parts.loss.backward()


def test_resnet_baselines_construct(shrunk):
    with torch.device("meta"):
        r50 = build_model(shrunk("tiny", arch="deeplabv3"))
        r101 = build_model(shrunk("tiny", arch="deeplabv3", baseline_backbone="resnet101"))
    n50 = sum(p.numel() for p in r50.parameters())
    assert 39e6 < n50 < 40e6 < sum(p.numel() for p in r101.parameters())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.int16, torch.float32])
def test_normalize_integer_tiles(dtype):
    raw = torch.tensor([[[[0, 10], [20, 30]]], [[[40, 50], [60, 70]]]]).permute(1, 0, 2, 3)
    out = normalize(raw.to(dtype), mean=[10.0, 50.0], std=[10.0, 20.0])
    assert out.dtype == torch.float32 and out.shape == (1, 2, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[-1.0, 0.0], [1.0, 2.0]]))
    torch.testing.assert_close(out[0, 1], torch.tensor([[-0.5, 0.0], [0.5, 1.0]]))


def test_normalize_rejects_wrong_band_statistics():
    with pytest.raises(InputError, match="2 means and 2 stds for 4 bands"):
        normalize(torch.zeros(1, 4, 2, 2, dtype=torch.uint8), [0, 0], [1, 1])
    with pytest.raises(InputError, match="std"):
        normalize(torch.zeros(1, 1, 2, 2), [0], [0])


def test_import_pulls_in_no_cluster_or_geo_stack():
    code = (
        f"import sys, depthseg.model\nprint(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"depthseg.model imported {result.stdout.strip()}"


def test_model_package_imports_only_allowed_modules():
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(MODEL_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_IMPORTS or top in stdlib, f"{path.name} imports {name}"
