"""Session fixtures: real services started by the tests themselves.

- an S3 server (moto's standalone server, its own process) on 127.0.0.1 at a free port,
  with a bucket, reached over HTTP by s3fs and GDAL's /vsis3/;
- one local Ray (``ray.init(num_cpus=2)``) shared by the tests that need it;
- synthetic regions written once per test run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from depthseg.io.s3server import LocalS3Server
from depthseg.io.storage import Storage

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ../shared/data/real beside the checkout; DEPTHSEG_REAL_DATA points a clone elsewhere at it.
REAL_DATA = Path(os.environ.get("DEPTHSEG_REAL_DATA",
                                REPO_ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """A running S3 HTTP server on 127.0.0.1."""
    with LocalS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_storage(s3_server: LocalS3Server) -> Storage:
    """Storage settings reaching the test S3 server (s3fs options and GDAL /vsis3/ options)."""
    return s3_server.storage


@pytest.fixture(scope="session")
def s3_bucket(s3_server: LocalS3Server) -> str:
    """``s3://`` URI of a bucket on the test server."""
    return s3_server.make_bucket("depthseg-test")


@pytest.fixture()
def s3_prefix(s3_bucket: str) -> str:
    """A fresh, empty ``s3://bucket/prefix`` for one test."""
    return f"{s3_bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[object]:
    """One local Ray instance for the whole session."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real sample imagery (read in place, never copied)."""
    if not REAL_DATA.is_dir():
        pytest.fail(f"real sample imagery missing: expected {REAL_DATA}; a checkout that "
                    "is not beside shared/ sets DEPTHSEG_REAL_DATA=/path/to/shared/data/real")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_region(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A 4-band uint16 synthetic region (1024 px), written once per run."""
    from depthseg.synthetic import make_region

    return make_region(tmp_path_factory.mktemp("region"), size=1024, seed=0)


@pytest.fixture(scope="session")
def synthetic_region_rgb(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A 3-band uint8 synthetic region (768 px), like the WorldView-3 RGB sample."""
    from depthseg.synthetic import make_region

    return make_region(tmp_path_factory.mktemp("region_rgb"), size=768, seed=1, dtype="uint8")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep fetched weights out of the user's ~/.cache during tests."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


SERVICE_FIXTURES = {"s3_server", "s3_storage", "s3_bucket", "s3_prefix", "ray_local"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use the S3 server or the shared Ray ``services`` (``make test-unit``)."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(autouse=True)
def _unit_lane_starts_no_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the unit lane (``-m 'not services'``), a test that starts Ray fails: mark it."""
    yield
    if "not services" in (request.config.getoption("markexpr") or ""):
        ray = sys.modules.get("ray")
        assert ray is None or not ray.is_initialized(), (
            "this test started Ray: it belongs to the services lane; give it the ray_local "
            "fixture or mark it slow")
