"""End to end through the CLI: WARC -> extract -> filter -> dedup, each stage reading the previous one's directory;
the example configs in configs/ are the defaults."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import REPO, article, prose, warc_record, write_warc



def test_warc_to_deduplicated_documents_through_the_cli(tmp_path, capsys):
    from jobs.cli import main

    def page(seed: int, extra: str = "") -> bytes:
        lines = prose(24, seed).split("\n")
        paragraphs = [f"In part {i} of report {seed}, {line[0].lower()}{line[1:]}" for i, line in enumerate(lines)]
        paragraphs += [extra] if extra else []
        return article(f"Page {seed}", paragraphs).encode()

    records = [
        warc_record("http://a.org/1", page(1)),
        warc_record("http://mirror.org/1", page(1)),  # the same article on another site
        warc_record("http://a.org/1-updated", page(1, "An update was added to this story on Friday morning.")),
        warc_record("http://b.org/2", page(2)),
        warc_record("http://c.org/short", article("Short", ["Just one line of text here."]).encode()),
        warc_record("http://d.org/fr", article("Fr", ["Le conseil municipal s'est réuni mardi soir. " * 30]).encode()),
    ]
    (tmp_path / "crawl").mkdir()
    write_warc(tmp_path / "crawl" / "crawl.warc.gz", records)
    # karma from the URL table, joined by URL: the keeper of the three copies is the one with the most
    karma = {"http://a.org/1": 50, "http://mirror.org/1": 5, "http://a.org/1-updated": 10, "http://b.org/2": 3}
    pq.write_table(pa.table({"url": list(karma), "final_url": list(karma), "score_max": list(karma.values()),
                             "subreddits": [["news"]] * len(karma)}), tmp_path / "crawl" / "fetch-log.parquet")
    out = str(tmp_path / "out")
    assert main(["extract", "--warc", str(tmp_path / "crawl"), "--out", out, "--executor", "local"]) == 0
    report = (tmp_path / "out" / "report.html").read_text()  # each stage command updates its output root's report
    assert "<h1>webtext extract report</h1>" in report and "Document lengths (extracted documents)" in report
    assert main(["filter", "--docs", f"{out}/extract", "--out", out, "--executor", "local"]) == 0
    assert main(["dedup", "--docs", f"{out}/filter", "--out", out, "--executor", "local",
                 "--config", str(REPO / "configs" / "dedup.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "rejected:min_tokens" in printed and "rejected:lang" in printed
    docs = pq.read_table(tmp_path / "out" / "dedup" / "part-00000.parquet").to_pylist()
    assert sorted((d["url"], d["score"]) for d in docs) == [("http://a.org/1", 50), ("http://b.org/2", 3)]
    rejected = pq.read_table(next((tmp_path / "out" / "dedup" / "_rejected").glob("*.parquet"))).to_pylist()
    kept_id = next(d["doc_id"] for d in docs if d["url"] == "http://a.org/1")
    assert {(r["url"], r["reason"], r["duplicate_of"]) for r in rejected} == {
        ("http://mirror.org/1", "exact_duplicate", kept_id), ("http://a.org/1-updated", "near_duplicate", kept_id)}
    manifests = [json.loads((tmp_path / "out" / s / "_manifest.json").read_text()) for s in ("extract", "filter", "dedup")]
    assert [m["funnel"]["in"] for m in manifests] == [6, 6, 4]
    assert [m["funnel"]["out"] for m in manifests] == [6, 4, 2]
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<h1>webtext dedup report</h1>" in report and "Document lengths (deduplicated documents)" in report
    assert all(f"<h3>{stage}</h3>" in report for stage in ("extract", "filter", "dedup"))
