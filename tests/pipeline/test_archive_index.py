"""Common Crawl's columnar index (its exact schema and layout, in a local S3 by moto) joined with a URL table on
the SURT key: the right capture per URL, only the row groups of the URLs' hosts read, the same on Ray; and the
crawl recovering pages through it, each record read by a range request."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.archive.cdx import time_of
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from jobs.fixtures.archives import Snapshot, put_object, write_index, write_warc
from pipeline.archive.index_join import CC_INDEX_SCHEMA, index_files, join_index, surt_key, url_keys
from pipeline.crawl import CrawlConfig, CrawlStage
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs, filesystem

FIRST_UTC = time_of("20170501000000")
N_HOSTS, PER_HOST = 40, 6


def index_row(url: str, when: str, status: int = 200, mime: str = "text/html", offset: int = 0, length: int = 100,
              warc: str = "crawl-data/x.warc.gz") -> dict:
    host = url.split("/")[2]
    return {**dict.fromkeys(CC_INDEX_SCHEMA.names), "url_surtkey": surt_key(url), "url": url, "url_host_name": host,
            "url_protocol": url.split(":")[0], "fetch_time": dt.datetime.fromtimestamp(time_of(when), dt.timezone.utc),
            "fetch_status": status, "content_mime_detected": mime, "content_mime_type": mime,
            "warc_filename": warc, "warc_record_offset": offset, "warc_record_length": length}


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
