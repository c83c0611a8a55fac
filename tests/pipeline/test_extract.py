"""The extract stage: WARC reading with bad records, charsets, time limit, lineage, funnel, Ray, CLI, real pages."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.warcwriter import WARCWriter

from pipeline.documents import DOC_SCHEMA
from pipeline.charset import decode_html, header_charset
from pipeline.extract import (ExtractConfig, Extractor, ExtractStage, Malformed, Reject, Response, cpu_limited,
                              iter_responses)
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs
from tests.helpers import BAD_HTTP, REPO, SENTENCES, article, crawl_dir, shared_data, story, warc_record, write_warc

LOCAL = RunOptions(executor="local", quiet=True)
def read_table(out: Path, stage: str, sub: str = "") -> pa.Table:
    files = sorted((out / stage / sub).glob("*.parquet" if sub else "part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


# --- reading WARC files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
def test_bad_records_are_reported_and_the_rest_is_read(gzipped):
    good = [warc_record(f"http://e.com/{i}", story(i), gzipped=gzipped) for i in range(4)]
    truncated = good[1][: len(good[1]) // 2]
    parts = [good[0], truncated, good[2], b"garbage between records\r\n", good[3]]
    if gzipped:
        parts.insert(3, BAD_HTTP)
    items = list(iter_responses(io.BytesIO(b"".join(parts)), 1 << 20))
    kinds = [(type(x).__name__, getattr(x, "url", None)) for x in items]
    responses = [u for k, u in kinds if k == "Response"]
    assert {"http://e.com/0", "http://e.com/2", "http://e.com/3"} <= set(responses)
    assert "http://e.com/1" not in responses
    malformed = [x for x in items if isinstance(x, Malformed)]
    assert len(malformed) == 2
    assert malformed[0].offset == len(good[0])  # where the truncated record starts


def test_response_offsets_point_at_records(tmp_path):
    records = [warc_record(f"http://e.com/{i}", story(i)) for i in range(3)]
    offsets = write_warc(tmp_path / "a.warc.gz", records)
    with open(tmp_path / "a.warc.gz", "rb") as f:
        assert [r.offset for r in iter_responses(f, 1 << 20)] == offsets


def test_body_cap_marks_truncation():
    item = next(iter_responses(io.BytesIO(warc_record("http://e.com/", story(1))), 100))
    assert isinstance(item, Response) and item.truncated and len(item.body) == 100


def test_a_cut_record_is_malformed_not_a_shorter_page():
    """A gzip member or file cut inside a record's block: the record is rejected, never kept with part of its page."""
    for gzipped in (True, False):
        records = [warc_record(f"http://e.com/{i}", story(i), gzipped=gzipped) for i in range(3)]
        for cut in (30, 300):  # inside the payload, from the end of the last record
            data = b"".join(records[:2]) + records[2][: len(records[2]) - cut]
            items = list(iter_responses(io.BytesIO(data), 1 << 20))
            assert [getattr(x, "url", None) for x in items] == ["http://e.com/0", "http://e.com/1", None]
            assert isinstance(items[2], Malformed) and items[2].offset == len(records[0]) + len(records[1])
            assert all(len(x.body) == len(story(i)) for i, x in enumerate(items[:2]))


@pytest.mark.parametrize("gzipped", [True, False])
def test_a_file_cut_inside_the_last_records_headers_counts_that_record(gzipped):
    records = [warc_record(f"http://e.com/{i}", story(i), gzipped=gzipped) for i in range(3)]
    for keep in (12, 40, 120):
        data = b"".join(records[:2]) + records[2][:keep]
        items = list(iter_responses(io.BytesIO(data), 1 << 20))
        assert [type(x).__name__ for x in items] == ["Response", "Response", "Malformed"], keep
        assert items[2].offset == len(records[0]) + len(records[1])


def test_an_empty_warc_file_is_counted_not_read_as_nothing():
    [item] = list(iter_responses(io.BytesIO(b""), 1 << 20))
    assert isinstance(item, Malformed) and "empty" in item.detail


