"""Archive recovery: how many planted dead URLs come back with the right capture, and what the index join and the
range fetches cost against the bare libraries underneath.

Measured, in the same run (a moto S3 and, when `.venv/pywb` exists, pywb, all on 127.0.0.1):
- recovery: RECOVER_URLS dead URLs, each with a right capture (200 HTML, closest to its first_utc) and decoys (a
  closer 404, a later version, a PDF between); a tenth of them moved: their only capture is a 301 to the URL that
  has those captures. Half in a pywb Wayback collection (CDX + id_ replay), half in a Common Crawl columnar index
  (redirects and 404s in its crawldiagnostics subset, as Common Crawl files them) + WARC in S3 (join, redirect
  rounds, range reads); the share recovered with the planted capture;
- index join: `join_index` (SURT keys, footer prefilter, row groups of the URLs' hosts only, the choice) on one
  core against a bare pyarrow join of the same URL table with the whole index (read, hash join on url_surtkey,
  the same choice); URLs per second, and Arrow's peak memory of each in a fresh process for an index 4x larger;
- range fetches: `records.fetch_capture` of Common Crawl records (through the fetcher's slot, an S3 range read,
  inflate, warcio) against bare pyarrow `read_at` of the same offsets (no parsing at all), both sequential.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncio
import os
import random
import statistics
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.archive.cdx import Capture, time_of, timestamp_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from jobs.fixtures.archives import (LocalWayback, Snapshot, index_row, put_object, pywb_available, start_s3, write_index,
                                    write_warc)
from pipeline.archive.index_join import choose_captures, index_files, join_index, surt_key
from pipeline.archive.records import fetch_capture
from pipeline.archive.recover import Recoverer
from pipeline.fetch import FetchConfig, Fetcher, HttpTransport
from pipeline.storage import filesystem

RECOVER_URLS = int(os.environ.get("BENCH_ARCHIVE_URLS", 200))
INDEX_HOSTS, PAGES_PER_HOST, URL_HOSTS = 2_000, 50, 100  # 100k index rows; URLs of 100 hosts
RANGE_RECORDS = 300
FIRST = time_of("20180301000000")
DAY = 86400
FAST = dict(allow_networks=["127.0.0.0/8"], min_delay_s=0.0, retry_budget=1.0, global_concurrency=64,
            per_host_concurrency=16)


def html(text: str) -> bytes:
    return f"<html><head><title>{text}</title></head><body><p>{text}</p></body></html>".encode()


def planted(i: int) -> tuple[str, list[Snapshot], str]:
    """A dead URL's captures and the timestamp of the right one (random side and distance); every tenth URL's
    captures are its new URL's, and its own only capture a 301 there."""
    url = f"http://dead{i % 37}.test/page/{i}"
    page = f"{url}/moved" if i % 10 == 9 else url
    right = FIRST + random.Random(i).choice([-1, 1]) * random.Random(i + 1).randint(1, 60) * DAY
    wrong = FIRST + (right - FIRST) * 3 + DAY
    between = (FIRST + right) // 2 if right != FIRST else FIRST
    snaps = [Snapshot(page, timestamp_of(right), body=html(f"right {i}")),
             Snapshot(page, timestamp_of(wrong), body=html(f"later {i}")),
             Snapshot(page, timestamp_of(between), status=404, reason="Not Found", body=b"x"),
             Snapshot(page, timestamp_of(between + 3600), body=b"%PDF", headers=[("Content-Type", "application/pdf")])]
    if page != url:
        snaps.append(Snapshot(url, timestamp_of(FIRST + DAY), status=301, reason="Moved Permanently",
                              headers=[("Content-Type", "text/html"), ("Location", page)]))
    return url, snaps, timestamp_of(right)


async def recover(archives: list[ArchiveSource], urls: list[str], table: pa.Table | None) -> list:
    config = FetchConfig(**FAST)
    transport = HttpTransport(config)
    fetcher = Fetcher(config, transport, len(urls))
    recoverer = Recoverer(fetcher, ArchiveConfig(archives=archives, window_days=365), table)
    try:
        return await asyncio.gather(*(recoverer.recover(u, FIRST) for u in urls))
    finally:
        await transport.close()


