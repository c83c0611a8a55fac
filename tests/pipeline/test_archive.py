"""Archive recovery: CDX answers of every shape, the choice of a capture, Common Crawl records by range request
(local S3 by moto), and the Wayback path against a real pywb serving WARCs the test writes."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import ClientSession
from aiohttp import web as aioweb

from pipeline.archive.cdx import Capture, CdxClient, choose, crawl_time, parse_cdx, time_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from jobs.fixtures.archives import (LocalWayback, Snapshot, free_port, index_row, put_object, pywb_available,
                                    write_index, write_warc)
from pipeline.archive.records import parse_record
from pipeline.archive.recover import Recoverer
from pipeline.crawl import CrawlConfig, CrawlStage
from pipeline.extract import ExtractConfig, ExtractStage
from jobs.fixtures.localweb import LocalWeb
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs
from pipeline.urlnorm import normalize_url
from pipeline.config import ConfigError, load_config
from pipeline.fetch import FetchConfig, FetchError, Fetcher, FetchResult, HttpTransport
from tests.helpers import REPO, kill_when_written

FAST = dict(allow_networks=["127.0.0.0/8"], total_timeout_s=5, read_timeout_s=5, connect_timeout_s=2,
            backoff_base_s=0.05, retry_budget=1.0, min_delay_s=0.0)
HTML = [("Content-Type", "text/html; charset=utf-8")]
DAY = 86400
FIRST_UTC = time_of("20170501000000")


def page(text: str) -> bytes:
    body = "".join(f"<p>{text}: paragraph {i} of an article that the archive kept when the site went away, with "
                   f"enough words in it to read as the main text of the page.</p>" for i in range(4))
    return f"<html><head><title>{text}</title></head><body><article>{body}</article></body></html>".encode()


# The archive's captures: what each test URL has, and which capture is right for FIRST_UTC.
SNAPSHOTS = [
    Snapshot("http://gone.test/a", "20150301100000", body=page("a 2015")),
    Snapshot("http://gone.test/a", "20170610100000", body=page("a 2017 june")),  # closest to first_utc
    Snapshot("http://gone.test/a", "20170420100000", status=404, reason="Not Found", body=b"gone"),  # closer, a 404
    Snapshot("http://gone.test/a", "20170415100000", body=b"%PDF-1.4", headers=[("Content-Type", "application/pdf")]),
    Snapshot("http://gone.test/moved", "20170502000000", status=301, reason="Moved Permanently",
             headers=[*HTML, ("Location", "/b")]),
    Snapshot("http://gone.test/b", "20170503000000", body=page("b, the target of a redirect")),
    Snapshot("http://gone.test/old", "20090101000000", body=page("too old for the window")),
    Snapshot("http://gone.test/loop1", "20170502000000", status=302, reason="Found", headers=[("Location", "/loop2")]),
    Snapshot("http://gone.test/loop2", "20170502000000", status=302, reason="Found", headers=[("Location", "/loop1")]),
]


# ---------------------------------------------------------------------------------------------------------------
# Units


def test_parse_cdx_reads_every_answer_shape():
    ndjson = (b'{"urlkey": "test,gone)/a", "timestamp": "20170610100000", "url": "http://gone.test/a", '
              b'"mime": "text/html", "status": "200", "filename": "x.warc.gz", "offset": "12", "length": "345"}\n'
              b'{"urlkey": "test,gone)/a", "timestamp": "20170610", "url": "http://gone.test/a", "mime": "warc/revisit",'
              b' "status": "-"}\n')
    a, b = parse_cdx(ndjson, "wb", "web", "here")
    assert (a.status, a.mime, a.filename, a.offset, a.length, a.time) == (
        200, "text/html", "x.warc.gz", 12, 345, time_of("20170610100000"))
    assert b.status is None and b.offset is None and b.time == time_of("20170610000000")
    # The Wayback Machine: rows under a header row, its own field names.
    ia = json.dumps([["urlkey", "timestamp", "original", "mimetype", "statuscode", "digest", "length"],
                     ["test,gone)/a", "20170610100000", "http://gone.test/a", "text/html", "200", "D", "900"]])
    (c,) = parse_cdx(ia.encode(), "ia", "", "here")
    assert (c.url, c.status, c.mime, c.length) == ("http://gone.test/a", 200, "text/html", 900)
    # Common Crawl: the detected MIME type wins over the served one.
    (d,) = parse_cdx(b'{"timestamp": "2017", "url": "http://x/", "mime": "application/octet-stream", '
                     b'"mime-detected": "text/html", "status": "200"}', "cc", "CC-MAIN-2017-22", "here")
    assert d.mime == "text/html" and d.time == time_of("20170101000000")
    assert parse_cdx(b"", "wb", "web", "here") == [] and parse_cdx(b"[]", "wb", "", "here") == []
    with pytest.raises(FetchError, match="here: not a CDX answer") as err:
        parse_cdx(b"<html>rate limited</html>", "wb", "web", "here")
    assert err.value.outcome == "archive_error"


def test_choose_the_html_200_capture_closest_to_first_utc():
    config = ArchiveConfig(window_days=60)
    captures = [Capture("wb", "web", s.timestamp, s.url, s.status, s.headers[0][1].split(";")[0]) for s in SNAPSHOTS]
    chosen = choose([c for c in captures if c.url.endswith("/a")], FIRST_UTC, config)
    assert chosen.timestamp == "20170610100000"  # not the closer 404, nor the closer PDF, nor 2015 (out of window)
    wide = choose([c for c in captures if c.url.endswith("/a")], time_of("20150401000000"), ArchiveConfig())
    assert wide.timestamp == "20150301100000"
    assert choose([c for c in captures if c.url.endswith("/old")], FIRST_UTC, config) is None
    redirect = choose([c for c in captures if c.url.endswith("/moved")], FIRST_UTC, config)
    assert redirect.status == 301  # no page: the redirect, to follow
    # no first_utc: the earliest page
    assert choose([c for c in captures if c.url.endswith("/a")], None, config).timestamp == "20150301100000"
    tie = [Capture("wb", "", "20170502000000", "u", 200, "text/html"),
           Capture("wb", "", "20170430000000", "u", 200, "text/html")]
    assert choose(tie, FIRST_UTC, config).timestamp == "20170430000000"  # equally close: the earlier


def test_common_crawl_crawls_asked_nearest_first_within_the_window():
    assert crawl_time("CC-MAIN-2017-22") == time_of("20170529000000") and crawl_time("web") is None
    archive = ArchiveSource(name="cc", kind="commoncrawl", cdx_api="http://i/{collection}-index",
                            warc_prefix="http://d/", collections=["CC-MAIN-2013-20", "CC-MAIN-2016-40",
                                                                  "CC-MAIN-2017-13", "CC-MAIN-2017-22",
                                                                  "CC-MAIN-2018-05"])
    client = CdxClient(None, archive, ArchiveConfig(window_days=200))
    # 2016-40 started before the window but runs into it; 2018-05 starts after it; 2013-20 ended long before
    assert client.collections(FIRST_UTC) == ["CC-MAIN-2017-22", "CC-MAIN-2017-13", "CC-MAIN-2016-40"]
    assert client.collections(None) == archive.collections
    query = client.query("CC-MAIN-2017-22", "http://gone.test/a?x=1", FIRST_UTC)
    assert query.startswith("http://i/CC-MAIN-2017-22-index?url=http%3A%2F%2Fgone.test%2Fa%3Fx%3D1&output=json")
    assert "from=20161013000000" in query and "to=20171117000000" in query


def test_archive_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("archives:\n- {name: cc, kind: commoncrawl, cdx_api: 'http://i/{collection}-index'}\n")
    with pytest.raises(ConfigError, match="a commoncrawl archive needs `warc_prefix`"):
        load_config(ArchiveConfig, bad)
    with pytest.raises(ConfigError, match="unknown key 'archives.0.rate'"):
        load_config(ArchiveConfig, None, ["archives=[{name: w, kind: wayback, cdx_api: x, replay: y, rate: 1}]"])


def test_which_live_outcomes_are_dead():
    recoverer = Recoverer(Fetcher(FetchConfig(), None, 1), ArchiveConfig(dead_statuses=[404, 410, 451]))
    dead = [FetchResult("u", "http_status", status=404), FetchResult("u", "http_status", status=451),
            FetchResult("u", "connect_error"), FetchResult("u", "dns_error"), FetchResult("u", "robots_unreachable")]
    alive = [FetchResult("u", "ok", status=200), FetchResult("u", "http_status", status=500),
             FetchResult("u", "timeout"), FetchResult("u", "robots_disallowed"), FetchResult("u", "too_large")]
    assert all(map(recoverer.is_dead, dead)) and not any(map(recoverer.is_dead, alive))


def test_each_archive_host_is_paced_at_its_rate():
    fetcher = Fetcher(FetchConfig(min_delay_s=1.0), None, 1)
    cc = ArchiveSource(name="cc", kind="commoncrawl", cdx_api="https://index.cc.test/{collection}-index",
                       warc_prefix="s3://commoncrawl/?endpoint_override=127.0.0.1:9", requests_per_s=4)
    wb = ArchiveSource(name="wb", kind="wayback", cdx_api="https://wb.test/cdx",
                       replay="https://wb.test/web/{timestamp}id_/{url}", requests_per_s=0.5)
    Recoverer(fetcher, ArchiveConfig(archives=[cc, wb]))
    assert [fetcher.host(key).pace.delay for key in ("index.cc.test:443", "commoncrawl.s3:0", "wb.test:80",
                                                     "page.test:80")] == [0.25, 0.25, 2.0, 1.0]


def test_an_indexed_archive_asked_about_a_url_outside_its_join_says_so():
    cc = ArchiveSource(name="cc", kind="commoncrawl", index="s3://commoncrawl/cc-index/", warc_prefix="s3://commoncrawl/")
    recoverer = Recoverer(Fetcher(FetchConfig(), None, 1), ArchiveConfig(archives=[cc]))
    result = asyncio.run(recoverer.recover("http://a.test/", FIRST_UTC))
    assert (result.outcome, result.source) == ("archive_error", "lost") and "not in the index join" in result.error


def test_a_record_is_one_capped_gzip_member(tmp_path):
    spans = write_warc(tmp_path / "x.warc.gz", SNAPSHOTS[:2])
    data = (tmp_path / "x.warc.gz").read_bytes()
    offset, length = spans[1]
    exchange = parse_record(data[offset:offset + length], 1 << 20, "x")
    assert (exchange.url, exchange.status, exchange.body) == ("http://gone.test/a", 200, page("a 2017 june"))
    with pytest.raises(FetchError) as err:
        parse_record(data[offset:offset + length], 100, "x")
    assert err.value.outcome == "decoded_too_large"
    with pytest.raises(FetchError, match="not a gzip member"):
        parse_record(data[offset + 1:offset + length], 1 << 20, "x")
    with pytest.raises(FetchError, match="no response record|not a WARC record"):
        parse_record(gzip.compress(b"hello"), 1 << 20, "x")


# ---------------------------------------------------------------------------------------------------------------
# Against a real pywb (its own environment, a separate server on loopback) and a local S3


@pytest.fixture(scope="module")
def web():
    site = LocalWeb(seed=3, n_hosts=2, pages_per_host=1, faults_per_host=0)
    site.start()
    yield site
    site.stop()


def web_snapshots(web: LocalWeb) -> list[Snapshot]:
    """Captures of the local web's pages: dead ones (404, 500, a host that refuses connections) and a live one."""
    return [Snapshot(web.url(0, "/missing/5"), "20170612000000", body=page("missing 5, archived")),
            Snapshot(web.url(0, "/error/1"), "20170612000000", body=page("error 1, archived")),
            Snapshot(web.url(0, "/article/0"), "20170612000000", body=page("article 0, archived")),
            Snapshot("http://shop.closed.test/item", "20170430000000", body=page("a closed shop, archived"))]