def test_the_crawls_empty_warc_beside_its_log_holds_no_records(tmp_path):
    # a crawl part where every URL failed: an empty WARC beside a fetch log that archived nothing
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "part-00000.warc.gz").write_bytes(b"")
    pq.write_table(pa.table({"url": ["http://e.com/"], "final_url": [None], "score_max": [5], "subreddits": [["a"]],
                             "warc_file": pa.nulls(1, pa.string()), "warc_offset": pa.nulls(1, pa.int64())}),
                   tmp_path / "crawl" / "part-00000.parquet")
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "x.warc.gz").write_bytes(b"")  # with no log of its own: still a malformed_record
    malformed = {"in": 1, "out": 0, "rejected:malformed_record": 1}
    for name, funnel in (("crawl", {"in": 0, "out": 0}), ("alone", malformed)):
        result = run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(tmp_path / name)]),
                           str(tmp_path / f"out-{name}"), LOCAL)
        assert result.funnel == funnel


def test_a_warc_gzipped_as_one_stream_is_read(tmp_path):
    plain = [warc_record(f"http://e.com/{i}", story(i), gzipped=False) for i in range(3)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "whole.warc.gz").write_bytes(gzip.compress(b"".join(plain)))
    result = run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(tmp_path / "in")]), str(tmp_path / "out"),
                       LOCAL)
    docs = read_table(tmp_path / "out", "extract")
    assert docs["url"].to_pylist() == ["http://e.com/0", "http://e.com/1", "http://e.com/2"]
    assert docs["warc_offset"].to_pylist() == [0, len(plain[0]), len(plain[0]) + len(plain[1])]  # decompressed
    assert result.funnel == {"in": 3, "out": 3}
    # cut: the records before the cut are read and the cut one is counted
    whole = gzip.compress(b"".join(plain))
    items = list(iter_responses(io.BytesIO(whole[: len(whole) - 50]), 1 << 20))
    assert [type(x).__name__ for x in items] == ["Response", "Response", "Malformed"]


def dns_record(host: str) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    payload = f"20190101000000\n{host}.\t300\tIN\tA\t93.184.216.34\n".encode()
    writer.write_record(writer.create_warc_record(f"dns:{host}", "response", payload=io.BytesIO(payload),
                                                  warc_content_type="text/dns"))
    return buffer.getvalue()


def test_non_http_records_have_a_reason_of_their_own(tmp_path):
    (tmp_path / "in").mkdir()
    write_warc(tmp_path / "in" / "heritrix.warc.gz", [dns_record("e.com"), warc_record("http://e.com/0", story(0)),
                                                     BAD_HTTP])
    result = run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(tmp_path / "in")]), str(tmp_path / "out"),
                       LOCAL)
    rejected = read_table(tmp_path / "out", "extract", "_rejected").to_pylist()
    assert {(r["reason"], r["url"]) for r in rejected} == {("not_http_record", "dns:e.com"),
                                                            ("bad_http_headers", "http://e.com/bad-http")}
    assert result.funnel == {"in": 3, "out": 1, "rejected:bad_http_headers": 1, "rejected:not_http_record": 1}


def test_a_common_crawl_directory_skips_what_is_not_a_warc(tmp_path, capsys):
    cc = tmp_path / "crawl-data"
    (cc / "warc").mkdir(parents=True)
    write_warc(cc / "warc" / "CC-MAIN-1.warc.gz", [warc_record(f"http://cc.org/{i}", story(i)) for i in range(2)])
    (cc / "warc.paths").write_text("crawl-data/warc/CC-MAIN-1.warc.gz\n")
    (cc / "cdx-00000.gz").write_bytes(gzip.compress(b"org,cc)/0 20190101000000 {}\n"))
    (cc / "warc" / "CC-MAIN-1.warc.wet.gz").write_bytes(gzip.compress(b"WARC/1.0\r\n"))
    inputs = expand_inputs([str(cc)])
    assert len(ExtractStage(ExtractConfig()).plan(inputs)[0].tasks) == 1
    assert "skipped 3 file(s) that are not WARC files" in capsys.readouterr().err
    result = run_stage(ExtractStage(ExtractConfig()), inputs, str(tmp_path / "out"), LOCAL)
    assert result.funnel == {"in": 2, "out": 2}


