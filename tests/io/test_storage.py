"""Storage through a real S3 HTTP server: s3fs and GDAL /vsis3/ see the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from depthseg.errors import InputError, StorageError
from depthseg.io.catalog import describe_scene
from depthseg.io.s3server import FaultProxy
from depthseg.io.storage import S3Config, Storage, join, retries_so_far, with_retries
from depthseg.io.warp import read_pixels


def _write_cog(path: Path) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 1023, size=(4, 300, 260), dtype=np.uint16)
    profile = dict(
        driver="COG", width=260, height=300, count=4, dtype="uint16", nodata=0,
        crs="EPSG:32649", transform=from_origin(350000.0, 2700000.0, 0.8, 0.8),
        compress="zstd", blocksize=128,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def test_scene_round_trips_through_s3fs_and_vsis3(tmp_path, s3_storage, s3_prefix):
    local = tmp_path / "scene.tif"
    data = _write_cog(local)
    uri = f"{s3_prefix}/scenes/scene.tif"
    s3_storage.upload(local, uri)

    # s3fs, over HTTP: identical bytes.
    assert s3_storage.read_bytes(uri) == local.read_bytes()
    fs, path = s3_storage.fs(uri)
    assert fs.info(path)["size"] == local.stat().st_size

    # GDAL /vsis3/, over HTTP: identical pixels and georeferencing.
    info = describe_scene(uri, s3_storage)
    assert info.crs == "EPSG:32649"
    assert info.transform == tuple(from_origin(350000.0, 2700000.0, 0.8, 0.8))[:6]
    assert (info.height, info.width, info.count, info.dtype) == (300, 260, 4, "uint16")
    with s3_storage.gdal_env(), rasterio.open(s3_storage.gdal_path(uri)) as src:
        np.testing.assert_array_equal(src.read(), data)

    pixels, valid = read_pixels(info, s3_storage, 100, 50, 64, 64)
    np.testing.assert_array_equal(pixels, data[:, 100:164, 50:114])
    assert valid.all()


def test_window_past_the_edge_is_invalid_there(tmp_path):
    local = tmp_path / "scene.tif"
    data = _write_cog(local)
    pixels, valid = read_pixels(describe_scene(str(local), Storage()), Storage(), -10, 250, 40,
                                20)
    assert pixels.shape == (4, 40, 20)
    assert not valid[:10].any() and not valid[:, 10:].any()
    assert valid[10:, :10].all()
    np.testing.assert_array_equal(pixels[:, 10:, :10], data[:, :30, 250:260])


def test_real_worldview3_sample_opens_with_crs_and_transform(real_data):
    info = describe_scene(str(real_data / "worldview3_lasvegas_rgb_0.27m.tif"), Storage())
    assert info.crs == "EPSG:26911"
    assert info.count == 3 and info.dtype == "uint8"
    assert info.resolution == pytest.approx(0.27, abs=0.01)
    assert info.gsd() == pytest.approx(0.27, abs=0.01)
    with rasterio.open(real_data / "worldview3_lasvegas_rgb_0.27m.tif") as src:
        assert info.transform == tuple(src.transform)[:6]
        assert (info.height, info.width) == (src.height, src.width)


def test_missing_key_is_a_clear_error(s3_storage, s3_prefix):
    with pytest.raises(StorageError, match="does not exist"):
        s3_storage.read_bytes(f"{s3_prefix}/nope.bin")
    with pytest.raises(StorageError, match="cannot read raster"):
        describe_scene(f"{s3_prefix}/nope.tif", s3_storage)


def test_unknown_scheme_and_bad_endpoint_are_refused():
    with pytest.raises(InputError, match="gs://b/k"):
        Storage().fs("gs://b/k")
    with pytest.raises(InputError, match="not a URL"):
        S3Config(endpoint_url="127.0.0.1:9000")


def test_atomic_write_leaves_no_temporary_files(tmp_path, s3_storage, s3_prefix):
    for base in (str(tmp_path / "out"), s3_prefix):
        uri = join(base, "a", "run.json")
        s3_storage.write_bytes_atomic(uri, b"{}")
        s3_storage.write_bytes_atomic(uri, b'{"v": 2}')
        assert s3_storage.read_bytes(uri) == b'{"v": 2}'
    assert [p.name for p in (tmp_path / "out" / "a").iterdir()] == ["run.json"]


def test_transient_errors_are_retried_and_permanent_ones_are_not():
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("connection reset")
        return "ok"

    assert with_retries(flaky, base_delay_s=0.001) == "ok" and calls["n"] == 3

    def missing() -> None:
        calls["n"] += 1
        raise FileNotFoundError("no such key")

    calls["n"] = 0
    with pytest.raises(FileNotFoundError):
        with_retries(missing, base_delay_s=0.001)
    assert calls["n"] == 1


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("make", "transient"), [
    # Connection-level failures mid-operation: retried whole, found along the causes.
    (lambda: ConnectionResetError("reset by peer"), True),
    (lambda: _wrapped(OSError("upload failed"), _aiohttp("ServerDisconnectedError")), True),
    (lambda: _wrapped(OSError("read failed"), _aiohttp("ClientPayloadError")), True),
    # botocore has already retried what S3 answered (8 adaptive attempts): final here.
    (lambda: _wrapped(OSError("Please reduce your request rate."), _client_error("SlowDown", 503)),
     False),
    (lambda: _wrapped(PermissionError("Access Denied"), _client_error("AccessDenied", 403)),
     False),
    # A name that happens to hold "503" or "500 Internal" is not a server error.
    (lambda: FileNotFoundError("s3://bucket/scene_503.tif"), False),
    (lambda: ValueError("band 500 Internal is not known"), False),
    # Raised `from None` while handling a dropped connection: its own error, not transient.
    (lambda: _suppressed(FileNotFoundError("no such key"), ConnectionResetError()), False),
])
def test_only_connection_failures_are_retried_whole_by_class_not_text(make, transient):
    from depthseg.io.storage import _is_transient

    assert _is_transient(make()) is transient


def _aiohttp(name: str) -> Exception:
    import aiohttp

    if name == "ClientPayloadError":
        return aiohttp.ClientPayloadError("Response payload is not completed")
    return aiohttp.ServerDisconnectedError()


def _suppressed(err: Exception, context: Exception) -> Exception:
    err.__context__, err.__suppress_context__ = context, True
    return err


def _wrapped(err: Exception, cause: Exception) -> Exception:
    err.__cause__ = cause
    return err


def test_s3_config_from_env_reads_standard_variables():
    cfg = S3Config.from_env(
        {"AWS_ENDPOINT_URL": "https://minio.local:9000", "AWS_ACCESS_KEY_ID": "k",
         "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    )
    assert cfg.gdal_options()["AWS_S3_ENDPOINT"] == "minio.local:9000"
    assert cfg.gdal_options()["AWS_HTTPS"] == "YES"
    assert cfg.fsspec_options()["client_kwargs"]["endpoint_url"] == "https://minio.local:9000"


def test_repr_hides_the_secret_and_pickle_keeps_it():
    import pickle

    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    s3 = S3Config(endpoint_url="http://127.0.0.1:9000", key="AKIDEXAMPLE", secret=secret)
    storage = Storage(s3=s3)
    for obj in (s3, storage):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}", f"{[obj]}"):
            assert secret not in text
            assert "secret='***'" in text
            assert "key='AKIDEXAMPLE'" in text and "http://127.0.0.1:9000" in text
    assert pickle.loads(pickle.dumps(storage)).s3.secret == secret
    assert pickle.loads(pickle.dumps(s3)) == s3
    assert "secret=None" in repr(S3Config())  # nothing to hide: say so


@pytest.mark.parametrize("fault", ["cut", "drop", "fail"])
def test_scene_reads_cut_off_or_dropped_are_retried(fault, tmp_path, s3_server, s3_storage,
                                                    s3_prefix, caplog):
    local = tmp_path / "scene.tif"
    data = _write_cog(local)
    uri = f"{s3_prefix}/scenes/scene-{fault}.tif"
    s3_storage.upload(local, uri)
    # 30 % of the scene's GETs fail: once cut or dropped, GDAL's cache would fail every
    # later read of the file too, unless the retry reopens it uncached.
    with FaultProxy(s3_server.port, seed=3, only=lambda method, path: method == "GET"
                    and "/scenes/" in path, **{fault: 0.3}) as proxy:
        storage = proxy.storage()
        before = retries_so_far()
        info = describe_scene(uri, storage)
        for row in range(0, 300 - 64, 10):
            pixels, _ = read_pixels(info, storage, row, 50, 64, 64)
            np.testing.assert_array_equal(pixels, data[:, row:row + 64, 50:114])
    assert proxy.counts[fault] > 0
    assert retries_so_far() > before
    if fault != "fail":  # ours (GDAL retries 5xx itself and says so)
        assert any("retry 1 of 3" in r.getMessage() for r in caplog.records)


def test_a_scene_that_is_really_broken_still_fails_naming_it(tmp_path, s3_storage, s3_prefix):
    uri = f"{s3_prefix}/scenes/broken.tif"
    s3_storage.write_bytes_atomic(uri, b"II*\x00" + b"\x00" * 100)
    with pytest.raises(StorageError, match=r"broken.tif.* after 4 attempts .*check that it"):
        describe_scene(uri, s3_storage)


def test_temporary_credentials_send_their_session_token_from_s3fs_and_gdal(
        tmp_path, s3_server, s3_prefix, monkeypatch):
    token = "FwoGZXIvYXdzEXAMPLE-session-token"
    with FaultProxy(s3_server.port) as proxy:
        # STS / SSO / IRSA credentials: key, secret and a session token from the environment.
        options = s3_server.storage.s3
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(options.key))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", str(options.secret))
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
        storage = Storage.from_env()
        assert token not in repr(storage) and token not in str(storage)
        local = tmp_path / "scene.tif"
        data = _write_cog(local)
        uri = f"{s3_prefix}/scenes/token.tif"
        storage.upload(local, uri)  # s3fs
        info = describe_scene(uri, storage)  # GDAL /vsis3/
        pixels, _ = read_pixels(info, storage, 0, 0, 32, 32)
        np.testing.assert_array_equal(pixels, data[:, :32, :32])
    agents = {"gdal": [], "boto": []}
    for _method, _path, headers in proxy.requests:
        lowered = {k.lower(): v for k, v in headers.items()}
        kind = "gdal" if "gdal" in lowered.get("user-agent", "").lower() else "boto"
        agents[kind].append(lowered.get("x-amz-security-token"))
    assert agents["gdal"] and agents["boto"], agents
    assert set(agents["gdal"]) == {token} and set(agents["boto"]) == {token}


def test_jobs_hand_ray_absolute_local_paths(tmp_path, monkeypatch):
    """Ray Train runs workers in its run folder: relative paths are resolved on the driver."""
    from depthseg.io.storage import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("demo-out/chips.zarr") == str(tmp_path / "demo-out" / "chips.zarr")
    assert absolute("s3://bucket/chips.zarr") == "s3://bucket/chips.zarr"
    assert absolute("/data/x.tif") == "/data/x.tif"
    assert absolute("") == ""  # an empty --out stays empty, and its check names it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert absolute("~/da") == str(tmp_path / "home" / "da")