@pytest.fixture(scope="module")
def wayback(tmp_path_factory, web):
    """pywb serving SNAPSHOTS twice: as a Wayback collection `web`, and as the CDX index of a Common Crawl crawl;
    and captures of the local web as a collection `crawl`."""
    if not pywb_available():
        pytest.skip("pywb's environment (.venv/pywb) is absent: run make install")
    root = tmp_path_factory.mktemp("pywb")
    spans = write_warc(root / "captures.warc.gz", SNAPSHOTS)
    write_warc(root / "web.warc.gz", web_snapshots(web))
    server = LocalWayback(root / "archive", {"web": [root / "captures.warc.gz"],
                                             "CC-MAIN-2017-18": [root / "captures.warc.gz"],
                                             "crawl": [root / "web.warc.gz"]})
    server.start()
    server.warc, server.spans = root / "captures.warc.gz", spans
    yield server
    server.stop()


def recover_all(archives: list[ArchiveSource], urls: list[tuple[str, int | None]], joined: bool = False, **fetch):
    """`joined`: the recoverer is given the URLs, to join with the columnar index of the archives that have one."""
    async def go():
        config = FetchConfig(**{**FAST, **fetch})
        transport = HttpTransport(config)
        fetcher = Fetcher(config, transport, len(urls))
        table = pa.table({"url": [u for u, _ in urls], "first_utc": pa.array([f for _, f in urls], pa.int64())})
        recoverer = Recoverer(fetcher, ArchiveConfig(archives=archives, window_days=60), table if joined else None)
        try:
            return await asyncio.gather(*(recoverer.recover(url, first) for url, first in urls))
        finally:
            await transport.close()

    return asyncio.run(go())