def test_an_input_that_is_not_a_warc_fails_the_plan_naming_it(tmp_path):
    from pipeline.runner import StageError

    (tmp_path / "notes.txt").write_text("not a WARC")
    with pytest.raises(StageError, match=r"not a WARC file: .*notes.txt"):
        ExtractStage(ExtractConfig()).plan(expand_inputs([str(tmp_path / "notes.txt")]))
    write_warc(tmp_path / "part-00000.warc.gz", [warc_record("http://e.com/0", story(0))])
    (tmp_path / "part-00000.parquet").write_bytes(b"not a fetch log")
    with pytest.raises(StageError, match=r"part-00000.parquet: not a readable Parquet file"):
        ExtractStage(ExtractConfig()).plan(expand_inputs([str(tmp_path / "part-00000.*")]))


# --- charset ---------------------------------------------------------------------------------------------------


def test_charset_from_header_then_meta_then_a_guess():
    text = "Gérard à Zürich — ça coûte 5 €"
    page = article("t", [text], charset="windows-1252")
    assert decode_html(page.encode("cp1252"), "text/html").count(text) == 1  # from <meta>
    assert decode_html(page.encode("cp1252"), "text/html; charset=windows-1252").count(text) == 1
    cyrillic = article("t", ["Привет, мир. Это проверка кодировки."], charset="windows-1251")
    assert "Привет" in decode_html(cyrillic.encode("cp1251"), "text/html")
    assert "Привет" in decode_html(cyrillic.replace("windows-1251", "utf-8").encode(), "text/html")
    assert header_charset("text/html; charset=no-such-codec") is None
    # an unknown label is no label: the <meta> decides
    assert "Привет" in decode_html(cyrillic.encode("cp1251"), "text/html; charset=no-such-codec")
    # the HTTP header wins over the <meta>, as in a browser
    assert "Привет" in decode_html(cyrillic.replace("windows-1251", "koi8-r").encode("cp1251"),
                                   "text/html; charset=windows-1251")
    # no label at all: valid UTF-8 is UTF-8, else a guess
    assert decode_html("Привет, мир. Это проверка.".encode(), "text/html") == "Привет, мир. Это проверка."
    guessed = decode_html(("<p>" + "Привет, мир. Это проверка кодировки. " * 5).encode("cp1251"), "")
    assert "мир. " in guessed and "\ufffd" not in guessed


def test_a_declared_label_is_never_second_guessed():
    # one stray invalid byte in a page declared UTF-8 (header and meta) costs that byte only, not the whole page
    page = article("t", ["Un café au lait, s'il vous plaît."], charset="utf-8").encode()
    stray = page.replace("café".encode(), b"caf\xe9")
    for content_type in ("text/html; charset=utf-8", "text/html"):
        text = decode_html(stray, content_type)
        assert "caf\ufffd au lait, s'il vous plaît." in text and "Ã" not in text and "ï¾" not in text
    # a page labelled ascii is decoded as windows-1252 (WHATWG), even when its bytes are UTF-8: what a browser shows
    assert decode_html("café".encode(), "text/html; charset=us-ascii") == "cafÃ©"


def test_windows_1252_as_the_encoding_standard_defines_it():
    # 0x93/0x94 are curly quotes, 0x80 the euro sign, 0x81 (open in Python's cp1252) the C1 control U+0081
    body = b"\x93Quoted\x94 \x80 5 \x81 \x8d \x9d caf\xe9"
    expected = "\u201cQuoted\u201d \u20ac 5 \x81 \x8d \x9d café"
    for label in ("windows-1252", "ISO-8859-1", "latin1", "ascii", "US-ASCII", "cp1252", " l1 "):
        assert decode_html(body, f"text/html; charset={label}") == expected
    assert decode_html(b'<meta charset="iso-8859-1">' + body, "text/html").endswith(expected)


