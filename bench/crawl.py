"""Crawl throughput against the politeness bound, and peak memory as the number of URLs grows.

The local web (`jobs.fixtures.localweb`, two processes on one port) serves 100 hosts with 50 ms of latency on every
response.
With per-host concurrency 1 no crawler can beat min(global concurrency, hosts x per-host concurrency) / latency
pages per second: that bound is the yardstick. Measured, in the same run:
- ours: `webtext crawl` (the stage, local executor, one fetch task) on N URLs: robots.txt, politeness, SSRF guard,
  WARC and fetch log included; pages/s from the stage's own elapsed time;
- bare: a plain aiohttp loop with the same per-host and global semaphores that only reads the bodies;
- memory: the crawl's peak RSS (its own process) for 5k and 20k fetched URLs (growth should be ~1), and for 100k
  URLs that robots.txt disallows: every one still goes through partition, round-robin order, the in-flight window,
  the fetch log and the checkpoints, only without the 50 ms wait, so the 100k table fits the time budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
HOSTS, LATENCY, GLOBAL = 100, 0.05, 64
BOUND = min(GLOBAL, HOSTS * 1) / LATENCY
THROUGHPUT_URLS = int(os.environ.get("BENCH_CRAWL_URLS", 5_000))
MEMORY_FETCHED = 20_000
MEMORY_TABLE = 100_000
SERVER_PROCESSES = int(os.environ.get("BENCH_CRAWL_SERVERS", 2))


def serve(processes: int = SERVER_PROCESSES) -> tuple[list[subprocess.Popen], int]:
    """The local web in `processes` processes sharing one port (SO_REUSEPORT)."""
    procs, port = [], 0
    for _ in range(processes):
        proc = subprocess.Popen([sys.executable, "-m", "jobs.fixtures.localweb", "--hosts", str(HOSTS),
                                 "--pages", "1000", "--latency", str(LATENCY), "--plain-robots", "--seconds", "900",
                                 "--reuse-port", "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        port = json.loads(proc.stdout.readline())["port"]
        procs.append(proc)
    return procs, port


def urls(n: int, port: int, path: str = "article") -> list[str]:
    return [f"http://site{i % HOSTS:03d}.web.test:{port}/{path}/{i // HOSTS}" for i in range(n)]


def write_table(directory: Path, url_list: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"url": url_list}), directory / "part-00000.parquet")


def crawl(urls_dir: Path, out: Path, port: int, extra: dict | None = None) -> tuple[dict, int]:
    settings = {"allow_networks": ["127.0.0.0/8"], "resolve": {"*.web.test": f"127.0.0.1:{port}"}, "min_delay_s": 0,
                "global_concurrency": GLOBAL, "num_buckets": 1, **(extra or {})}
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    proc = subprocess.Popen([sys.executable, "-m", "jobs.crawl", "--urls", str(urls_dir), "--out", str(out),
                             "--executor", "local", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"crawl failed with status {status}")
    manifest = json.loads((out / "crawl" / "_manifest.json").read_text())
    return manifest, usage.ru_maxrss * 1024


async def bare(url_list: list[str], port: int) -> float:
    import aiohttp

    hosts: dict[str, asyncio.Semaphore] = {}
    global_slots = asyncio.Semaphore(GLOBAL)
    resolver_map = {"*.web.test": f"127.0.0.1:{port}"}
    from pipeline.ssrf import AddressGuard, GuardedResolver

    connector = aiohttp.TCPConnector(resolver=GuardedResolver(AddressGuard(enabled=False), resolver_map),
                                     limit=GLOBAL, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(url: str) -> None:
            host = url.split("/")[2]
            async with hosts.setdefault(host, asyncio.Semaphore(1)), global_slots:
                async with session.get(url) as resp:
                    await resp.read()

        window = asyncio.Semaphore(2000)
        started = time.perf_counter()

        async def bounded(url: str) -> None:
            try:
                await one(url)
            finally:
                window.release()

        tasks = []
        for url in url_list:
            await window.acquire()
            tasks.append(asyncio.create_task(bounded(url)))
        await asyncio.gather(*tasks)
        return len(url_list) / (time.perf_counter() - started)


def main() -> int:
    servers, port = serve()
    work = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    try:
        url_list = urls(THROUGHPUT_URLS, port)
        write_table(work / "urls", url_list)
        # Each server process renders a page once and keeps it: passes not counted, so no run pays for that.
        for _ in range(SERVER_PROCESSES):
            asyncio.run(bare(url_list, port))
        ours, peaks, bare_rates = [], [], []
        for run in range(3):  # interleaved, so that load from elsewhere on the machine hits both alike
            manifest, peak = crawl(work / "urls", work / f"out{run}", port)
            assert manifest["funnel"].get("outcome:ok") == THROUGHPUT_URLS, manifest["funnel"]
            ours.append(THROUGHPUT_URLS / manifest["elapsed_s"])
            peaks.append(peak)
            bare_rates.append(asyncio.run(bare(url_list, port)))
        ours_rate, bare_rate = sorted(ours)[1], sorted(bare_rates)[1]
        print(f"bound {BOUND:.0f} pages/s (min({GLOBAL}, {HOSTS} hosts x 1) / {LATENCY * 1000:.0f} ms)")
        print(f"ours  {ours_rate:.0f} pages/s (median of {', '.join(f'{r:.0f}' for r in ours)}) on {THROUGHPUT_URLS} URLs")
        print(f"bare  {bare_rate:.0f} pages/s (median of {', '.join(f'{r:.0f}' for r in bare_rates)})")

        small_peak = sorted(peaks)[1]
        write_table(work / "urls-large", urls(MEMORY_FETCHED, port))
        manifest, large_peak = crawl(work / "urls-large", work / "mem-large", port)
        assert manifest["funnel"].get("outcome:ok") == MEMORY_FETCHED, manifest["funnel"]
        write_table(work / "urls-table", urls(MEMORY_TABLE, port, "private"))
        manifest, table_peak = crawl(work / "urls-table", work / "mem-table", port)
        assert manifest["funnel"].get("outcome:robots_disallowed") == MEMORY_TABLE, manifest["funnel"]
        print(f"memory: {THROUGHPUT_URLS} fetched {small_peak / 2**20:.0f} MiB, {MEMORY_FETCHED} fetched "
              f"{large_peak / 2**20:.0f} MiB, {MEMORY_TABLE} disallowed {table_peak / 2**20:.0f} MiB (peak RSS)")
        print(f"RESULT crawl_vs_politeness_bound={ours_rate / BOUND:.3f} goal>=0.8")
        print(f"RESULT crawl_vs_bare_aiohttp={ours_rate / bare_rate:.3f} goal>=0.8")
        print(f"RESULT crawl_memory_growth_{MEMORY_FETCHED // 1000}k_vs_{THROUGHPUT_URLS // 1000}k="
              f"{large_peak / small_peak:.2f} goal<=1.25")
        print(f"RESULT crawl_peak_rss_mib_{MEMORY_TABLE // 1000}k_urls={table_peak / 2**20:.0f} goal<=1024")
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