def test_wayback_raw_replay_of_the_closest_capture(wayback):
    urls = ["http://gone.test/a", "http://gone.test/moved", "http://gone.test/old", "http://gone.test/never",
            "http://gone.test/loop1"]
    a, moved, old, never, loop = recover_all([wayback.archive("web")], [(u, FIRST_UTC) for u in urls])
    assert (a.outcome, a.source, a.archive, a.collection, a.capture_time.timestamp()) == (
        "ok", "archive", "wayback", "web", time_of("20170610100000"))
    response = a.exchanges[-1]
    assert response.body == page("a 2017 june") and response.url == "http://gone.test/a"
    assert response.date == "2017-06-10T10:00:00Z"
    assert response.extra["Webtext-Archive"] == "wayback" and response.extra["Webtext-Collection"] == "web"
    assert response.extra["WARC-Source-URI"] == f"{wayback.base}/web/20170610100000id_/http://gone.test/a"
    assert response.extra["Webtext-Source-WARC"] == "captures.warc.gz"  # pywb's CDX names the original WARC
    assert not {"memento-datetime", "link"} & {k.lower() for k, _ in response.headers}
    # an archived redirect is followed within the archive, its hop kept like a live crawl's
    assert (moved.outcome, moved.final_url, [e.status for e in moved.exchanges]) == (
        "ok", "http://gone.test/b", [301, 200])
    assert moved.exchanges[-1].body == page("b, the target of a redirect")
    assert (old.outcome, old.source) == ("not_archived", "lost") and "no capture within 60 days" in old.error
    assert never.outcome == "not_archived"
    assert loop.outcome == "too_many_redirects" and "loop" in loop.error