@pytest.mark.parametrize("label,data,text", [
    ("x-sjis", "日本語のテキスト".encode("cp932"), "日本語のテキスト"),
    ("shift_jis", "①番".encode("cp932"), "①番"),  # a windows-31j character, as browsers decode Shift_JIS
    ("gb2312", "中文文本".encode("gb18030"), "中文文本"),
    ("ks_c_5601-1987", "한국어 텍스트".encode("cp949"), "한국어 텍스트"),
    ("utf-16", "héllo".encode("utf-16-le"), "héllo"),
    ("iso-8859-9", "İstanbul".encode("cp1254"), "İstanbul"),
    ("iso-2022-kr", b"anything", "\ufffd"),  # the standard's replacement encoding
])
def test_labels_map_as_the_encoding_standard_says(label, data, text):
    assert decode_html(data, f"text/html; charset={label}") == text


def test_a_byte_order_mark_wins_over_every_label():
    assert decode_html(b"\xef\xbb\xbfcaf\xc3\xa9", "text/html; charset=iso-8859-1") == "café"
    assert decode_html(codecs.BOM_UTF16_LE + "café".encode("utf-16-le"), "text/html; charset=utf-8") == "café"
    assert decode_html(codecs.BOM_UTF16_BE + "café".encode("utf-16-be"), "text/html") == "café"


# --- extraction ------------------------------------------------------------------------------------------------


def test_extractor_keeps_main_text_title_and_drops_boilerplate():
    page = Extractor(ExtractConfig())(story(7).decode(), "http://e.com/7")
    assert page.title == "Story 7"
    assert "city council" in page.text and "Story number 7" in page.text
    assert "All rights reserved" not in page.text and "About us" not in page.text


def test_extractor_rejects_empty_pages():
    with pytest.raises(Reject) as err:
        Extractor(ExtractConfig())("<html><body><div></div></body></html>", None)
    assert err.value.reason == "empty_text"


def test_time_limit_stops_a_slow_page():
    huge = article("big", [" ".join(SENTENCES) * 3] * 3000)
    with pytest.raises(Reject) as err:
        Extractor(ExtractConfig(timeout_s=0.01))(huge, None)
    assert err.value.reason == "timeout"


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_limit_counts_cpu_time_not_waiting():
    assert cpu_limited(0.2, time.sleep, 0.6) == (None, False)  # 0.6 s of wall-clock time, no CPU
    assert cpu_limited(0.2, burn, 0.6) == (None, True)
    assert cpu_limited(0.5, lambda: "fast") == ("fast", False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed ones, as planned
def test_a_limit_that_lands_in_a_finaliser_is_not_swallowed():
    class Slow:
        def __del__(self):  # an exception raised in here is printed ("Exception ignored") and dropped
            burn(0.5)

    def work():
        for _ in range(3):
            Slow()  # finalised at once, burning CPU inside __del__
        return "finished"

    assert cpu_limited(0.1, work) == (None, True)
    # in another thread no signal can interrupt: the CPU time is checked when the call returns
    results = []
    worker = threading.Thread(target=lambda: results.append(cpu_limited(0.1, work)))
    worker.start()
    worker.join()
    assert results == [(None, True)]


def test_the_first_page_does_not_pay_the_libraries_setup():
    """dateparser loads every locale the first time a date reaches it (~2 CPU-s): that happens before the clock."""
    page = article("Wiadomości", [" ".join(SENTENCES)] * 3).replace(
        "<article>", "<article><p class='date'>Opublikowano 3 marca 2019</p>")
    code = ("import sys; from pipeline.extract import Extractor, ExtractConfig, Reject\n"
            "try:\n    print(Extractor(ExtractConfig(timeout_s=1.0))(sys.stdin.read(), 'http://e.pl/').date)\n"
            "except Reject as r:\n    print(r.reason)\n")
    run = subprocess.run([sys.executable, "-c", code], input=page, capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "2019-01-01"  # htmldate's reading of the Polish date; not a timeout


def load_pages() -> list[bytes]:
    """Pages that need ~0.15 CPU-s (several times that in wall time on a loaded machine) and one that needs ~0.9 s."""
    medium = [article(f"Medium {k}", [f"Paragraph {k}.{i}. " + " ".join(SENTENCES) for i in range(500)]).encode()
              for k in range(3)]
    heavy = article("Heavy", [f"Paragraph {i}. " + " ".join(SENTENCES) for i in range(3000)]).encode()
    return [story(1), *medium, heavy, story(2)]


@pytest.mark.slow
def test_same_documents_and_rejects_under_cpu_load(tmp_path):
    (tmp_path / "in").mkdir()
    write_warc(tmp_path / "in" / "a.warc.gz", [warc_record(f"http://e.com/{i}", page)
                                               for i, page in enumerate(load_pages())])
    stage = ExtractStage(ExtractConfig(timeout_s=0.3))
    inputs = expand_inputs([str(tmp_path / "in")])

    def run(name: str) -> tuple[pa.Table, pa.Table]:
        run_stage(stage, inputs, str(tmp_path / name), LOCAL)
        rejected = read_table(tmp_path / name, "extract", "_rejected")
        return read_table(tmp_path / name, "extract"), rejected.select(["reason", "detail", "warc_offset", "url"])

    quiet_docs, quiet_rejects = run("quiet")
    assert quiet_docs.num_rows == 5 and quiet_rejects["reason"].to_pylist() == ["timeout"]
    assert quiet_rejects["url"].to_pylist() == ["http://e.com/4"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 2))]
    try:
        for attempt in range(2):
            docs, rejects = run(f"loaded-{attempt}")
            assert docs.equals(quiet_docs) and rejects.equals(quiet_rejects)
    finally:
        for process in busy:
            process.kill()
            process.wait()


