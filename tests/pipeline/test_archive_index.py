"""Common Crawl's columnar index (its exact schema and layout, in a local S3 by moto) joined with a URL table on
the SURT key: the right capture per URL, only the row groups of the URLs' hosts read, the same on Ray; and the
crawl recovering pages through it, each record read by a range request."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.archive.cdx import time_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from jobs.fixtures.archives import Snapshot, put_object, write_index, write_warc, index_row as fixture_row
from pipeline.archive.index_join import (CC_INDEX_SCHEMA, LATER_COLUMNS, assign, index_files, join_index, surt_key,
                                        url_keys)
from pipeline.crawl import CrawlConfig, CrawlStage
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs, filesystem
from pipeline.warc import read_exchanges

FIRST_UTC = time_of("20170501000000")
N_HOSTS, PER_HOST = 40, 6


def index_row(url: str, when: str, status: int = 200, mime: str = "text/html", offset: int = 0, length: int = 100,
              warc: str = "crawl-data/x.warc.gz", location: str | None = None) -> dict:
    headers = [("Content-Type", mime), *([("Location", location)] if location else [])]
    return fixture_row(Snapshot(url, when, status=status, headers=headers), offset, length, warc)


def background(crawl: str, when: str) -> list[dict]:
    """Pages of many hosts that no URL of the tests asks for: the bulk of the index."""
    return [index_row(f"http://host{h:03d}.test/p{k}", when, offset=h * 1000 + k)
            for h in range(N_HOSTS) for k in range(PER_HOST)]


@pytest.fixture
def index(s3):
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    planted = {  # crawl -> rows of the hosts the URL table asks for
        "CC-MAIN-2017-17": [
            index_row("http://news.test/a", "20170425000000", offset=1),  # 6 days before first_utc
            index_row("http://news.test/b", "20170426000000", status=404),
            index_row("http://news.test/c", "20170427000000", mime="application/pdf"),
            index_row("https://www.blog.test/post?id=2&x=1", "20170420000000", offset=2),
        ],
        "CC-MAIN-2017-22": [
            index_row("http://news.test/a", "20170503000000", offset=3),  # 2 days after: the closest
            index_row("http://news.test/b", "20170530000000", offset=4),
            index_row("http://news.test/old", "20170530000000", offset=5),
        ],
    }
    for crawl, rows in planted.items():
        write_index(root, crawl, rows + background(crawl, "20170510000000"), row_group_size=8, files=3)
    return root


def url_table(urls: list[str], first: int | None = FIRST_UTC) -> pa.Table:
    return pa.table({"url": urls, "first_utc": pa.array([first] * len(urls), pa.int64())})


def test_surt_keys_are_the_archives():
    # pywb's CDX gave `test,gone)/a` for http://gone.test/a; Common Crawl drops www., sorts the query, drops :80
    assert surt_key("http://gone.test/a") == "test,gone)/a"
    assert surt_key("https://www.Blog.test:443/post?x=1&id=2") == "test,blog)/post?id=2&x=1"
    assert surt_key("http://site.test:8080/") == "test,site:8080)/"
    assert url_keys(url_table(["http://b.test/", "http://a.test/x"]))["url"].to_pylist() == [
        "http://a.test/x", "http://b.test/"]


def test_join_picks_the_closest_capture_and_reads_only_its_hosts_row_groups(index):
    urls = ["http://news.test/a", "http://news.test/b", "http://news.test/c", "http://news.test/old",
            "http://blog.test/post?x=1&id=2", "http://nowhere.test/"]
    chosen, read = join_index(url_table(urls), index, ArchiveConfig(window_days=20))
    got = {r["url"]: (r["crawl"], r["warc_record_offset"]) for r in chosen.to_pylist()}
    assert got == {"http://news.test/a": ("CC-MAIN-2017-22", 3),  # 2 days after beats 6 days before
                   "http://blog.test/post?x=1&id=2": ("CC-MAIN-2017-17", 2)}  # www. and query order: one key
    # b: 404 then a capture 29 days away; c: a PDF; old: outside the window; nowhere: not in the index
    wide, _ = join_index(url_table(urls), index, ArchiveConfig(window_days=40))
    assert {r["url"] for r in wide.to_pylist()} == {"http://news.test/a", "http://news.test/b", "http://news.test/old",
                                                    "http://blog.test/post?x=1&id=2"}
    # the prefilter: each of the 6 files holds 2 to 3 row groups of these hosts' keys at most
    assert read["files"] == 6 and read["row_groups_total"] >= 6 * 3
    assert read["row_groups"] <= 12 and read["most_row_groups_one_task"] <= 2
    assert read["rows_scanned"] <= 12 * 8 < (2 * N_HOSTS * PER_HOST) / 4
    schema = pq.read_schema(io.BytesIO(read_object(index_files(index)[0].uri)))
    assert schema.equals(CC_INDEX_SCHEMA)  # the files hold Common Crawl's columns, crawl and subset are directories


def read_object(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        return f.read()


def test_no_first_utc_takes_the_earliest_capture(index):
    chosen, _ = join_index(url_table(["http://news.test/a"], first=None), index, ArchiveConfig(window_days=1))
    assert chosen["warc_record_offset"].to_pylist() == [1]


def test_a_tie_between_crawls_does_not_depend_on_which_task_finished_first(index):
    """host007.test/p3 was captured at the same time in both crawls (the background rows)."""
    from pipeline.archive.index_join import assign, choose_captures, join_file

    tasks = assign(index_files(index), url_keys(url_table(["http://host007.test/p3"])))
    pieces = [join_file(task)[0] for task in tasks]
    assert sorted(set(pa.concat_tables(pieces)["crawl"].to_pylist())) == ["CC-MAIN-2017-17", "CC-MAIN-2017-22"]
    forward = choose_captures(pa.concat_tables(pieces), ArchiveConfig())
    backward = choose_captures(pa.concat_tables(pieces[::-1]), ArchiveConfig())
    assert forward.equals(backward) and forward["crawl"].to_pylist() == ["CC-MAIN-2017-17"]


@pytest.mark.slow
def test_join_on_ray_gives_the_same_captures(index, ray_session):
    urls = url_table(["http://news.test/a", "http://blog.test/post?x=1&id=2", "http://host007.test/p3"])
    local, _ = join_index(urls, index, ArchiveConfig(window_days=20))
    on_ray, read = join_index(urls, index, ArchiveConfig(window_days=20), executor="ray")
    assert on_ray.sort_by("url").equals(local.sort_by("url")) and local.num_rows == 3 and read["tasks"] >= 2


def test_crawl_recovers_through_the_index_and_range_reads(s3, tmp_path):
    """source: archive with a Common Crawl archive that has a columnar index and no CDX API: the join picks the
    captures, the records come from the S3 WARC by range reads."""
    pages = [Snapshot("http://news.test/a", "20170503000000", body=b"<html><body><p>news a</p></body></html>"),
             Snapshot("http://news.test/b", "20170504000000", body=b"<html><body><p>news b</p></body></html>")]
    spans = write_warc(tmp_path / "rec.warc.gz", pages)
    put_object(s3("commoncrawl/crawl-data/CC-MAIN-2017-22/rec.warc.gz"), (tmp_path / "rec.warc.gz").read_bytes())
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(root, "CC-MAIN-2017-22", [
        index_row(p.url, p.timestamp, offset=o, length=n, warc="crawl-data/CC-MAIN-2017-22/rec.warc.gz")
        for p, (o, n) in zip(pages, spans)])
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl",
                       warc_prefix=s3("commoncrawl/"), index=root, collections=["CC-MAIN-2017-22"])
    (tmp_path / "urls").mkdir()
    urls = ["http://news.test/a", "http://news.test/b", "http://news.test/gone"]
    pq.write_table(url_table(urls), tmp_path / "urls" / "part-00000.parquet")
    config = CrawlConfig(source="archive", archive=ArchiveConfig(archives=[cc], window_days=30),
                         allow_networks=["127.0.0.0/8"], connect_timeout_s=1, total_timeout_s=3)
    result = run_stage(CrawlStage(config), expand_inputs([str(tmp_path / "urls")]), str(tmp_path / "out"),
                       RunOptions(executor="local", quiet=True))
    log = {r["url"]: r for r in pq.read_table(tmp_path / "out" / "crawl" / "part-00000.parquet").to_pylist()}
    assert {u: (r["outcome"], r["source"]) for u, r in log.items()} == {
        "http://news.test/a": ("ok", "archive"), "http://news.test/b": ("ok", "archive"),
        "http://news.test/gone": ("not_archived", "lost")}
    a = log["http://news.test/a"]
    assert (a["collection"], a["archive_warc"], a["archive_offset"]) == (
        "CC-MAIN-2017-22", "crawl-data/CC-MAIN-2017-22/rec.warc.gz", spans[0][0])
    assert result.funnel["source:archive"] == 2


# ---------------------------------------------------------------------------------------------------------------
# Archived redirects: a further join round per hop, the chains walked by the recoverer as on the CDX path

REDIRECT_CRAWL, REDIRECT_WARC = "CC-MAIN-2017-22", "crawl-data/CC-MAIN-2017-22/segments/1495463607120.76/warc/r.warc.gz"


def moved(url: str, when: str, location: str, status: int = 301) -> Snapshot:
    return Snapshot(url, when, status=status, reason="Moved", headers=[("Content-Type", "text/html"),
                                                                       ("Location", location)])


def html(text: str) -> bytes:
    return f"<html><head><title>{text}</title></head><body><p>{text}: archived.</p></body></html>".encode()


REDIRECT_SNAPSHOTS = [
    # the dead URL's only captures in the window: a 301 to a relative /b (the closest), a 404, a far 302 elsewhere
    moved("http://moved.test/a", "20170502000000", "/b"),
    Snapshot("http://moved.test/a", "20170501120000", status=404, reason="Not Found", body=b"gone"),
    moved("http://moved.test/a", "20170520000000", "http://moved.test/wrong", status=302),
    Snapshot("http://moved.test/a", "20160101000000", body=html("a, outside the window")),
    Snapshot("http://moved.test/b", "20170503000000", body=html("b, the target")),
    Snapshot("http://moved.test/b", "20170525000000", body=html("b, later")),
    Snapshot("http://moved.test/wrong", "20170503000000", body=html("the far redirect's target")),
    # a page beats a closer redirect
    moved("http://both.test/p", "20170501000000", "http://moved.test/b"),
    Snapshot("http://both.test/p", "20170510000000", body=html("both, its own page")),
    # chains: 0 -> 1 -> 2 -> 3 -> page; a loop; a target no crawl has; a Location that is not a URL
    *[moved(f"http://chain.test/{i}", "20170502000000", f"/{i + 1}") for i in range(3)],
    Snapshot("http://chain.test/3", "20170503000000", body=html("the end of the chain")),
    moved("http://loop.test/1", "20170502000000", "/2", status=302),
    moved("http://loop.test/2", "20170502000000", "/1", status=302),
    moved("http://moved.test/nowhere", "20170502000000", "http://elsewhere.test/x"),
    moved("http://moved.test/bad", "20170502000000", "http://[bad"),
]
REDIRECT_URLS = ["http://moved.test/a", "http://both.test/p", "http://chain.test/0", "http://loop.test/1",
                 "http://moved.test/nowhere", "http://moved.test/bad"]


@pytest.fixture
def redirects(s3, tmp_path):
    """REDIRECT_SNAPSHOTS in a WARC in S3 and in the columnar index as Common Crawl lays it out: 200s in
    subset=warc, redirects and 404s in subset=crawldiagnostics; the background hosts' rows beside them."""
    spans = write_warc(tmp_path / "r.warc.gz", REDIRECT_SNAPSHOTS)
    put_object(s3(f"commoncrawl/{REDIRECT_WARC}"), (tmp_path / "r.warc.gz").read_bytes())
    rows = [fixture_row(snap, o, n, REDIRECT_WARC) for snap, (o, n) in zip(REDIRECT_SNAPSHOTS, spans)]
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(root, REDIRECT_CRAWL, [r for r in rows if r["fetch_status"] == 200] +
                background(REDIRECT_CRAWL, "20170510000000"), row_group_size=8, files=2)
    write_index(root, REDIRECT_CRAWL, [r for r in rows if r["fetch_status"] != 200], row_group_size=4,
                subset="crawldiagnostics")
    return root, dict(zip(((s.url, s.timestamp) for s in REDIRECT_SNAPSHOTS), spans))