def test_a_wayback_built_from_relative_paths_serves_them(tmp_path, monkeypatch):
    """`make demo` passes its output as a relative path: pywb, run in its own directory, must still find the WARCs."""
    if not pywb_available():
        pytest.skip("pywb's environment (.venv/pywb) is absent: run make install")
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    write_warc(Path("out") / "captures.warc.gz", SNAPSHOTS)
    server = LocalWayback(Path("out") / "pywb", {"web": [Path("out") / "captures.warc.gz"]})
    server.start()
    try:
        (a,) = recover_all([server.archive("web")], [("http://gone.test/a", FIRST_UTC)])
    finally:
        server.stop()
    assert (a.outcome, a.source, a.capture_time.timestamp()) == ("ok", "archive", time_of("20170610100000"))


def test_ssrf_guard_applies_to_archive_requests(wayback):
    """The archive on loopback is refused unless loopback is allowed, as for any page."""
    (result,) = recover_all([wayback.archive("web")], [("http://gone.test/a", FIRST_UTC)], allow_networks=[])
    assert (result.outcome, result.source) == ("blocked_address", "lost") and "wayback: blocked_address" in result.error


@pytest.mark.parametrize("via", ["https", "s3"])
def test_common_crawl_records_by_range_request(wayback, s3, via):
    """pywb as Common Crawl's index server (the same API: NDJSON with filename, offset, length), the WARC in a
    local S3, each record read by a range request: over HTTP through the fetcher, or through pyarrow's S3."""
    uri = s3("commoncrawl/crawl-data/captures.warc.gz")
    put_object(uri, wayback.warc.read_bytes())
    endpoint = uri.split("endpoint_override=", 1)[1].split("&", 1)[0]
    prefix = f"http://{endpoint}/commoncrawl/crawl-data/" if via == "https" else \
        s3("commoncrawl/crawl-data/")
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl", cdx_api=f"{wayback.base}/{{collection}}/cdx",
                       warc_prefix=prefix, collections=["CC-MAIN-2017-18"], requests_per_s=50)
    a, moved = recover_all([cc], [("http://gone.test/a", FIRST_UTC), ("http://gone.test/moved", FIRST_UTC)])
    assert (a.outcome, a.error, a.archive, a.collection, a.capture_time.timestamp()) == (
        "ok", None, "commoncrawl", "CC-MAIN-2017-18", time_of("20170610100000"))
    assert (a.archive_warc, a.archive_offset) == ("captures.warc.gz", wayback.spans[1][0])
    assert a.exchanges[-1].body == page("a 2017 june")
    assert a.exchanges[-1].extra["Webtext-Source-Offset"] == str(wayback.spans[1][0])
    assert moved.outcome == "ok" and moved.exchanges[-1].body == page("b, the target of a redirect")


