"""Shared fixtures: one embedded, loopback-only Ray for the whole session; Ray clusters started as a user would;
a local S3; the six corpus stages built end to end once for the session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, start_ray_node, stop_ray_node


LOCAL_S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def ray_session():
    """An embedded Ray with 2 CPUs, started once (about 3 s) and shut down at the end of the session."""
    from pipeline.executor import connect_ray

    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # AF_UNIX paths must stay short
    os.environ["WEBTEXT_RAY_TMP"] = temp_dir
    # Its workers keep the environment they start with: the local S3 servers' (moto's) dummy credentials, so that
    # a command joining this Ray reads a local bucket as it would with its own embedded Ray.
    for key, value in LOCAL_S3_ENV.items():
        os.environ.setdefault(key, value)
    connect_ray(num_cpus=2)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass(frozen=True)
class RayHead:
    address: str  # for --address / ray.init
    dashboard_url: str  # for the Jobs API


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
    for key, value in LOCAL_S3_ENV.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in this process, shared by every server it starts: each test starts empty
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    yield lambda path: f"s3://{path}?{options}"
    server.stop()


@dataclass(frozen=True)
class Corpus:
    out: Path  # the output root: urls/ crawl/ extract/ filter/ dedup/ tokenize/ and report.html
    pages: list  # what the local web served, each page with what the stages should make of it
    expected_urls: set[str]  # the URL table the planted dump should give
    truth: dict  # per dead page's url_norm: [archive, capture time] it is recovered from, or None (lost)
    stdout: str  # what the command printed


@pytest.fixture(scope="session")
def e2e_corpus(tmp_path_factory, ray_session) -> Corpus:
    """`webtext build-corpus` run once for the session as a user runs it on a cluster (its own process, joining the
    session's Ray through --address) on the demo's world: a small local web with faults, and a dump linking to it
    with the truth planted. The demo, report and truth-check tests read it; a test that must change it copies it
    first. (The demo's own test starts an embedded Ray in its command.)"""
    from jobs.demo import demo_config
    from jobs.fixtures.archivegen import plant
    from jobs.fixtures.dumpgen import submissions_for_web, write_dump
    from jobs.fixtures.localweb import LocalWeb

    root = tmp_path_factory.mktemp("corpus")
    out = root / "out"
    web = LocalWeb(seed=0, n_hosts=8, pages_per_host=6, hang_s=30.0)
    web.start()
    planted = None
    try:
        pages = web.pages()
        records, expected_urls = submissions_for_web([p.url for p in pages], seed=0)
        planted = plant(web, pages, records, out / "archives")  # dead pages in a local Wayback and Common Crawl
        dump = write_dump(root / "RS_demo.zst", records, "zst")
        # The demo's settings (its local web's and archives' addresses, short timeouts), as a config file.
        settings = demo_config(web)
        settings.crawl = settings.crawl.model_copy(update={"source": "live+archive", "archive": planted.config})
        config = root / "build_corpus.yaml"
        config.write_text(json.dumps(settings.model_dump(mode="json")))
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", "build-corpus", "--dumps", str(dump), "--out",
                               str(out), "--config", str(config), "--address",
                               ray_session.get_runtime_context().gcs_address], cwd=REPO, capture_output=True, text=True,
                              timeout=600)
    finally:
        web.stop()
        if planted is not None:
            planted.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Corpus(out, pages, {url for url in expected_urls if not url.endswith(".pdf")}, planted.truth, proc.stdout)
