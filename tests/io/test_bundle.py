"""Model bundles round-trip through local folders and the S3 server; broken ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from depthseg.config import load_config
from depthseg.errors import InputError
from depthseg.io.bundle import Contract, load_bundle, read_manifest, save_bundle
from depthseg.io.storage import join
from depthseg.model import build_model


def _contract(channels: int, classes: int) -> Contract:
    return Contract(
        band_indices=tuple(range(1, channels + 1)),
        band_names=("red", "green", "blue", "nir")[:channels],
        input_dtype="uint8",
        value_range=(0, 255),
        mean=(120.0,) * channels,
        std=(50.0,) * channels,
        class_names=tuple(f"class{i}" for i in range(classes)),
        palette=tuple((i * 30 % 256, 0, 255 - i) for i in range(classes)),
        tile_size=126,
    )


@pytest.fixture(scope="module")
def tiny():
    config = load_config("tiny").model
    torch.manual_seed(0)
    model = build_model(config).eval()
    return config, model, _contract(config.in_channels, config.num_classes)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_bundle_round_trip_gives_the_same_predictions(tiny, tmp_path, s3_storage, s3_prefix, where):
    config, model, contract = tiny
    uri = str(tmp_path / "bundle") if where == "local" else f"{s3_prefix}/bundle"
    save_bundle(uri, model, config, contract, s3_storage)

    bundle = load_bundle(uri, s3_storage)
    assert bundle.config == config
    assert bundle.contract == contract
    images = torch.randn(2, config.in_channels, 70, 84)
    with torch.inference_mode():
        expected = model(images).logits
        got = bundle.model(images).logits
    torch.testing.assert_close(got, expected)


def test_folder_without_manifest_is_not_a_bundle(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="is not a model bundle"):
        load_bundle(str(tmp_path))


def _tamper(uri: Path, edit) -> None:
    manifest = json.loads((uri / "bundle.json").read_text())
    edit(manifest)
    (uri / "bundle.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["contract"].update(mean=[1.0]), "mean has 1 entries"),
        (lambda m: m["contract"].update(std=[0.0] * len(m["contract"]["std"])), "std"),
        (lambda m: m["contract"].update(input_dtype="float32"), "input_dtype 'float32'"),
        (lambda m: m["contract"].update(class_names=m["contract"]["class_names"][:-1],
                                        palette=m["contract"]["palette"][:-1]), "num_classes"),
        (lambda m: m["contract"].update(colour="red"), "unknown keys \\['colour'\\]"),
        (lambda m: m.update(format="something-else"), "format 'something-else'"),
        (lambda m: m.update(version=99), "version 99"),
    ],
)
def test_broken_contract_is_refused(tiny, tmp_path, edit, message):
    config, model, contract = tiny
    uri = tmp_path / "bundle"
    save_bundle(str(uri), model, config, contract)
    _tamper(uri, edit)
    with pytest.raises(InputError, match=message):
        read_manifest(str(uri))


def test_weights_that_do_not_match_the_config_are_refused(tiny, tmp_path):
    config, model, contract = tiny
    uri = tmp_path / "bundle"
    save_bundle(str(uri), model, config, contract)
    other = tmp_path / "other"
    (other).mkdir()
    # Weights of a different architecture under this manifest.
    from safetensors.torch import save_file

    save_file({"unrelated.weight": torch.zeros(3)}, str(other / "weights.safetensors"))
    (other / "bundle.json").write_text((uri / "bundle.json").read_text())
    with pytest.raises(InputError, match="do not match"):
        load_bundle(str(other))


def test_contract_must_fit_the_model(tiny, tmp_path):
    config, model, _ = tiny
    wrong = _contract(config.in_channels + 1, config.num_classes)
    with pytest.raises(InputError, match="in_channels"):
        save_bundle(str(tmp_path / "b"), model, config, wrong)
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_bundle_json_is_written_last(tiny, tmp_path, s3_storage, s3_prefix):
    config, model, contract = tiny
    uri = f"{s3_prefix}/b"
    save_bundle(uri, model, config, contract, s3_storage)
    fs, path = s3_storage.fs(uri)
    times = {Path(k).name: fs.info(k)["LastModified"] for k in fs.ls(path)}
    assert times["bundle.json"] >= times["weights.safetensors"]
    manifest = json.loads(s3_storage.read_bytes(join(uri, "bundle.json")))
    assert manifest["format"] == "depthseg-bundle"