def test_the_join_looks_redirect_targets_up_in_rounds_within_the_cap(redirects):
    root, spans = redirects
    chosen, read = join_index(url_table(REDIRECT_URLS), root, ArchiveConfig(window_days=60), max_redirects=2)
    got = {r["url"]: (r["capture_url"], r["fetch_status"], r["warc_record_offset"]) for r in chosen.to_pylist()}
    assert got == {
        "http://moved.test/a": ("http://moved.test/a", 301, spans["http://moved.test/a", "20170502000000"][0]),
        "http://moved.test/b": ("http://moved.test/b", 200, spans["http://moved.test/b", "20170503000000"][0]),
        "http://both.test/p": ("http://both.test/p", 200, spans["http://both.test/p", "20170510000000"][0]),
        "http://chain.test/0": ("http://chain.test/0", 301, spans["http://chain.test/0", "20170502000000"][0]),
        "http://chain.test/1": ("http://chain.test/1", 301, spans["http://chain.test/1", "20170502000000"][0]),
        "http://chain.test/2": ("http://chain.test/2", 301, spans["http://chain.test/2", "20170502000000"][0]),
        "http://loop.test/1": ("http://loop.test/1", 302, spans["http://loop.test/1", "20170502000000"][0]),
        "http://loop.test/2": ("http://loop.test/2", 302, spans["http://loop.test/2", "20170502000000"][0]),
        "http://moved.test/nowhere": ("http://moved.test/nowhere", 301,
                                      spans["http://moved.test/nowhere", "20170502000000"][0]),
        "http://moved.test/bad": ("http://moved.test/bad", 301, spans["http://moved.test/bad", "20170502000000"][0]),
    }
    # targets looked up: b, chain/1, loop/2, elsewhere.test/x, then chain/2 (loop/1 was looked up already); the
    # cap leaves chain/3 unasked; every target keeps its URL's first_utc
    assert (read["rounds"], read["redirect_lookups"]) == (3, 5)
    assert set(chosen["first_utc"].to_pylist()) == {FIRST_UTC}
    assert "http://chain.test/3" not in got
    # without a cap to spare, no round follows
    once, read = join_index(url_table(REDIRECT_URLS), root, ArchiveConfig(window_days=60))
    assert (read["rounds"], read["redirect_lookups"]) == (1, 0) and once.num_rows == len(REDIRECT_URLS)
    # the crawldiagnostics file is read only for the URLs with no page
    files = index_files(root)
    assert sorted(f.subset for f in files) == ["crawldiagnostics", "warc", "warc"]
    pages = url_table(["http://moved.test/b", "http://host003.test/p1"])
    pages_only, read = join_index(pages, root, ArchiveConfig(window_days=60))
    assert pages_only.num_rows == 2 and read["tasks"] == len(assign([f for f in files if f.subset == "warc"],
                                                                    url_keys(pages)))


