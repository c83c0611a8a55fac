"""Archive recovery: CDX answers of every shape, the choice of a capture, Common Crawl records by range request
(local S3 by moto), and the Wayback path against a real pywb serving WARCs the test writes."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest
from aiohttp import ClientSession, web

from pipeline.archive.cdx import Capture, CdxClient, choose, crawl_time, parse_cdx, time_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from pipeline.archive.local import LocalWayback, Snapshot, pywb_available, write_warc
from pipeline.archive.records import parse_record
from pipeline.archive.recover import Recoverer
from pipeline.config import ConfigError, load_config
from pipeline.fetch import FetchConfig, FetchError, Fetcher, HttpTransport

FAST = dict(allow_networks=["127.0.0.0/8"], total_timeout_s=5, read_timeout_s=5, connect_timeout_s=2,
            backoff_base_s=0.05, retry_budget=1.0, min_delay_s=0.0)
HTML = [("Content-Type", "text/html; charset=utf-8")]
DAY = 86400
FIRST_UTC = time_of("20170501000000")


def page(text: str) -> bytes:
    return f"<html><head><title>{text}</title></head><body><p>{text}</p></body></html>".encode()


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
def wayback(tmp_path_factory):
    """pywb serving SNAPSHOTS twice: as a Wayback collection `web`, and as the CDX index of a Common Crawl crawl."""
    if not pywb_available():
        pytest.skip("pywb's environment (.venv/pywb) is absent: run make install")
    root = tmp_path_factory.mktemp("pywb")
    spans = write_warc(root / "captures.warc.gz", SNAPSHOTS)
    server = LocalWayback(root / "archive", {"web": [root / "captures.warc.gz"],
                                             "CC-MAIN-2017-18": [root / "captures.warc.gz"]})
    server.start()
    server.warc, server.spans = root / "captures.warc.gz", spans
    yield server
    server.stop()


def recover_all(archives: list[ArchiveSource], urls: list[tuple[str, int | None]], **fetch):
    async def go():
        config = FetchConfig(**{**FAST, **fetch})
        transport = HttpTransport(config)
        fetcher = Fetcher(config, transport, len(urls))
        recoverer = Recoverer(fetcher, ArchiveConfig(archives=archives, window_days=60))
        try:
            return await asyncio.gather(*(recoverer.recover(url, first) for url, first in urls))
        finally:
            await transport.close()

    return asyncio.run(go())


def test_wayback_raw_replay_of_the_closest_capture(wayback):
    urls = ["http://gone.test/a", "http://gone.test/moved", "http://gone.test/old", "http://gone.test/never",
            "http://gone.test/loop1"]
    a, moved, old, never, loop = recover_all([wayback.archive("web")], [(u, FIRST_UTC) for u in urls])
    assert (a.outcome, a.source, a.archive, a.collection, a.capture_time) == (
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


def test_ssrf_guard_applies_to_archive_requests(wayback):
    """The archive on loopback is refused unless loopback is allowed, as for any page."""
    (result,) = recover_all([wayback.archive("web")], [("http://gone.test/a", FIRST_UTC)], allow_networks=[])
    assert (result.outcome, result.source) == ("blocked_address", "lost") and "wayback: blocked_address" in result.error


def upload(s3, key: str, data: bytes) -> str:
    from pipeline.storage import filesystem

    fs, path = filesystem(s3(key))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path, compression=None) as f:  # not gzipped again for its name
        f.write(data)
    return s3(key)


@pytest.mark.parametrize("via", ["https", "s3"])
def test_common_crawl_records_by_range_request(wayback, s3, via):
    """pywb as Common Crawl's index server (the same API: NDJSON with filename, offset, length), the WARC in a
    local S3, each record read by a range request: over HTTP through the fetcher, or through pyarrow's S3."""
    uri = upload(s3, "commoncrawl/crawl-data/captures.warc.gz", wayback.warc.read_bytes())
    endpoint = uri.split("endpoint_override=", 1)[1].split("&", 1)[0]
    prefix = f"http://{endpoint}/commoncrawl/crawl-data/" if via == "https" else \
        s3("commoncrawl/crawl-data/")
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl", cdx_api=f"{wayback.base}/{{collection}}/cdx",
                       warc_prefix=prefix, collections=["CC-MAIN-2017-18"], requests_per_s=50)
    a, moved = recover_all([cc], [("http://gone.test/a", FIRST_UTC), ("http://gone.test/moved", FIRST_UTC)])
    assert (a.outcome, a.error, a.archive, a.collection, a.capture_time) == (
        "ok", None, "commoncrawl", "CC-MAIN-2017-18", time_of("20170610100000"))
    assert (a.archive_warc, a.archive_offset) == ("captures.warc.gz", wayback.spans[1][0])
    assert a.exchanges[-1].body == page("a 2017 june")
    assert a.exchanges[-1].extra["Webtext-Source-Offset"] == str(wayback.spans[1][0])
    assert moved.outcome == "ok" and moved.exchanges[-1].body == page("b, the target of a redirect")