# --- the stage -------------------------------------------------------------------------------------------------


def test_stage_extracts_rejects_with_reasons_and_joins_lineage(tmp_path):
    crawl, lineage = crawl_dir(tmp_path)
    out = tmp_path / "out"
    result = run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(crawl)]), str(out), LOCAL)
    docs = read_table(out, "extract")
    assert docs.schema.equals(DOC_SCHEMA)
    by_url = {row["url"]: row for row in docs.to_pylist()}
    assert set(by_url) == {"http://e.com/0", "http://fr.e.com/latin", "http://e.com/2", "http://e.com/4"}
    for row in by_url.values():
        assert (row["score"], row["subreddits"]) == lineage[(row["warc_file"].rsplit("/", 1)[-1], row["warc_offset"])]
        assert row["n_chars"] == len(row["text"]) and row["doc_id"]
    assert "Gérard" in by_url["http://fr.e.com/latin"]["text"]
    assert by_url["http://fr.e.com/latin"]["lang"] == "fr"
    assert by_url["http://e.com/0"]["lang"] == "en" and by_url["http://e.com/0"]["lang_score"] > 0.9
    assert by_url["http://e.com/0"]["title"] == "Story 0" and by_url["http://e.com/0"]["host"] == "e.com"
    rejected = read_table(out, "extract", "_rejected")
    reasons = Counter(rejected["reason"].to_pylist())
    assert reasons == {"http_status": 1, "not_html": 1, "empty_text": 1, "bad_http_headers": 1, "malformed_record": 1}
    funnel = result.funnel
    assert funnel["in"] == 9 and funnel["out"] == 4
    assert funnel["in"] == funnel["out"] + sum(v for k, v in funnel.items() if k.startswith("rejected:"))
    assert len(set(docs["doc_id"].to_pylist())) == 4


