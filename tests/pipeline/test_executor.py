"""The executor: tasks run the same here and on Ray, and the embedded Ray listens on loopback only."""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest

from pipeline.errors import StageError
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


def refuse(x: int) -> int:
    raise StageError(f"item {x}: refused")


def test_a_task_error_comes_back_as_the_exception_the_task_raised(ray_session):
    with pytest.raises(StageError) as raised:
        list(run_tasks(refuse, [7], "ray"))
    assert type(raised.value) is StageError and str(raised.value) == "item 7: refused"
    notes = "\n".join(raised.value.__notes__)  # the remote traceback, for --verbose, without colour codes
    assert "raised in a Ray task" in notes and "in refuse" in notes and "\x1b[" not in notes