def test_an_older_crawls_redirect_target_is_asked_of_the_cdx_api(wayback, s3):
    """Crawls before CC-MAIN-2019-47 have no fetch_redirect in the columnar index: the join chooses the redirect,
    only its record names the target, and the target is asked of the archive's CDX API (pywb as Common Crawl's
    index server), then read from the WARC like the redirect."""
    put_object(s3("commoncrawl/crawl-data/captures.warc.gz"), wayback.warc.read_bytes())
    hop, target = (next(i for i, s in enumerate(SNAPSHOTS) if s.url == url)
                   for url in ("http://gone.test/moved", "http://gone.test/b"))
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(root, "CC-MAIN-2017-18", [index_row(SNAPSHOTS[hop], *wayback.spans[hop], "captures.warc.gz")],
                subset="crawldiagnostics", older=True)
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl", cdx_api=f"{wayback.base}/{{collection}}/cdx",
                       index=root, warc_prefix=s3("commoncrawl/crawl-data/"), collections=["CC-MAIN-2017-18"],
                       requests_per_s=50)
    [moved] = recover_all([cc], [("http://gone.test/moved", FIRST_UTC)], joined=True)
    assert (moved.outcome, moved.final_url, [e.status for e in moved.exchanges]) == (
        "ok", "http://gone.test/b", [301, 200])
    assert (moved.archive_warc, moved.archive_offset) == ("captures.warc.gz", wayback.spans[target][0])
    # without a CDX API, the archive says that the target was not in the join
    no_cdx = cc.model_copy(update={"cdx_api": None})
    [lost] = recover_all([no_cdx], [("http://gone.test/moved", FIRST_UTC)], joined=True)
    assert lost.outcome == "archive_error" and "http://gone.test/b was not in the index join" in lost.error


def test_archive_requests_are_paced_per_host_and_wait_out_retry_after(wayback):
    """A front before pywb records when each archive request arrives and answers the first one 429 with
    Retry-After: 1. At 4 requests/s no two requests arrive closer than 0.25 s, none within 1 s of the 429."""
    arrivals: list[float] = []

    async def go():
        async with ClientSession() as upstream:
            async def handler(request: aioweb.Request) -> aioweb.Response:
                arrivals.append(time.monotonic())
                if len(arrivals) == 1:
                    return aioweb.Response(status=429, headers={"Retry-After": "1"})
                async with upstream.get(wayback.base + request.path_qs, allow_redirects=False) as r:
                    kept = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "location")}
                    return aioweb.Response(status=r.status, body=await r.read(), headers=kept)

            app = aioweb.Application()
            app.router.add_route("GET", "/{tail:.*}", handler)
            runner = aioweb.AppRunner(app)
            await runner.setup()
            site = aioweb.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            front = ArchiveSource(name="wayback", kind="wayback", cdx_api=base + "/{collection}/cdx",
                                  replay=base + "/{collection}/{timestamp}id_/{url}", collections=["web"],
                                  requests_per_s=4)
            config = FetchConfig(**FAST)
            transport = HttpTransport(config)
            recoverer = Recoverer(Fetcher(config, transport, 3), ArchiveConfig(archives=[front], window_days=60))
            try:
                return await asyncio.gather(*(recoverer.recover(f"http://gone.test/{p}", FIRST_UTC)
                                              for p in ("a", "b", "moved")))
            finally:
                await transport.close()
                await runner.cleanup()

    results = asyncio.run(go())
    assert [r.outcome for r in results] == ["ok", "ok", "ok"]
    assert len(arrivals) == 1 + 2 + 2 + 4  # the 429, then a CDX query and a replay per page, the redirect's hop
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert gaps[0] >= 1.0 and min(gaps) >= 0.25 - 0.01, gaps