@pytest.mark.slow
def test_redirect_rounds_on_ray_give_the_same_captures(redirects, ray_session):
    root, _ = redirects
    urls, config = url_table(REDIRECT_URLS), ArchiveConfig(window_days=60)
    local, local_read = join_index(urls, root, config, max_redirects=3)
    on_ray, ray_read = join_index(urls, root, config, executor="ray", max_redirects=3)
    assert on_ray.sort_by("url").equals(local.sort_by("url"))
    assert on_ray.num_rows == len(REDIRECT_URLS) + 5  # and b, chain/1 to chain/3, loop/2
    assert ray_read == local_read and local_read["rounds"] == 4

def crawl_archive(tmp_path, s3, root: str, urls: list[str], max_redirects: int, cdx_api: str | None = None) -> dict:
    cc = ArchiveSource(name="commoncrawl", kind="commoncrawl", warc_prefix=s3("commoncrawl/"), index=root,
                       cdx_api=cdx_api, collections=[REDIRECT_CRAWL, "CC-MAIN-2017-17"])
    (tmp_path / "urls").mkdir(exist_ok=True)
    pq.write_table(url_table(urls), tmp_path / "urls" / "part-00000.parquet")
    config = CrawlConfig(source="archive", archive=ArchiveConfig(archives=[cc], window_days=60),
                         max_redirects=max_redirects, allow_networks=["127.0.0.0/8"], connect_timeout_s=1,
                         total_timeout_s=3)
    out = tmp_path / f"out{max_redirects}"
    run_stage(CrawlStage(config), expand_inputs([str(tmp_path / "urls")]), str(out),
              RunOptions(executor="local", quiet=True))
    log = {r["url"]: r for r in pq.read_table(out / "crawl" / "part-00000.parquet").to_pylist()}
    with open(out / "crawl" / "part-00000.warc.gz", "rb") as f:
        log["_warc"] = [(e.url, e.status) for _, e in read_exchanges(f)]
    return log


