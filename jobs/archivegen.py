"""Local archives of the local web's dead pages, for the demo: a pywb Wayback and a Common Crawl in a local S3.

The dead pages (404, 410, and every page of a host whose robots.txt is unreachable) are split by their order:
a third only in the Wayback archive, a third only in Common Crawl, a sixth in both (the Wayback archive, asked
first, wins), a sixth in neither. Each archive holds, for each of its pages, the capture that must be chosen (an
article no live page has, 40 days before the URL's first Reddit post for the Wayback, 20 for Common Crawl) and
decoys around it: a later version (100 days after) and a 404 closer in time (5 days before). Every URL variant
the dump posts (www., tracking parameters, trailing slash, fragment) is captured alike, since the URL table keeps
one of them.

Common Crawl is its columnar index (its schema, one crawl) plus a WARC file, in a moto S3 on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.archive.cdx import timestamp_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from pipeline.archive.index_join import CC_INDEX_SCHEMA, surt_key, write_index
from pipeline.archive.local import LocalWayback, Snapshot, put_object, start_s3, write_warc
from pipeline.localweb import LocalWeb, Page
from pipeline.urlnorm import normalize_url

DAY = 86400
CRAWL = "CC-MAIN-2019-18"
DEAD_KINDS = ("not_found", "gone")


TRUTH_FILE = "truth.json"


@dataclass
class Planted:
    """What the crawl must find: per url_norm of a dead page, [archive, capture time] or None (lost)."""

    truth: dict[str, list | None]
    config: ArchiveConfig
    wayback: LocalWayback
    s3_server: object

    def stop(self) -> None:
        self.wayback.stop()
        self.s3_server.stop()


def with_truth(pages: list[Page], truth: dict[str, list | None]) -> list[Page]:
    """The web's pages with the recovered ones' expectations: ok, and a family (of duplicates) of their own."""
    return [dataclasses.replace(p, expected="ok", family=f"archive:{normalize_url(p.url)}", expected_filter=None)
            if truth.get(normalize_url(p.url)) else p for p in pages]


def load_truth(root: Path) -> dict[str, list | None]:
    return json.loads((root / TRUTH_FILE).read_text())


def dead(page: Page) -> bool:
    return page.kind in DEAD_KINDS or page.expected == "robots_unreachable"


def variants(url: str) -> list[str]:
    return [url, url.replace("http://", "http://www.", 1), url + "?utm_source=reddit&utm_medium=social",
            url + "#comments", url + "/"]


def plant(web: LocalWeb, pages: list[Page], records: list[dict], root: Path) -> Planted:
    first_utc: dict[str, int] = {}
    for record in records:
        key = normalize_url(record["url"])
        if key:
            first_utc[key] = min(first_utc.get(key, record["created_utc"]), record["created_utc"])
    dead_pages = sorted((p for p in pages if dead(p) and normalize_url(p.url) in first_utc), key=lambda p: p.url)
    wayback_snaps, cc_snaps, truth = [], [], {}
    for i, page in enumerate(dead_pages):
        key, first = normalize_url(page.url), first_utc[normalize_url(page.url)]
        where = ("wayback", "wayback", "commoncrawl", "commoncrawl", "both", "neither")[i % 6]
        chosen = None
        if where in ("wayback", "both"):
            chosen = ["wayback", first - 40 * DAY]
            wayback_snaps += captures(web, page, i, first, -40 * DAY)
        if where in ("commoncrawl", "both"):
            chosen = chosen or ["commoncrawl", first - 20 * DAY]
            cc_snaps += captures(web, page, i + 10_000, first, -20 * DAY)
        truth[key] = chosen
    root.mkdir(parents=True, exist_ok=True)
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1, sort_keys=True))
    write_warc(root / "wayback.warc.gz", wayback_snaps)
    wayback = LocalWayback(root / "pywb", {"web": [root / "wayback.warc.gz"]})
    wayback.start()
    s3_server, s3 = start_s3()
    spans = write_warc(root / "cc.warc.gz", cc_snaps)
    warc_name = f"crawl-data/{CRAWL}/segments/1/warc/cc.warc.gz"
    put_object(s3(f"commoncrawl/{warc_name}"), (root / "cc.warc.gz").read_bytes())
    index_root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(index_root, CRAWL, [index_row(s, o, n, warc_name) for s, (o, n) in zip(cc_snaps, spans)],
                row_group_size=16)
    config = ArchiveConfig(archives=[
        wayback.archive("web"),
        ArchiveSource(name="commoncrawl", kind="commoncrawl", index=index_root, warc_prefix=s3("commoncrawl/"),
                      collections=[CRAWL], requests_per_s=50.0)])
    return Planted(truth, config, wayback, s3_server)


def captures(web: LocalWeb, page: Page, n: int, first: int, offset_s: int) -> list[Snapshot]:
    """The capture to choose (an article of its own) and its decoys, for every variant of the page's URL."""
    right = web.article_html(page.host, 1000 + n).encode()
    later = web.article_html(page.host, 50_000 + n).encode()
    snaps = []
    for url in variants(page.url):
        snaps += [Snapshot(url, timestamp_of(first + offset_s), body=right),
                  Snapshot(url, timestamp_of(first + 100 * DAY), body=later),
                  Snapshot(url, timestamp_of(first - 5 * DAY), status=404, reason="Not Found", body=b"not found")]
    return snaps


def index_row(snap: Snapshot, offset: int, length: int, warc: str) -> dict:
    from pipeline.archive.cdx import time_of

    return {**dict.fromkeys(CC_INDEX_SCHEMA.names), "url_surtkey": surt_key(snap.url), "url": snap.url,
            "url_host_name": snap.url.split("/")[2], "url_protocol": "http",
            "fetch_time": dt.datetime.fromtimestamp(time_of(snap.timestamp), dt.timezone.utc),
            "fetch_status": snap.status, "content_mime_type": "text/html", "content_mime_detected": "text/html",
            "warc_filename": warc, "warc_record_offset": offset, "warc_record_length": length}
