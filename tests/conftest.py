"""Shared fixtures: one embedded, loopback-only Ray for the whole session; paths to the shared real data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """An embedded Ray with 2 CPUs, started once (about 3 s) and shut down at the end of the session."""
    from pipeline.executor import connect_ray

    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # AF_UNIX paths must stay short
    os.environ["WEBTEXT_RAY_TMP"] = temp_dir
    connect_ray(num_cpus=2)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