def test_crawl_follows_archived_redirects_through_the_index(redirects, tmp_path, s3):
    """A dead URL whose only capture in the window is a 301 comes back as its target's capture, range-read from
    the WARC, with the redirect's hop archived before it; chains past the cap, loops, targets no crawl has and
    Locations that are not URLs end as the CDX path ends them."""
    root, spans = redirects
    log = crawl_archive(tmp_path, s3, root, REDIRECT_URLS, max_redirects=2)
    assert {u: (r["outcome"], r["source"]) for u, r in log.items() if u != "_warc"} == {
        "http://moved.test/a": ("ok", "archive"), "http://both.test/p": ("ok", "archive"),
        "http://chain.test/0": ("too_many_redirects", "lost"), "http://loop.test/1": ("too_many_redirects", "lost"),
        "http://moved.test/nowhere": ("not_archived", "lost"), "http://moved.test/bad": ("bad_url", "lost")}
    a = log["http://moved.test/a"]
    assert (a["final_url"], a["collection"], a["archive_warc"], a["archive_offset"], a["capture_time"].timestamp()) == (
        "http://moved.test/b", REDIRECT_CRAWL, REDIRECT_WARC, spans["http://moved.test/b", "20170503000000"][0],
        time_of("20170503000000"))
    assert log["http://both.test/p"]["final_url"] == "http://both.test/p"
    assert "loop" in log["http://loop.test/1"]["error"] and "more than 2" in log["http://chain.test/0"]["error"]
    assert "http://elsewhere.test/x, which is not archived" in log["http://moved.test/nowhere"]["error"]
    # the hop is in the WARC before the page, as a live crawl's redirects are
    warc = log["_warc"]
    assert warc.index(("http://moved.test/a", 301)) + 1 == warc.index(("http://moved.test/b", 200))
    # within a larger cap, the chain ends at its page
    chain = crawl_archive(tmp_path, s3, root, ["http://chain.test/0"], max_redirects=3)["http://chain.test/0"]
    assert (chain["outcome"], chain["final_url"], chain["archive_offset"]) == (
        "ok", "http://chain.test/3", spans["http://chain.test/3", "20170503000000"][0])


