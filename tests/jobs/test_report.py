"""The run report: sections whose numbers match the stage manifests, index and metrics they come from, absent data
omitted with a note, all text escaped, nothing external; and (where Chromium is installed) that it renders."""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.report import top_counts, write_report
from pipeline.documents import DOC_SCHEMA

CHROMIUM = Path("/usr/bin/chromium")
STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")


def assert_self_contained(page: str) -> None:
    assert 'src="http' not in page and "src='http" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "url(http" not in page


def funnel_rows(page: str, stage: str) -> dict[str, int]:
    """The counter -> records rows of one stage's funnel table in the report."""
    block = page.split(f"<h3>{stage}</h3>", 1)[1].split("</table>", 1)[0]
    cells = re.findall(r'<td class="">([^<]*)</td><td class="num">([\d,]+)</td>', block)
    return {key: int(value.replace(",", "")) for key, value in cells}


def section_note(page: str, title: str) -> str | None:
    match = re.search(rf"<h2>{re.escape(title)}</h2><p class=\"absent\">([^<]*)</p>", page)
    return match.group(1) if match else None


def documents(texts: list[tuple[str, str, int]]) -> pa.Table:
    rows = []
    for i, (host, text, score) in enumerate(texts):
        rows.append({"doc_id": f"d{i}", "url": f"http://{host}/{i}", "host": host, "title": f"T{i}", "text": text,
                     "date": "2020-01-01", "lang": "en", "lang_score": 0.99, "n_chars": len(text),
                     "n_words": len(text.split()), "score": score, "subreddits": ["news", "history"][: 1 + i % 2],
                     "warc_file": "w.warc.gz", "warc_offset": i})
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


def prose(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    vocabulary = [f"w{k}" for k in range(400)]
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def test_report_from_a_real_dedup_run_and_training_log(tmp_path):
    from jobs.cli import main
    from training.metrics import MetricsLog

    a, b, c = prose(1, 80), prose(2, 120), prose(3, 60)
    docs = documents([("a.org", a, 9), ("m.org", a, 3), ("z.org", a, 1), ("b.org", b, 5), ("n.org", b, 2),
                      ("c.org", c, 4)])
    (tmp_path / "docs").mkdir()
    pq.write_table(docs, tmp_path / "docs" / "part-00000.parquet")
    out = tmp_path / "out"
    assert main(["dedup", "--docs", str(tmp_path / "docs"), "--out", str(out), "--executor", "local"]) == 0

    run_dir = tmp_path / "pretrain"
    log = MetricsLog(run_dir, enabled=True, tensorboard=False, plot=False)
    for step in (10, 20, 30):
        log.log(step, loss=10.0 - step / 10, lr=1e-3, tokens_per_s=1000.0 + step)
    log.log(30, val_loss=8.25, val_ppl=3827.6)
    log.close()
    sample = 'A <script>alert("x")</script> & more'
    uri = write_report(str(out), {"pretrain": run_dir, "finetune": tmp_path / "nothing"}, [sample])
    page = Path(uri).read_text()

    assert_self_contained(page)
    manifest = json.loads((out / "dedup" / "_manifest.json").read_text())
    assert funnel_rows(page, "dedup") == manifest["funnel"]
    assert manifest["funnel"]["rejected:exact_duplicate"] + manifest["funnel"].get("rejected:near_duplicate", 0) == 3
    # one cluster of 3 (2 dropped) and one of 2 (1 dropped): the cluster table rows, then the total
    clusters = page.split("<h2>Duplicate clusters</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><td class="">([^<]*)</td><td class="num">([\d,]+)</td><td class="num">([\d,]+)</td>',
                      clusters)
    assert rows == [("2", "1", "1"), ("3", "1", "2"), ("all", "2", "3")]
    assert "site" not in page and "a.org" in page  # hosts of the deduplicated documents
    assert clusters.count("data:image/png;base64,") == 1
    # absent data: one line each, never an error
    assert section_note(page, "Tokens") == "Omitted: no tokenize/index.json found."
    assert section_note(page, "Training: finetune") == "Omitted: no metrics.jsonl in the run directory."
    assert "<h2>Training: pretrain</h2><p class" not in page
    training = page.split("<h2>Training: pretrain</h2>", 1)[1].split("<h2>", 1)[0]
    assert training.count("data:image/png;base64,") == 2  # loss and validation; tokens/s
    assert "<td class=\"\">val_loss</td><td class=\"num\">8.25</td>" in training
    assert "1,020 tokens/s" in training  # mean of 1010, 1020, 1030
    # text is escaped: the sample shows as text, and no markup of its own survives
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page


def test_a_fine_tuning_runs_held_out_answers_are_shown_beside_the_reference(tmp_path):
    from jobs.report import ANSWERS_SHOWN, MISSES_SHOWN
    from training.metrics import ANSWERS_FILE

    run = tmp_path / "finetune"
    run.mkdir()
    answers = [{"question": f"Which page <{i}>?", "answer": f"Title {i}" if i % 3 else "wrong",
                "reference": f"Title {i}", "exact": bool(i % 3)} for i in range(ANSWERS_SHOWN + 7)]
    (run / ANSWERS_FILE).write_text("".join(json.dumps(a) + "\n" for a in answers))
    page = Path(write_report(str(tmp_path), {"finetune": run}, corpus=False)).read_text()
    assert_self_contained(page)
    section = page.split("<h2>Held-out questions: finetune</h2>", 1)[1].split("<h2>", 1)[0]
    assert f"{sum(a['exact'] for a in answers)} of {len(answers)} answered exactly" in section
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>",
                      section)
    shown = list(enumerate(answers))[:ANSWERS_SHOWN] + [(i, a) for i, a in enumerate(answers)
                                                        if i >= ANSWERS_SHOWN and not a["exact"]][:MISSES_SHOWN]
    assert len(shown) == ANSWERS_SHOWN + 2  # the 7 later answers hold two misses
    assert rows == [(f"Which page &lt;{i}&gt;?", a["answer"], a["reference"], "yes" if a["exact"] else "no")
                    for i, a in shown]
    assert f"the first {ANSWERS_SHOWN} and 2 later misses:" in section
    assert "Held-out questions" not in Path(write_report(str(tmp_path / "pre"), {"pretrain": run.parent / "x"},
                                                         corpus=False)).read_text()