def test_two_crawls_given_together_each_join_their_own_fetch_log(tmp_path):
    # both crawls have a part-00000.warc.gz and its part-00000.parquet log: each WARC takes the log beside it
    for crawl, score in (("crawl-a", 5), ("crawl-b", 50)):
        (tmp_path / crawl).mkdir()
        offsets = write_warc(tmp_path / crawl / "part-00000.warc.gz", [warc_record(f"http://{crawl}.com/0", story(0))])
        pq.write_table(pa.table({"url": [f"http://{crawl}.com/0"], "final_url": [f"http://{crawl}.com/0"],
                                 "score_max": [score], "subreddits": [[crawl]], "warc_file": ["part-00000.warc.gz"],
                                 "warc_offset": offsets}), tmp_path / crawl / "part-00000.parquet")
    inputs = expand_inputs([str(tmp_path / "crawl-a"), str(tmp_path / "crawl-b")])
    run_stage(ExtractStage(ExtractConfig(with_metadata=False)), inputs, str(tmp_path / "out"), LOCAL)
    docs = read_table(tmp_path / "out", "extract")
    assert sorted(zip(docs["url"].to_pylist(), docs["score"].to_pylist())) == [
        ("http://crawl-a.com/0", 5), ("http://crawl-b.com/0", 50)]


def test_any_warc_without_a_fetch_log(tmp_path):
    write_warc(tmp_path / "CC-MAIN-1.warc.gz", [warc_record(f"http://cc.org/{i}", story(i)) for i in range(3)])
    out = tmp_path / "out"
    run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(tmp_path / "CC-MAIN-1.warc.gz")]), str(out), LOCAL)
    docs = read_table(out, "extract").to_pylist()
    assert len(docs) == 3 and all(d["score"] is None and d["subreddits"] is None for d in docs)


def test_cli_end_to_end(tmp_path, capsys):
    from jobs.cli import main

    crawl, _ = crawl_dir(tmp_path)
    out = tmp_path / "out"
    assert main(["extract", "--warc", str(crawl), "--out", str(out), "--executor", "local",
                 "--set", "with_metadata=false"]) == 0
    printed = capsys.readouterr().out
    assert "rejected:malformed_record" in printed and re.search(r"out\s+4\b", printed)
    assert json.loads((out / "extract" / "_manifest.json").read_text())["config"]["with_metadata"] is False
    assert main(["extract", "--warc", str(tmp_path / "nope"), "--out", str(out)]) == 2


# --- real pages ------------------------------------------------------------------------------------------------


def shingle_f1(pairs: list[tuple[str, str]]) -> tuple[float, float, float]:
    """The scrapinghub benchmark's metric (its README): 4-gram multisets of \\w+ tokens, P and R averaged."""
    precisions, recalls = [], []
    for gold, predicted in pairs:
        def grams(text):
            tokens = re.findall(r"\w+", text)
            return Counter(tuple(tokens[i : i + 4]) for i in range(max(0, len(tokens) - 3)))
        g, p = grams(gold), grams(predicted)
        tp = sum((g & p).values())
        fp, fn = sum(p.values()) - tp, sum(g.values()) - tp
        total = tp + fp + fn
        if total == 0:
            continue
        tp, fp, fn = tp / total, fp / total, fn / total
        if fp == 0 and fn == 0:
            precisions.append(1.0), recalls.append(1.0)
            continue
        if tp + fp > 0:
            precisions.append(tp / (tp + fp))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return precision, recall, 2 * precision * recall / (precision + recall)


def test_real_pages_quality_through_the_stage(tmp_path):
    data = shared_data("extraction", "scrapinghub")
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)
    records = [warc_record(truth[k]["url"], gzip.decompress((data / "html" / f"{k}.html.gz").read_bytes()),
                           content_type="text/html") for k in ids]
    write_warc(tmp_path / "pages.warc.gz", records)
    out = tmp_path / "out"
    run_stage(ExtractStage(ExtractConfig()), expand_inputs([str(tmp_path / "pages.warc.gz")]), str(out), LOCAL)
    texts = {row["url"]: row["text"] for row in read_table(out, "extract").to_pylist()}
    pairs = [(truth[k]["articleBody"], texts.get(truth[k]["url"], "")) for k in ids]
    precision, recall, f1 = shingle_f1(pairs)
    print(f"scrapinghub through the stage: P={precision:.3f} R={recall:.3f} F1={f1:.3f} on {len(pairs)} pages")
    assert len(texts) >= 175
    assert f1 >= 0.95
