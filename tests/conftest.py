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


def start_ray_node(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block` on 127.0.0.1 in a process group of its own; returns once its runtime has started."""
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
         "--disable-usage-stats", *args,
         # Ports of our own: the agents' defaults (52365, ...) may be held by another Ray on this machine, such as
         # the test session's, and a job agent that cannot bind leaves the Jobs API with "No available agent".
         "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
         *(["--ray-client-server-port", str(free_port())] if "--head" in args else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    said = []
    for line in node.stdout:
        if "Ray runtime started" in line:
            return node
        said.append(line)
    stop_ray_node(node)
    pytest.fail(f"ray start {' '.join(args)} exited before its runtime started:\n{''.join(said[-30:])}")


def stop_ray_node(node: subprocess.Popen) -> None:
    """Through the node's own process group: `ray stop` would kill every Ray on the machine, the session's included."""
    os.killpg(node.pid, signal.SIGTERM)
    node.wait(timeout=60)


@pytest.fixture
def ray_head():
    """A real `ray start --head` on 127.0.0.1 with its dashboard (and so the Jobs API)."""
    port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # AF_UNIX paths must stay short
    head = start_ray_node(
        ["--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
         "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", temp_dir],
        {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    try:
        yield RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    finally:
        stop_ray_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass(frozen=True)
class TwoNodes:
    address: str
    home: dict[str, Path]  # node name -> its own disk: WEBTEXT_CACHE of every process the node starts


@pytest.fixture
def ray_two_nodes(tmp_path):
    """A Ray cluster of two nodes with one CPU each, so that 2 training ranks land one per node, and a cache
    directory each: on one machine, two machines' disks that share nothing (run it in a loopback-only namespace)."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray2", dir="/tmp")
    home = {name: tmp_path / f"node-{name}" for name in ("a", "b")}
    # A multi-node cluster: not Ray's single-machine mode, which the embedded Ray uses to stay on loopback.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}
    nodes = []
    try:
        nodes.append(start_ray_node(["--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard",
                                     "false", "--temp-dir", temp_dir], {**env, "WEBTEXT_CACHE": str(home["a"])}))
        nodes.append(start_ray_node(["--address", f"127.0.0.1:{port}", "--num-cpus", "1"],
                                    {**env, "WEBTEXT_CACHE": str(home["b"])}))
        yield TwoNodes(f"127.0.0.1:{port}", home)
    finally:
        for node in reversed(nodes):
            stop_ray_node(node)
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
