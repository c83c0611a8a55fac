"""The executor: tasks run the same here and on Ray, and the embedded Ray listens on loopback only."""

from __future__ import annotations

import ipaddress
import os

import psutil

from pipeline.executor import LOOPBACK_ENV, run_tasks


def square(x: int) -> int:
    return x * x


def test_local_and_ray_give_the_same_results(ray_session):
    assert list(run_tasks(square, [1, 2, 3], "local")) == [1, 4, 9]
    assert sorted(run_tasks(square, [1, 2, 3], "ray")) == [1, 4, 9]


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_embedded_ray_listens_on_loopback_only(ray_session):
    # Inside a loopback-only namespace (CI) any Ray would; the first checks hold the mechanism that makes it so
    # on a machine with routable interfaces, where the listener check below is the one that bites.
    import ray._private.ray_constants as ray_constants

    assert os.environ[LOOPBACK_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert {node["NodeManagerAddress"] for node in ray_session.nodes()} == {"127.0.0.1"}
    processes = psutil.Process().children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in processes)  # the fixture's Ray runs under this process
    listening = []
    for proc in processes:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening, "Ray should be listening somewhere"
    exposed = [entry for entry in listening if not is_loopback(entry[1])]
    assert exposed == []