# ---------------------------------------------------------------------------------------------------------------
# The crawl with sources


def crawl_with(web: LocalWeb, wayback: LocalWayback, tmp_path, source: str) -> tuple[dict[str, dict], dict]:
    urls = [web.url(0, "/article/0"), web.url(0, "/missing/5"), web.url(0, "/gone/7"), web.url(0, "/error/1"),
            "http://shop.closed.test/item"]
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"url": urls, "url_norm": [normalize_url(u) for u in urls],
                             "first_utc": [FIRST_UTC] * len(urls)}), tmp_path / "urls" / "part-00000.parquet")
    closed = free_port()  # nothing listens there: connection refused
    config = CrawlConfig(**{**FAST, "max_attempts": 1}, resolve={**web.resolve(), "*.closed.test": f"127.0.0.1:{closed}"},
                         source=source, archive=ArchiveConfig(archives=[wayback.archive("crawl")], window_days=60))
    result = run_stage(CrawlStage(config), expand_inputs([str(tmp_path / "urls")]), str(tmp_path / "out"),
                       RunOptions(executor="local", quiet=True))
    log = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "crawl").glob("part-*.parquet"))])
    return {row["url"]: row for row in log.to_pylist()}, result.funnel


def archived_body(out, row: dict):
    from warcio.archiveiterator import ArchiveIterator

    with open(out / "crawl" / row["warc_file"], "rb") as f:
        f.seek(row["warc_offset"])
        record = next(iter(ArchiveIterator(f)))
        return record.rec_headers, record.content_stream().read()


def test_live_plus_archive_recovers_dead_urls_only(web, wayback, tmp_path):
    log, funnel = crawl_with(web, wayback, tmp_path, "live+archive")
    live, missing, gone, error, closed = (log[u] for u in (
        web.url(0, "/article/0"), web.url(0, "/missing/5"), web.url(0, "/gone/7"), web.url(0, "/error/1"),
        "http://shop.closed.test/item"))
    assert (live["outcome"], live["source"], live["archive"]) == ("ok", "live", None)
    assert (missing["outcome"], missing["source"], missing["archive"], missing["collection"]) == (
        "ok", "archive", "wayback", "crawl")
    assert missing["capture_time"].timestamp() == time_of("20170612000000")
    assert missing["archive_warc"] == "web.warc.gz" and missing["archive_offset"] == 0
    headers, body = archived_body(tmp_path / "out", missing)
    assert body == page("missing 5, archived") and headers.get_header("Webtext-Archive") == "wayback"
    assert headers.get_header("WARC-Date") == "2017-06-12T00:00:00Z"
    assert (closed["outcome"], closed["source"]) == ("ok", "archive")  # connection refused: dead
    # 404 with no capture: the live outcome stays, what the archive said is in `error`
    assert (gone["outcome"], gone["status"], gone["source"]) == ("http_status", 410, "lost")
    assert "archives: wayback: no capture" in gone["error"]
    # 500 is not dead (it may come back): the archive is not asked, although it has the page
    assert (error["outcome"], error["status"], error["source"]) == ("http_status", 500, "lost")
    assert "archives" not in error["error"]
    assert (funnel["source:live"], funnel["source:archive"], funnel["source:lost"]) == (1, 2, 2)
    # extract passes the source and the capture time on to the documents
    run_stage(ExtractStage(ExtractConfig(detect_language=False)), expand_inputs([str(tmp_path / "out" / "crawl")]),
              str(tmp_path / "out"), RunOptions(executor="local", quiet=True))
    docs = pq.read_table(tmp_path / "out" / "extract").to_pylist()
    by_url = {d["url"]: d for d in docs}
    assert set(by_url) == {web.url(0, "/article/0"), web.url(0, "/missing/5"), "http://shop.closed.test/item"}
    assert (by_url[web.url(0, "/article/0")]["source"], by_url[web.url(0, "/article/0")]["capture_time"]) == (
        "live", None)
    recovered = by_url[web.url(0, "/missing/5")]
    assert recovered["source"] == "archive" and recovered["capture_time"].timestamp() == time_of("20170612000000")
    assert "missing 5, archived: paragraph 0" in recovered["text"]


