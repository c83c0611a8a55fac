"""Shared fixtures: one embedded, loopback-only Ray for the whole session; paths to the shared real data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    address: str  # for --address / ray.init
    dashboard_url: str  # for the Jobs API


@pytest.fixture
def ray_head():
    """A real `ray start --head` on 127.0.0.1 with its dashboard (and so the Jobs API), stopped through its own
    process group: `ray stop` would kill every Ray on the machine, the session's included."""
    port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # AF_UNIX paths must stay short
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
         "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats",
         # Ports of our own: the agents' defaults (52365, ...) may be held by another Ray on this machine, such as
         # the test session's, and a job agent that cannot bind leaves the Jobs API with "No available agent".
         "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in head.stdout:
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start --head exited before the runtime started")
        yield RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def s3(monkeypatch):
    """A local S3 (moto) on 127.0.0.1; yields a function making s3:// URIs that point at it."""
    moto_server = pytest.importorskip("moto.server")
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    yield lambda path: f"s3://{path}?{options}"
    server.stop()