def test_report_of_an_empty_directory_notes_every_absent_section(tmp_path):
    page = Path(write_report(str(tmp_path))).read_text()
    assert_self_contained(page)
    for title in ("Summary", "Hosts and subreddits", "Document lengths", "Duplicate clusters", "Tokens"):
        assert section_note(page, title).startswith("Omitted: "), title


def test_top_counts_count_each_subreddit_once_per_row_and_break_ties_by_name():
    assert top_counts([["b", "a", "a"], ["b"], None, ["c"]], 2) == [("b", 2), ("a", 1)]
    assert top_counts(["x", "y", "x"]) == [("x", 2), ("y", 1)]


@pytest.mark.slow
def test_build_corpus_report_shows_the_numbers_of_every_stage(e2e_corpus):
    """`webtext build-corpus` ends with its report: every stage's funnel, tokens, hosts, lengths; corpus only."""
    out = e2e_corpus.out
    assert f"corpus: report in {out}/report.html" in e2e_corpus.stdout
    page = (out / "report.html").read_text()
    assert_self_contained(page)
    for stage in STAGES:
        manifest = json.loads((out / stage / "_manifest.json").read_text())
        assert funnel_rows(page, stage) == manifest["funnel"], stage
    index = json.loads((out / "tokenize" / "index.json").read_text())
    tokens = page.split("<h2>Tokens</h2>", 1)[1].split("</table>", 1)[0]
    for split, info in index["splits"].items():
        assert f'<td class="">{split}</td><td class="num">{info["tokens"]:,}</td>' in tokens
    hosts = Counter(host for p in (out / "urls").glob("part-*.parquet")
                    for host in pq.read_table(p, columns=["host"]).column("host").to_pylist())
    host, count = sorted(hosts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    assert f'<td class="">{host}</td><td class="num">{count}</td>' in page
    n_words = [n for p in (out / "dedup").glob("part-*.parquet")
               for n in pq.read_table(p, columns=["n_words"]).column("n_words").to_pylist()]
    lengths = page.split("<h2>Document lengths (deduplicated documents)</h2>", 1)[1].split("<h2>", 1)[0]
    assert "data:image/png;base64," in lengths
    assert f'<td class="">documents</td><td class="num">{len(n_words)}</td>' in lengths
    assert f'<td class="">total n_words</td><td class="num">{sum(n_words):,}</td>' in lengths
    assert "<h2>Training" not in page and "Sample generations" not in page  # a corpus job: corpus sections only


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_corpus_report_renders_in_headless_chromium(e2e_corpus, tmp_path):
    shot = tmp_path / "report.png"
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1280,2400", f"file://{e2e_corpus.out / 'report.html'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # a blank page of this size compresses to a few kB; tables and plots do not


def test_report_of_a_training_run_on_s3_is_written_next_to_it(s3, tmp_path):
    """A run with out_dir=s3://… (training/storage.py) ends with its report in the bucket, curves included."""
    from pipeline.storage import Dir
    from training.metrics import MetricsLog

    local = tmp_path / "run"
    log = MetricsLog(local, enabled=True, tensorboard=False, plot=False)
    for step in (1, 2, 3):
        log.log(step, loss=10.0 - step, lr=1e-3, tokens_per_s=500.0)
    log.close()
    run = Dir(s3("webtext-test/runs/pretrain"))
    run.write_bytes("metrics.jsonl", (local / "metrics.jsonl").read_bytes())
    uri = write_report(run.location, {"pretrain": run.location}, corpus=False, title="webtext pretrain")
    assert uri.startswith("s3://webtext-test/runs/pretrain/report.html")
    page = run.read_bytes("report.html").decode()
    training = page.split("<h2>Training: pretrain</h2>", 1)[1]
    assert training.count("data:image/png;base64,") == 2 and "500 tokens/s" in training