def test_archive_source_takes_every_url_from_the_archives(web, wayback, tmp_path):
    web.reset_stats()
    log, funnel = crawl_with(web, wayback, tmp_path, "archive")
    assert {u: (r["outcome"], r["source"]) for u, r in log.items()} == {
        web.url(0, "/article/0"): ("ok", "archive"), web.url(0, "/missing/5"): ("ok", "archive"),
        web.url(0, "/gone/7"): ("not_archived", "lost"), web.url(0, "/error/1"): ("ok", "archive"),
        "http://shop.closed.test/item": ("ok", "archive")}
    _, body = archived_body(tmp_path / "out", log[web.url(0, "/article/0")])
    assert body == page("article 0, archived")  # the live page was not fetched
    assert not any(stats.requests for stats in web.stats().values())  # robots.txt included
    assert (funnel["source:archive"], funnel["source:lost"]) == (4, 1) and "source:live" not in funnel


@pytest.mark.slow
def test_an_archive_crawl_killed_and_rerun_asks_the_archive_only_for_unfinished_urls(wayback, tmp_path):
    """Archive lookups are checkpointed with the crawl's outcomes: after a SIGKILL, the rerun queries pywb's CDX
    API only for URLs with no outcome yet (or a redirect target of one), and every URL ends with one outcome."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    from urllib.parse import unquote

    urls = [f"http://gone.test/{p}" for p in ("a", "b", "moved", "old", "never", "loop1", "loop2")]
    (tmp_path / "urls").mkdir()
    pq.write_table(url_table_of(urls), tmp_path / "urls" / "part-00000.parquet")
    archives = {"archives": [wayback.archive("web", requests_per_s=3).model_dump()], "window_days": 60}
    settings = [item for key, value in {**FAST, "checkpoint_every": 1, "num_buckets": 1, "source": "archive",
                                        "archive": archives}.items()
                for item in ("--set", f"{key}={json.dumps(value)}")]
    command = [sys.executable, "-m", "jobs.crawl", "--urls", str(tmp_path / "urls"), "--out", str(tmp_path / "out"),
               "--executor", "local", *settings]
    log = Path(wayback.root) / "wayback.log"

    def queried(text: str) -> list[str]:
        return [unquote(u) for u in re.findall(r"GET /web/cdx\?url=([^&\s]+)", text)]

    before = len(log.read_text())
    segments = kill_when_written(command, tmp_path, "out/crawl/_resume/*/*/seg-*.parquet", 3, 120)
    done = set(pa.concat_tables([pq.read_table(s) for s in segments])["url"].to_pylist())
    assert 3 <= len(done) < len(urls)
    time.sleep(0.5)  # pywb's log lines of the killed run's last requests
    middle = len(log.read_text())
    assert subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0
    again = set(queried(log.read_text()[middle:]))
    redirect_targets = {"http://gone.test/b", "http://gone.test/loop1", "http://gone.test/loop2"}
    assert done - redirect_targets and again and not (again & done) - redirect_targets, (again, done)
    assert set(queried(log.read_text()[before:middle])) >= done - redirect_targets
    result = {r["url"]: r["outcome"] for r in pq.read_table(tmp_path / "out" / "crawl" / "part-00000.parquet").to_pylist()}
    assert result == {"http://gone.test/a": "ok", "http://gone.test/b": "ok", "http://gone.test/moved": "ok",
                      "http://gone.test/old": "not_archived", "http://gone.test/never": "not_archived",
                      "http://gone.test/loop1": "too_many_redirects", "http://gone.test/loop2": "too_many_redirects"}


def url_table_of(urls: list[str]) -> pa.Table:
    return pa.table({"url": urls, "url_norm": [normalize_url(u) for u in urls], "first_utc": [FIRST_UTC] * len(urls)})