def bench_recovery(tmp: Path, s3) -> tuple[float, int]:
    plants = [planted(i) for i in range(RECOVER_URLS)]
    half = len(plants) // 2 if pywb_available() else 0
    right = {url: ts for url, _, ts in plants}
    results = []
    if half:
        write_warc(tmp / "wb.warc.gz", [s for _, snaps, _ in plants[:half] for s in snaps])
        with LocalWayback(tmp / "pywb", {"web": [tmp / "wb.warc.gz"]}) as wayback:
            results += asyncio.run(recover([wayback.archive("web", requests_per_s=1000)],
                                           [u for u, _, _ in plants[:half]], None))
    cc_snaps = [s for _, snaps, _ in plants[half:] for s in snaps]
    spans = write_warc(tmp / "cc.warc.gz", cc_snaps)
    put_object(s3("commoncrawl/crawl-data/r.warc.gz"), (tmp / "cc.warc.gz").read_bytes())
    root = s3("commoncrawl/index-r/")
    rows = [index_row(s, o, n, "crawl-data/r.warc.gz") for s, (o, n) in zip(cc_snaps, spans)]
    write_index(root, "CC-MAIN-2018-09", [r for r in rows if r["fetch_status"] == 200], row_group_size=64)
    write_index(root, "CC-MAIN-2018-09", [r for r in rows if r["fetch_status"] != 200], row_group_size=64,
                subset="crawldiagnostics")
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl", index=root, warc_prefix=s3("commoncrawl/"),
                       requests_per_s=1000)
    urls = [u for u, _, _ in plants[half:]]
    results += asyncio.run(recover([cc], urls, pa.table({"url": urls, "first_utc": [FIRST] * len(urls)})))
    good = sum(r.outcome == "ok" and timestamp_of(r.capture_time.timestamp()) == right[r.url] for r in results)
    return good / len(plants), half


