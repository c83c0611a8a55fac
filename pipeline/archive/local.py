"""Local archives for tests and the demo: WARCs of captures written with warcio, and pywb serving them.

pywb is the real, Wayback-compatible archive server (its CDX server API and `id_` raw replay), run as the separate
server it is, from its own virtual environment (`make install` builds `.venv/pywb`: pywb 2.10 pins werkzeug and
redis and brings brotlipy, whose `brotli` module would shadow the crawler's). `WEBTEXT_PYWB` names another
environment's `bin` directory.

    captures = [Snapshot("http://a.test/x", "20150301100000", body=b"<html>…")]
    offsets = write_warc(path, captures)            # [(offset, length)] of each response record
    wayback = LocalWayback(root, {"web": [path]}); wayback.start()
    wayback.archive("web")                           # an ArchiveSource for the crawler
    wayback.stop()
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive.config import ArchiveSource

REPO = Path(__file__).resolve().parents[2]


def pywb_bin() -> Path:
    return Path(os.environ.get("WEBTEXT_PYWB") or REPO / ".venv" / "pywb" / "bin")


def pywb_available() -> bool:
    return (pywb_bin() / "wayback").exists() and (pywb_bin() / "python").exists()


@dataclass
class Snapshot:
    """One archived response: what a crawler saw at `timestamp` (14 digits, UTC)."""

    url: str
    timestamp: str
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "text/html; charset=utf-8")])
    reason: str = "OK"


def write_warc(path: Path, snapshots: list[Snapshot]) -> list[tuple[int, int]]:
    """A gzipped WARC of response records (warcio's writer, one gzip member each); (offset, length) of each."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from pipeline.archive.records import warc_date

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    spans = []
    for snap in snapshots:
        head = StatusAndHeaders(f"{snap.status} {snap.reason}",
                                [*snap.headers, ("Content-Length", str(len(snap.body)))], protocol="HTTP/1.1")
        record = writer.create_warc_record(snap.url, "response", payload=io.BytesIO(snap.body), http_headers=head,
                                           warc_headers_dict={"WARC-Date": warc_date(snap.timestamp)})
        start = buffer.tell()
        writer.write_record(record)
        spans.append((start, buffer.tell() - start))
    path.write_bytes(buffer.getvalue())
    return spans


def put_object(uri: str, data: bytes) -> None:
    """Write `data` at a path or URI (s3://…?endpoint_override=… for a local S3) as it is: not compressed again for
    a name ending in .gz, as pyarrow's streams would by default."""
    from pipeline.storage import filesystem

    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path, compression=None) as f:
        f.write(data)


def start_s3():
    """A moto S3 on 127.0.0.1 (for the demo and the benchmarks; the tests use their `s3` fixture); credentials in
    the environment, which Ray workers started later inherit. Returns the server and path -> s3:// URI."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    for key, value in {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    return server, lambda path: f"s3://{path}?{options}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BUILD_COLLECTIONS = """
import json, os, sys
from pywb.manager.manager import CollectionsManager
for name, warcs in json.loads(sys.argv[1]).items():
    manager = CollectionsManager(name, must_exist=False)
    if not os.path.isdir(manager.curr_coll_dir):
        manager.add_collection()
    manager.add_archives(warcs)
"""


class LocalWayback:
    """pywb on 127.0.0.1 serving one collection per entry of `collections` (name -> WARC files)."""

    def __init__(self, root: Path, collections: dict[str, list[Path]]):
        self.root, self.collections = Path(root), collections
        self.process: subprocess.Popen | None = None
        self.port = 0

    def build(self) -> None:
        """The collections, made and indexed by pywb's own collection manager (what `wb-manager init` and `add` run:
        directories, a copy of each WARC, a CDXJ index), all in one process of pywb's environment."""
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(pywb_bin() / "python"), "-c", BUILD_COLLECTIONS,
                               json.dumps({name: list(map(str, warcs)) for name, warcs in self.collections.items()})],
                              cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pywb could not build the collections: {done.stderr.strip()[-2000:]}")

    def start(self, timeout_s: float = 120.0) -> int:
        self.build()
        self.port = free_port()
        self.log = open(self.root / "wayback.log", "ab")
        self.process = subprocess.Popen([str(pywb_bin() / "wayback"), "--bind", "127.0.0.1", "-p", str(self.port)],
                                        cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        probe = f"{self.base}/{next(iter(self.collections))}/cdx?url=ready.test&output=json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pywb exited with {self.process.returncode}; see {self.root / 'wayback.log'}")
            try:
                with urllib.request.urlopen(probe, timeout=2):
                    return self.port
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"pywb did not answer within {timeout_s}s; see {self.root / 'wayback.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self.log.close()
        self.process = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def archive(self, collection: str, name: str = "wayback", requests_per_s: float = 50.0) -> ArchiveSource:
        """This server as the crawler's Wayback archive (one collection)."""
        return ArchiveSource(name=name, kind="wayback", cdx_api=f"{self.base}/{{collection}}/cdx",
                             replay=f"{self.base}/{{collection}}/{{timestamp}}id_/{{url}}",
                             collections=[collection], requests_per_s=requests_per_s)

    def __enter__(self) -> LocalWayback:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
