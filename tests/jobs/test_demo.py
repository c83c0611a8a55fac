"""The demo's world end to end: the six corpus stages on the local web match the planted truth (on the session's
corpus), the truth check is not vacuous, and the demo command itself at CI size trains, fine-tunes and samples."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_corpus_matches_the_planted_truth(e2e_corpus):
    from jobs.demo import check_against_truth

    out = e2e_corpus.out
    for stage in ("urls", "crawl", "extract", "filter", "dedup", "tokenize"):
        assert (out / stage / "_manifest.json").exists(), stage
    docs = [r for p in sorted((out / "dedup").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert docs and all(d["text"] and d["score"] >= 3 for d in docs)
    assert list((out / "tokenize").glob("part-train-*.bin"))
    assert check_against_truth(out, e2e_corpus.expected_urls, e2e_corpus.pages, e2e_corpus.truth) == []
    assert_truth_check_catches_a_wrong_stage(out, e2e_corpus.pages, e2e_corpus.truth)


@pytest.mark.slow
def test_fine_tuning_questions_hold_out_whole_pages_and_can_be_answered_from_their_context(e2e_corpus, tmp_path):
    """Held-out questions are about pages of which nothing was trained on: their titles appear nowhere in the
    training files. Every question's answer is in its context, so it can be read rather than remembered."""
    import json
    import shutil

    from jobs.demo import HELD_OUT, write_finetune_data

    shutil.copytree(e2e_corpus.out / "dedup", tmp_path / "dedup")
    train_files, held_out = write_finetune_data(tmp_path, seed=0)
    held = [json.loads(line) for line in held_out.read_text().splitlines()]
    trained = "".join(f.read_text() for f in train_files)
    qa = [json.loads(line) for line in train_files[0].read_text().splitlines()]
    chat = [json.loads(line)["messages"] for line in train_files[1].read_text().splitlines()]
    titled = sum(1 for r in pq.read_table(tmp_path / "dedup").to_pylist() if r["title"])
    assert len(qa) == 2 * len(chat) and len(held) + len(chat) == titled
    assert abs(len(held) - HELD_OUT * titled) <= 1 and len({r["answer"] for r in held}) == len(held)
    assert not [r["answer"] for r in held if json.dumps(r["answer"])[1:-1] in trained]
    for row in held + qa:
        assert row["answer"] in row["context"] and row["answer"] not in row["question"]
    for _system, user, assistant in chat:
        assert assistant["content"] in user["content"].split("\n\n")[0]
    split = held_out.read_text()
    assert write_finetune_data(tmp_path, seed=0)[1].read_text() == split  # the same split again
    assert write_finetune_data(tmp_path, seed=1)[1].read_text() != split


def assert_truth_check_catches_a_wrong_stage(out, pages, truth):
    """The demo's check is not vacuous: a page planted otherwise than the stages found it is reported."""
    from dataclasses import replace

    from jobs.demo import check_against_truth
    from pipeline.urlnorm import normalize_url

    urls = {r["url_norm"] for r in pq.read_table(out / "urls" / "part-00000.parquet").to_pylist()}
    assert check_against_truth(out, urls, pages, truth) == []
    extracted = {normalize_url(r["url"]) for r in pq.read_table(out / "extract" / "part-00000.parquet").to_pylist()}
    stub = next(i for i, p in enumerate(pages) if p.expected_filter and normalize_url(p.url) in extracted)
    kept = {normalize_url(r["url"]) for r in pq.read_table(out / "dedup" / "part-00000.parquet").to_pylist()}
    near = next(i for i, p in enumerate(pages) if p.kind == "near_duplicate" and normalize_url(p.url) in extracted
                and normalize_url(p.url) not in kept)  # removed as a near duplicate of its source
    wrong_filter = pages[:stub] + [replace(pages[stub], expected_filter=None)] + pages[stub + 1:]
    assert [p.split(":")[0] for p in check_against_truth(out, urls, wrong_filter, truth)] == ["filter"]
    wrong_family = pages[:near] + [replace(pages[near], family="elsewhere/0")] + pages[near + 1:]
    assert [p.split(":")[0] for p in check_against_truth(out, urls, wrong_family, truth)] == ["dedup"]
    # recovered and lost pages and the capture chosen: another capture, another archive, a page not recovered
    recovered = sorted(u for u, t in truth.items() if t and u in urls)
    lost = sorted(u for u, t in truth.items() if not t and u in urls)
    assert recovered and lost
    earlier = {**truth, recovered[0]: [truth[recovered[0]][0], truth[recovered[0]][1] - 86400]}
    other = {**truth, recovered[0]: ["commoncrawl" if truth[recovered[0]][0] == "wayback" else "wayback",
                                     truth[recovered[0]][1]]}
    for wrong in (earlier, other):
        assert [p.split(":")[0] for p in check_against_truth(out, urls, pages, wrong)] == ["crawl"]
    claimed = {**truth, lost[0]: ["wayback", 1_500_000_000]}  # said recoverable, but the crawl lost it
    assert [p.split(":")[0] for p in check_against_truth(out, urls, pages, claimed)] == ["crawl"]