def url_table() -> pa.Table:
    """PAGES_PER_HOST URLs of each of URL_HOSTS hosts, spread over the key space, in the 1x and the 4x index alike."""
    urls = [f"http://h{h:05d}.test/p/{k}" for h in range(0, INDEX_HOSTS, INDEX_HOSTS // URL_HOSTS)
            for k in range(PAGES_PER_HOST)]
    return pa.table({"url": urls, "first_utc": [FIRST] * len(urls)})


def build_index(s3, name: str, host_step: int) -> str:
    """An index of every `host_step`-th of INDEX_HOSTS hosts x PAGES_PER_HOST captures (2 crawls, half each)."""
    rng = random.Random(7)
    rows = []
    for h in range(0, INDEX_HOSTS, host_step):
        for k in range(PAGES_PER_HOST):
            rows.append(index_row(Snapshot(f"http://h{h:05d}.test/p/{k}", timestamp_of(FIRST + rng.randint(-90, 90) * DAY),
                                           status=rng.choice([200, 200, 200, 404])), k * 1000, 900, "w.warc.gz"))
    root = s3(f"commoncrawl/{name}/")
    write_index(root, "CC-MAIN-2018-09", rows[: len(rows) // 2], row_group_size=2_000, files=4)
    write_index(root, "CC-MAIN-2018-13", rows[len(rows) // 2:], row_group_size=2_000, files=4)
    return root


def bare_join(urls: pa.Table, root: str, config: ArchiveConfig) -> pa.Table:
    """The same result the plain way: the whole index read, hash-joined on url_surtkey, the same choice."""
    keys = pa.table({"url": urls["url"], "url_surtkey": [surt_key(u) for u in urls["url"].to_pylist()],
                     "first_utc": urls["first_utc"]})
    pieces = []
    for file in index_files(root):
        fs, path = filesystem(file.uri)
        with fs.open_input_file(path) as f:
            index = pq.read_table(f, columns=["url_surtkey", "url", "fetch_time", "fetch_status", "fetch_redirect",
                                              "content_mime_detected", "warc_filename", "warc_record_offset",
                                              "warc_record_length"])
        index = index.rename_columns(["url_surtkey", "capture_url", *index.column_names[2:]])
        joined = keys.join(index, "url_surtkey", join_type="inner")
        pieces.append(joined.append_column("crawl", pa.array([file.crawl] * joined.num_rows, pa.string())))
    from pipeline.archive.index_join import CAPTURES_SCHEMA

    return choose_captures(pa.concat_tables(pieces).select(CAPTURES_SCHEMA.names).cast(CAPTURES_SCHEMA), config)


def join_memory(kind: str, root: str) -> int:
    """Arrow's peak allocation of one join, in a fresh process."""
    code = f"""
import sys, pyarrow as pa
sys.path.insert(0, {str(REPO)!r})
import bench.archive as b
from pipeline.archive.config import ArchiveConfig
urls = b.url_table()
root = {root!r}
if {kind!r} == "ours":
    b.join_index(urls, root, ArchiveConfig(window_days=365))
else:
    b.bare_join(urls, root, ArchiveConfig(window_days=365))
print(pa.default_memory_pool().max_memory())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return int(out.stdout.split()[-1])


def bench_join(s3) -> tuple[float, float, float]:
    config = ArchiveConfig(window_days=365)
    small, large, urls = build_index(s3, "index-1x", 4), build_index(s3, "index-4x", 1), url_table()
    ours_t, bare_t = [], []
    for _ in range(3):
        start = time.perf_counter()
        ours, read = join_index(urls, large, config)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare = bare_join(urls, large, config)
        bare_t.append(time.perf_counter() - start)
    assert ours.sort_by("url").equals(bare.sort_by("url")), "the join and the bare join disagree"
    ratio = statistics.median(bare_t) / statistics.median(ours_t)
    ours_growth = join_memory("ours", large) / join_memory("ours", small)
    bare_growth = join_memory("bare", large) / join_memory("bare", small)
    print(f"index join: {urls.num_rows} URLs of {URL_HOSTS} hosts against {INDEX_HOSTS * PAGES_PER_HOST} index rows: ours "
          f"{urls.num_rows / statistics.median(ours_t):,.0f} URLs/s ({read['row_groups']} of "
          f"{read['row_groups_total']} row groups read), bare pyarrow {urls.num_rows / statistics.median(bare_t):,.0f} "
          f"URLs/s; Arrow peak memory 4x index / 1x: ours {ours_growth:.2f}, bare {bare_growth:.2f}", flush=True)
    return ratio, ours_growth, bare_growth


def bench_ranges(s3) -> float:
    snaps = [Snapshot(f"http://r.test/{i}", "20180301000000", body=html(f"record {i} " * 50)) for i in
             range(RANGE_RECORDS)]
    with tempfile.TemporaryDirectory() as tmp:
        spans = write_warc(Path(tmp) / "r.warc.gz", snaps)
        put_object(s3("commoncrawl/ranges/r.warc.gz"), (Path(tmp) / "r.warc.gz").read_bytes())
    archive = ArchiveSource(name="commoncrawl", kind="commoncrawl", index="unused", warc_prefix=s3("commoncrawl/ranges/"),
                            requests_per_s=1e6)
    captures = [Capture("commoncrawl", "CC", "20180301000000", s.url, 200, "text/html", "r.warc.gz", o, n)
                for s, (o, n) in zip(snaps, spans)]

    async def ours() -> int:
        config = FetchConfig(**{**FAST, "per_host_concurrency": 1})
        fetcher = Fetcher(config, None, len(captures))
        return sum([len((await fetch_capture(fetcher, archive, c)).body) > 0 for c in captures])

    def bare() -> int:
        fs, path = filesystem(s3("commoncrawl/ranges/r.warc.gz"))
        with fs.open_input_file(path) as f:
            return sum(len(f.read_at(n, o)) > 0 for o, n in spans)

    ours_t, bare_t = [], []
    for _ in range(3):
        start = time.perf_counter()
        assert asyncio.run(ours()) == RANGE_RECORDS
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert bare() == RANGE_RECORDS
        bare_t.append(time.perf_counter() - start)
    print(f"range fetches: ours {RANGE_RECORDS / statistics.median(ours_t):,.0f} records/s, bare pyarrow read_at "
          f"{RANGE_RECORDS / statistics.median(bare_t):,.0f} reads/s", flush=True)
    return statistics.median(bare_t) / statistics.median(ours_t)


def main() -> int:
    server, s3 = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            recovered, via_pywb = bench_recovery(Path(tmp), s3)
        print(f"recovery: {RECOVER_URLS} planted dead URLs ({via_pywb} through pywb, the rest through the "
              f"columnar index and range reads): {recovered:.3f} recovered with the right capture", flush=True)
        join_ratio, ours_growth, _ = bench_join(s3)
        range_ratio = bench_ranges(s3)
    finally:
        server.stop()
    print(f"RESULT archive_recovered_right_capture={recovered:.3f} goal>=0.99")
    print(f"RESULT index_join_vs_pyarrow={join_ratio:.2f} goal>=0.8")
    print(f"RESULT index_join_memory_4x_index={ours_growth:.2f} goal<=1.25")
    print(f"RESULT range_fetch_vs_pyarrow={range_ratio:.2f} goal>=0.8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