def test_an_older_crawl_without_the_later_columns_is_read(s3, tmp_path):
    """Files as Common Crawl's crawls before CC-MAIN-2018-39 have them (no fetch_redirect, content_charset,
    content_languages, content_truncated, url_host_name_reversed; Spark's INT96 times) are joined beside a newer
    crawl's; their redirects' targets, which only the records name, are not in the join, and an archive with no
    CDX API to ask says so."""
    snaps = [Snapshot("http://old.test/p", "20170425000000", body=html("old p")),
             moved("http://old.test/moved", "20170426000000", "/q"),
             Snapshot("http://old.test/q", "20170427000000", body=html("old q")),
             Snapshot("http://old.test/p", "20170601000000", body=html("new p"))]
    spans = write_warc(tmp_path / "o.warc.gz", snaps)
    put_object(s3("commoncrawl/o.warc.gz"), (tmp_path / "o.warc.gz").read_bytes())
    rows = [fixture_row(s, o, n, "o.warc.gz") for s, (o, n) in zip(snaps, spans)]
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(root, "CC-MAIN-2017-17", [rows[0], rows[2]], older=True)
    write_index(root, "CC-MAIN-2017-17", [rows[1]], subset="crawldiagnostics", older=True)
    write_index(root, REDIRECT_CRAWL, [rows[3]])
    old_file = next(f for f in index_files(root) if f.crawl == "CC-MAIN-2017-17" and f.subset == "warc")
    schema = pq.read_schema(io.BytesIO(read_object(old_file.uri)))
    assert schema.names == [n for n in CC_INDEX_SCHEMA.names if n not in LATER_COLUMNS]
    assert schema.field("fetch_time").type == pa.timestamp("ns")  # INT96, as Spark writes it
    chosen, _ = join_index(url_table(["http://old.test/p", "http://old.test/moved"]), root, ArchiveConfig(),
                           max_redirects=5)
    got = {r["url"]: (r["crawl"], r["fetch_status"], r["fetch_redirect"], r["fetch_time"].timestamp())
           for r in chosen.to_pylist()}
    assert got == {"http://old.test/p": ("CC-MAIN-2017-17", 200, None, time_of("20170425000000")),
                   "http://old.test/moved": ("CC-MAIN-2017-17", 301, None, time_of("20170426000000"))}
    log = crawl_archive(tmp_path, s3, root, ["http://old.test/p", "http://old.test/moved"], max_redirects=5)
    assert log["http://old.test/p"]["outcome"] == "ok"
    moved_row = log["http://old.test/moved"]
    assert moved_row["outcome"] == "archive_error" and "http://old.test/q was not in the index join" in moved_row["error"]


