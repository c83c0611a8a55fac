"""The crawl stage through the runner and the CLI: one outcome per URL, WARC offsets, lineage for extract,
resume after a real kill, replay equal to the live crawl, and the same output on Ray."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from yarl import URL

from jobs.cli import main as cli
from jobs.fixtures.localweb import LocalWeb
from pipeline.crawl import CrawlConfig, CrawlStage, round_robin
from pipeline.runner import RunOptions, StageError, run_stage
from pipeline.storage import expand_inputs
from tests.helpers import (COMPARED, fast_settings, fetch_log, kill_when_written, ok_payloads, warc_records,
                           write_url_table)

# Outcomes with no complete response, hence nothing in the WARC for a replay to find.
NOT_ARCHIVED = {"timeout", "read_error", "too_large", "decoded_too_large", "connect_error", "dns_error",
                "bad_content_type"}
@pytest.fixture(scope="module")
def web():
    site = LocalWeb(seed=5, n_hosts=10, pages_per_host=3, faults_per_host=3, hang_s=10)
    site.start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def live(web, tmp_path_factory):
    """One live crawl through the CLI (local executor), shared by the tests that read it."""
    root = tmp_path_factory.mktemp("live")
    pages = write_url_table(web, root / "urls")
    web.reset_stats()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli(["crawl", "--urls", str(root / "urls"), "--out", str(root), "--executor", "local",
                  "--set", "num_buckets=3", *fast_settings(web)])
    assert rc == 0
    (root / "printed.txt").write_text(printed.getvalue())
    return root, pages


def test_every_url_once_with_its_planted_outcome(web, live, capsys):
    root, pages = live
    log = fetch_log(root)
    assert sorted(log["url"].to_pylist()) == sorted(pages)
    wrong = [(r["url"], pages[r["url"]].expected, r["outcome"], r["error"]) for r in log.to_pylist()
             if r["outcome"] != pages[r["url"]].expected]
    assert not wrong
    rows = {r["url"]: r for r in log.to_pylist()}
    some = next(p for p in pages.values() if p.kind == "article" and p.expected == "ok")
    assert rows[some.url]["subreddits"] == ["r/test", "r/article"] and rows[some.url]["score_max"] >= 3
    manifest = json.loads((root / "crawl" / "_manifest.json").read_text())
    assert manifest["funnel"]["in"] == manifest["funnel"]["out"] == len(pages)
    assert manifest["funnel"]["outcome:ok"] == sum(p.expected == "ok" for p in pages.values())
    assert {p["name"] for p in manifest["parts"]} == {f"part-{i:05d}{ext}" for i in range(3)
                                                       for ext in (".parquet", ".warc.gz")}
    assert not (root / "crawl" / "_resume").exists()
    # The WARCs are valid for warcio, digests included; each response has its request, concurrent to it.
    for warc in sorted((root / "crawl").glob("*.warc.gz")):
        with open(warc, "rb") as f:
            records = [(r.rec_type, r.rec_headers.get_header("WARC-Record-ID"),
                        r.rec_headers.get_header("WARC-Concurrent-To"), r.content_stream().read())
                       for r in ArchiveIterator(f, check_digests="raise")]
        assert [r[0] for r in records] == ["response", "request"] * (len(records) // 2)
        assert all(req[2] == resp[1] for resp, req in zip(records[::2], records[1::2]))
    # Offsets point at the response of the final URL, whose payload is the page the server generated.
    payloads = ok_payloads(root)
    title, text = web.article(some.host, int(some.path.rsplit("/", 1)[1]))
    assert text.split("\n\n")[-1].encode() in payloads[some.url]
    # Politeness from the server's side, over the whole stage run.
    for host, seen in web.stats().items():
        assert seen.max_in_flight == 1
        assert len(seen.requests) < 2 or (seen.min_gap_after_end() >= 0.02 and seen.min_gap() >= 0.02 - 0.015)
        if web.robots_variant(host) == "rules":
            assert not any(p.startswith("/private/") for p in seen.paths)
    out = (root / "printed.txt").read_text()
    assert "outcome" in out and "robots_disallowed" in out and "crawl (" in out


def test_rerun_is_skipped_and_bad_input_is_one_line(web, live, tmp_path, capsys):
    root, _ = live
    before = (root / "crawl" / "_manifest.json").read_text()
    web.reset_stats()
    assert cli(["crawl", "--urls", str(root / "urls"), "--out", str(root), "--executor", "local",
                "--set", "num_buckets=3", *fast_settings(web)]) == 0
    assert "up to date" in capsys.readouterr().err
    assert (root / "crawl" / "_manifest.json").read_text() == before and not web.stats()
    rc = cli(["crawl", "--urls", str(tmp_path / "nothing"), "--out", str(tmp_path), "--executor", "local"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nothing" in err[0] and err[1].startswith("webtext: what to do: ")
    rc = cli(["crawl", "--urls", str(root / "urls"), "--out", str(tmp_path), "--executor", "local",
              "--set", "global_concurrency=0"])
    assert rc == 2 and "global_concurrency" in capsys.readouterr().err


def test_extract_reads_the_crawl_with_lineage(live):
    from pipeline.extract import ExtractConfig, ExtractStage

    root, pages = live
    result = run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(root / "crawl")]), str(root),
                       RunOptions(executor="local", quiet=True))
    docs = pa.concat_tables([pq.read_table(p) for p in sorted((root / "extract").glob("part-*.parquet"))])
    ok = fetch_log(root)
    n_ok = sum(o == "ok" for o in ok["outcome"].to_pylist())
    assert result.funnel["out"] == docs.num_rows >= n_ok - 2  # binary-free html pages become documents
    by_place = {(r["warc_file"], r["warc_offset"]): r for r in ok.to_pylist() if r["outcome"] == "ok"}
    for doc in docs.to_pylist():
        row = by_place[(Path(doc["warc_file"]).name, doc["warc_offset"])]
        assert (doc["url"], doc["score"], doc["subreddits"]) == (row["final_url"], row["score_max"], row["subreddits"])


def test_replay_equals_the_live_crawl(web, live, tmp_path):
    """The WARCs of the live crawl, replayed with hosts resolved to a closed port: same outcomes, same pages, and
    not one request reaches the server."""
    root, pages = live
    replay = tmp_path / "replay"
    web.reset_stats()
    rc = cli(["crawl", "--urls", str(root / "urls"), "--out", str(replay), "--executor", "local",
              "--from-warc", str(root / "crawl"),  # a directory: its WARC files, not its fetch logs
              "--set", "num_buckets=2", *fast_settings(web, resolve={"*.web.test": "127.0.0.1:9"})])
    assert rc == 0 and not web.stats()  # nothing was asked of the network
    live_log, replay_log = fetch_log(root), fetch_log(replay)
    assert replay_log["url"].to_pylist() == live_log["url"].to_pylist()
    for a, b in zip(live_log.select(COMPARED).to_pylist(), replay_log.select(COMPARED).to_pylist()):
        if a["outcome"] in NOT_ARCHIVED:
            assert b["outcome"] == "not_in_warc", (a, b)
        else:
            assert a == b
    assert ok_payloads(replay) == ok_payloads(root)


def test_round_robin_interleaves_hosts():
    table = pa.table({"url": [f"u{i}" for i in range(7)], "url_norm": [f"n{i}" for i in range(7)],
                      "host": ["a", "a", "a", "b", "b", "c", "a"]})
    hosts = round_robin(table)["host"].to_pylist()
    assert sorted(hosts[:3]) == ["a", "b", "c"] and sorted(hosts[3:5]) == ["a", "b"] and hosts[5:] == ["a", "a"]


@pytest.mark.slow
def test_resume_after_kill_fetches_only_unfinished_urls(web, tmp_path):
    """A crawl killed with SIGKILL mid-way, rerun, asks the server only for URLs with no outcome yet (robots.txt
    of hosts decided before the kill included), and ends with the fetch log and the WARC records of an
    uninterrupted crawl."""
    pages = write_url_table(web, tmp_path / "urls")
    settings = fast_settings(web, min_delay_s=0.15, checkpoint_every=4, num_buckets=1)
    web.reset_stats()
    assert cli(["crawl", "--urls", str(tmp_path / "urls"), "--out", str(tmp_path / "whole"), "--executor", "local",
                *settings]) == 0

    web.reset_stats()
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "jobs.crawl", "--urls", str(tmp_path / "urls"), "--out", str(killed),
               "--executor", "local", *settings]
    segments = kill_when_written(command, killed, "crawl/_resume/*/*/seg-*.parquet", 3, 60)
    assert len(segments) >= 3 and not (killed / "crawl" / "_manifest.json").exists()
    done = pa.concat_tables([pq.read_table(s) for s in segments])
    assert 0 < done.num_rows < len(pages)
    done_ok_paths = {p for u, o in zip(done["url"].to_pylist(), done["outcome"].to_pylist())
                     if o == "ok" for p in [pages[u].path] if pages[u].kind == "article"}
    checkpointed_robots = {key.rsplit(":", 1)[0] for s in segments
                           if (robots := s.with_name(s.name.replace(".parquet", ".robots.json"))).exists()
                           for key in json.loads(robots.read_text())}

    web.reset_stats()
    assert cli(["crawl", "--urls", str(tmp_path / "urls"), "--out", str(killed), "--executor", "local",
                *settings]) == 0
    asked_again = {(h, p) for h, s in web.stats().items() for p in s.paths}
    done_ok = {(pages[u].host, pages[u].path) for u, o in zip(done["url"].to_pylist(), done["outcome"].to_pylist())
               if o == "ok" and pages[u].kind == "article"}
    whole, resumed = fetch_log(tmp_path / "whole"), fetch_log(killed)
    # A finished page is asked for again only as the redirect target of a URL that was not finished.
    finished = set(done["url"].to_pylist())
    targets = {(URL(r["final_url"]).host, URL(r["final_url"]).path) for r in whole.to_pylist()
               if r["url"] not in finished and r["final_url"]}
    assert done_ok_paths and not ((done_ok - targets) & asked_again)
    assert len(asked_again) < len({(p.host, p.path) for p in pages.values()})
    robots_asked = {h for h, p in asked_again if p == "/robots.txt"}
    assert checkpointed_robots and not robots_asked & checkpointed_robots
    assert whole.select(COMPARED).to_pylist() == resumed.select(COMPARED).to_pylist()
    assert ok_payloads(tmp_path / "whole") == ok_payloads(killed)
    whole_records, resumed_records = warc_records(tmp_path / "whole"), warc_records(killed)
    robots_responses = [r for r in whole_records if r[0] == "response" and r[1].endswith("/robots.txt")]
    assert len(robots_responses) == len({p.host for p in pages.values()})  # one per host (each host is one origin)
    assert resumed_records == whole_records


def test_replay_of_another_crawlers_warc(tmp_path):
    """A WARC as other crawlers write it (body still gzip-encoded, no robots.txt records): pages replay as ok
    with the decoded body; URLs it lacks are not_in_warc."""
    import gzip
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = b"<!DOCTYPE html><html><body><p>" + b"Some words of an archived page. " * 50 + b"</p></body></html>"
    encoded = gzip.compress(page)
    with open(tmp_path / "other.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                                              ("Content-Length", str(len(encoded)))], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("http://news.example/story", "response",
                                                      payload=BytesIO(encoded), http_headers=headers))
        moved = StatusAndHeaders("301 Moved", [("Location", "/story")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("http://news.example/old", "response", payload=BytesIO(b""),
                                                      http_headers=moved))
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"url": ["http://news.example/story", "http://news.example/old",
                                     "http://news.example/missing"]}), tmp_path / "urls" / "part-00000.parquet")
    assert cli(["crawl", "--urls", str(tmp_path / "urls"), "--out", str(tmp_path), "--executor", "local",
                "--from-warc", str(tmp_path / "other.warc.gz")]) == 0
    rows = {r["url"]: r for r in fetch_log(tmp_path).to_pylist()}
    assert rows["http://news.example/story"]["outcome"] == "ok"
    assert rows["http://news.example/story"]["bytes"] == len(page)
    assert (rows["http://news.example/old"]["outcome"], rows["http://news.example/old"]["final_url"]) == (
        "ok", "http://news.example/story")
    assert rows["http://news.example/missing"]["outcome"] == "not_in_warc"
    assert ok_payloads(tmp_path)["http://news.example/story"] == page


def test_a_url_table_of_the_users_with_null_or_non_text_urls(tmp_path):
    """A null url is a bad_url outcome (it was a crawler_error, the bug bucket); a url column that is not text is
    an error naming the file when the stage plans (it was a TypeError traceback)."""
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"url": [None, "ftp://e.org/a"]}, schema=pa.schema([("url", pa.string())])),
                   tmp_path / "urls" / "part-00000.parquet")
    run_stage(CrawlStage(CrawlConfig()), expand_inputs([str(tmp_path / "urls")]), str(tmp_path / "out"),
              RunOptions(executor="local", quiet=True))
    outcomes = fetch_log(tmp_path / "out").select(["url", "outcome"]).to_pylist()
    assert sorted(outcomes, key=str) == sorted([{"url": None, "outcome": "bad_url"},
                                                {"url": "ftp://e.org/a", "outcome": "bad_scheme"}], key=str)
    (tmp_path / "ints").mkdir()
    pq.write_table(pa.table({"url": [1, 2]}), tmp_path / "ints" / "part-00000.parquet")
    code = cli(["crawl", "--urls", str(tmp_path / "ints"), "--out", str(tmp_path / "out"), "--executor", "local"])
    assert code == 2
    (tmp_path / "words").mkdir()  # a karma column that does not read as a number: named, not a bare Arrow error
    pq.write_table(pa.table({"url": ["ftp://e.org/a"], "score_max": ["lots"]}), tmp_path / "words" / "part-0.parquet")
    with pytest.raises(StageError, match="part-0.parquet: column score_max of type string does not read as int64"):
        run_stage(CrawlStage(CrawlConfig()), expand_inputs([str(tmp_path / "words")]), str(tmp_path / "out"),
                  RunOptions(executor="local", quiet=True))


def test_checkpoint_segments_are_fenced_like_every_file_a_task_commits(tmp_path, monkeypatch):
    """A fetch task whose run no longer holds the output writes no checkpoint a resumed run would read."""
    from pipeline.errors import FencedError
    from pipeline.runner import TaskContext

    real = TaskContext.check_fence

    def fenced_in_fetch(ctx):
        if ctx.phase == "fetch":
            raise FencedError("taken over")
        real(ctx)

    monkeypatch.setattr(TaskContext, "check_fence", fenced_in_fetch)
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"url": [f"ftp://e.org/{i}" for i in range(3)]}), tmp_path / "urls" / "part-0.parquet")
    with pytest.raises(FencedError):
        run_stage(CrawlStage(CrawlConfig(checkpoint_every=1)), expand_inputs([str(tmp_path / "urls")]),
                  str(tmp_path / "out"), RunOptions(executor="local", quiet=True))
    assert not list((tmp_path / "out" / "crawl").glob("_resume/*/*/seg-*"))


def test_the_crawl_is_planned_once_and_reports_the_progress_of_both_phases(tmp_path, monkeypatch):
    """The URL tables' footers are read once, when the stage plans (they were read again for every phase), and the
    bucket count decided then is what the partition tasks split by and the number of fetch tasks."""
    (tmp_path / "urls").mkdir()
    for i in range(2):
        pq.write_table(pa.table({"url": [f"ftp://e.org/{i}/{j}" for j in range(5)]}),
                       tmp_path / "urls" / f"part-{i}.parquet")
    counted = []
    real = CrawlStage.count_urls
    monkeypatch.setattr(CrawlStage, "count_urls", staticmethod(lambda tables: counted.append(1) or real(tables)))
    events = []
    result = run_stage(CrawlStage(CrawlConfig(urls_per_bucket=4)), expand_inputs([str(tmp_path / "urls")]),
                       str(tmp_path / "out"), RunOptions(executor="local", quiet=True, progress=events.append))
    assert counted == [1]
    partition, fetch = CrawlStage(CrawlConfig(urls_per_bucket=4)).plan(expand_inputs([str(tmp_path / "urls")]))
    assert [t.buckets for t in partition.tasks] == [3, 3] and [t.bucket for t in fetch.tasks] == [0, 1, 2]
    assert result.funnel["in"] == result.funnel["outcome:bad_scheme"] == 10
    assert [(e.phase, e.tasks_done, e.tasks_total) for e in events] == [
        ("partition", 0, 2), ("partition", 1, 2), ("partition", 2, 2),
        ("fetch", 0, 3), ("fetch", 1, 3), ("fetch", 2, 3), ("fetch", 3, 3), ("fetch", 3, 3)]
    assert events[-1].finished and events[-1].records == 10 and events[2].records == 0