def test_build_corpus_config_names_the_section_of_an_unknown_key(tmp_path):
    from jobs.build_corpus import CorpusConfig
    from pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="unknown key 'dedup.threshhold'"):
        load_config(CorpusConfig, None, ["dedup.threshhold=0.5"])
    assert load_config(CorpusConfig, None, ["urls.min_karma=5"]).urls.min_karma == 5


@pytest.mark.slow
def test_reduced_demo_trains_fine_tunes_and_samples(tmp_path):
    """The whole demo through its command at CI size: the truth check said on stdout and in the report, a falling
    validation loss, text generated."""
    import json
    import math

    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "jobs.demo", "--out", str(out), "--hosts", "6", "--pages", "12",
                           "--steps", "12", "--finetune-steps", "12"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every stage matches the planted truth" in proc.stdout
    metrics = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert len(val) >= 2 and val[-1] < val[0] < math.log(50257) + 0.5
    samples = [line for line in proc.stdout.splitlines() if line.startswith("demo: sample: ")]
    completion = next(line for line in samples if line.startswith("demo: sample: 'The river"))
    assert len(completion) > len("demo: sample: 'The river'")  # generated text after the prompt
    assert any(line.startswith("demo: sample: 'user: ") for line in samples)
    assert (out / "finetune" / "summary.json").exists()
    for stage in ("urls", "crawl", "extract", "filter", "dedup", "tokenize"):
        assert (out / stage / "_manifest.json").exists(), stage
    report = (out / "report.html").read_text()
    assert "<h2>What the job said</h2>" in report and "every stage matches the planted truth" in report


@pytest.mark.slow
def test_build_corpus_reports_the_progress_of_every_stage_the_crawl_included(tmp_path):
    from jobs.build_corpus import build_corpus
    from jobs.demo import demo_config
    from jobs.fixtures.dumpgen import submissions_for_web, write_dump
    from jobs.fixtures.localweb import LocalWeb
    from pipeline.runner import RunOptions

    web = LocalWeb(seed=0, n_hosts=3, pages_per_host=4, hang_s=5.0)
    web.start()
    try:
        records, _ = submissions_for_web([p.url for p in web.pages()], seed=0)
        (tmp_path / "dumps").mkdir()
        write_dump(tmp_path / "dumps" / "RS_demo.zst", records, "zst")
        events = []
        options = RunOptions(executor="local", quiet=True, progress=events.append)
        results = build_corpus([str(tmp_path / "dumps")], str(tmp_path / "out"), demo_config(web), options, quiet=True)
        finished = [(e.stage, e.phase, e.phases) for e in events if e.finished]
        assert finished == [("urls", "reduce", 2), ("crawl", "fetch", 2), ("extract", "parts", 1),
                            ("filter", "parts", 1), ("dedup", "write", 5), ("tokenize", "shards", 3)]
        crawl = [e for e in events if e.stage == "crawl"]
        assert [e.phase_index for e in crawl] == sorted(e.phase_index for e in crawl)
        fetched = [e for e in crawl if e.phase == "fetch"]
        assert fetched[-1].records == results[1].funnel["in"] == results[0].funnel["out"] > 0
        events.clear()  # a second run: every stage current, one finished event each
        build_corpus([str(tmp_path / "dumps")], str(tmp_path / "out"), demo_config(web), options, quiet=True)
        assert [(e.stage, e.finished, e.phases) for e in events] == [
            (stage, True, 0) for stage in ("urls", "crawl", "extract", "filter", "dedup", "tokenize")]
    finally:
        web.stop()