# ---------------------------------------------------------------------------------------------------------------
# The schema Common Crawl publishes

PUBLISHED_SCHEMA = Path(__file__).parent / "cc-index-schema-flat.json"
SPARK_TYPES = {"string": pa.string(), "integer": pa.int32(), "short": pa.int16(),
               "timestamp": pa.timestamp("us", tz="UTC")}


def test_the_index_schema_is_the_published_one_and_the_fixture_writes_it(s3):
    """cc-index-schema-flat.json is commoncrawl/cc-index-table's src/main/resources/schema/cc-index-schema-flat.json
    (Apache-2.0), as of commit fe3a5e04: every field's name, order, type and nullability; `crawl` and `subset` are
    the partition directories."""
    fields = json.loads(PUBLISHED_SCHEMA.read_text())["fields"]
    assert [f["name"] for f in fields[-2:]] == ["crawl", "subset"]
    published = pa.schema([pa.field(f["name"], SPARK_TYPES[f["type"]], nullable=f["nullable"]) for f in fields[:-2]])
    assert CC_INDEX_SCHEMA.equals(published) and [f.nullable for f in CC_INDEX_SCHEMA] == [
        f.nullable for f in published]
    assert {f["name"]: f["metadata"]["since"] for f in fields if "since" in f["metadata"]} == {
        k: v for k, v in LATER_COLUMNS.items() if v}
    root = s3("commoncrawl/cc-index/table/cc-main/warc/")
    write_index(root, "CC-MAIN-2017-22", [index_row("https://www.a.test:8443/x/y?q=1", "20170503000000")])
    written = pq.read_table(io.BytesIO(read_object(index_files(root)[0].uri)))
    assert written.schema.equals(published) and [f.nullable for f in written.schema] == [f.nullable for f in published]
    assert {k: v for k, v in written.to_pylist()[0].items() if k.startswith("url_") and v is not None} == {
        "url_surtkey": "test,a:8443)/x/y?q=1", "url_host_name": "www.a.test", "url_host_tld": "test",
        "url_host_2nd_last_part": "a", "url_host_3rd_last_part": "www", "url_host_name_reversed": "test.a.www",
        "url_protocol": "https", "url_port": 8443, "url_path": "/x/y", "url_query": "q=1"}
