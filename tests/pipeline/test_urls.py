"""The urls stage: rules, karma, bad input, real Pushshift dumps, resume after a kill, Ray vs one process."""

from __future__ import annotations

import json
import lzma
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from jobs.fixtures.dumpgen import submission, synthetic_records, write_dump
from pipeline.config import ConfigError, load_config
from pipeline.runner import RunOptions, StageError, run_stage
from pipeline.storage import expand_inputs
from pipeline.urls import RawSubmission, Reject, SubmissionRules, UrlsConfig, UrlsStage, decode_line
from tests.helpers import REPO, shared_data

LOCAL = RunOptions(executor="local", quiet=True)


def run_urls(dumps, out, options=LOCAL, **config):
    specs = [str(d) for d in (dumps if isinstance(dumps, list) else [dumps])]
    return run_stage(UrlsStage(UrlsConfig(**config)), expand_inputs(specs), str(out), options)


def read_rows(out) -> list[dict]:
    parts = sorted((Path(out) / "urls").glob("part-*.parquet"))
    return [row for p in parts for row in pq.read_table(p).to_pylist()]


def read_rejected(out) -> list[dict]:
    parts = sorted((Path(out) / "urls" / "_rejected").glob("*.parquet"))
    return [row for p in parts for row in pq.read_table(p).to_pylist()]


# --- record rules ----------------------------------------------------------------------------------------------


def rule_reason(record: dict, **config) -> str | None:
    result = SubmissionRules(UrlsConfig(**config)).apply(msgspec.convert(record, RawSubmission))
    return result.reason if isinstance(result, Reject) else None


@pytest.mark.parametrize("record,reason", [
    (submission("a", "http://example.com/story"), None),
    (submission("a", "http://example.com/story", is_self=True), "self_post"),
    (submission("a", "http://example.com/story", over_18=True), "nsfw"),
    (submission("a", "ftp://example.com/file"), "bad_scheme"),
    (submission("a", "javascript:alert(1)"), "bad_scheme"),
    (submission("a", "http://:80/x"), "bad_url"),
    (submission("a", "https://i.redd.it/abc.jpeg"), "blocked_domain"),
    (submission("a", "https://v.redd.it/abc"), "blocked_domain"),
    (submission("a", "https://m.youtube.com/watch?v=1"), "blocked_domain"),
    (submission("a", "https://en.wikipedia.org/wiki/Reddit"), "blocked_domain"),
    (submission("a", "http://example.com/photo.JPG"), "blocked_extension"),
    (submission("a", "http://example.com/song.mp3?download=1"), "blocked_extension"),
    (submission("a", "http://example.com/archive.zip"), "blocked_extension"),
    (submission("a", "http://example.com/page.html"), None),
    (submission("a", "http://notimgur.com/page"), None),  # a suffix of a label is not a subdomain
    ({"id": "a", "score": 4, "created_utc": 1}, "missing_field"),
    ({"id": "a", "url": "http://e.com/", "created_utc": 1}, "missing_field"),
    (submission("a", "http://e.com/", score="lots"), "bad_field"),
    (submission("a", "http://e.com/", created_utc="yesterday"), "bad_field"),
    (submission("a", "http://e.com/", is_self="maybe"), "bad_field"),
    (submission("a", 42), "bad_field"),
])
def test_record_rules(record, reason):
    assert rule_reason(record) == reason


def test_rules_are_configurable():
    nsfw = submission("a", "http://example.com/story", over_18=True)
    assert rule_reason(nsfw, drop_nsfw=False) is None
    selfpost = submission("a", "http://example.com/story", is_self=True)
    assert rule_reason(selfpost, link_posts_only=False) is None
    assert rule_reason(submission("a", "https://imgur.com/x"), blocked_domains=[]) is None
    assert rule_reason(submission("a", "https://news.example.org/x"), extra_blocked_domains=["example.org"]) \
        == "blocked_domain"
    assert rule_reason(submission("a", "http://e.com/a.txt"), extra_blocked_extensions=[".TXT"]) == "blocked_extension"


@pytest.mark.parametrize("created_utc", [1119552233, 1119552233.0, "1119552233", "1119552233.0",
                                         1119552233.5, 1119552233.999, "1119552233.25", " 1119552233.7 "])
def test_created_utc_types(created_utc):
    # Reddit's API serves created_utc with a fraction at times; the second it falls in is kept
    record = msgspec.convert(submission("a", "http://e.com/", created_utc=created_utc), RawSubmission)
    sub = SubmissionRules(UrlsConfig()).apply(record)
    assert sub.created_utc == 1119552233


@pytest.mark.parametrize("line,reason", [
    (b'{"id": "a", "url": "http://e.com/"', "bad_json"),
    (b"garbage", "bad_json"),
    (b'{"id": "caf\xe9"}', "invalid_utf8"),
    (b"[1, 2]", "not_an_object"),
])
def test_decode_line_rejects(line, reason):
    with pytest.raises(Reject) as err:
        decode_line(line)
    assert err.value.reason == reason


def test_decode_line_accepts_lone_surrogate_escapes():
    assert decode_line(b'{"id": "\\ud83d"}').id == "\ud83d"


def test_decode_line_checks_utf8_of_fields_it_skips():
    with pytest.raises(Reject, match="invalid_utf8"):
        decode_line(b'{"id": "a", "title": "caf\xe9"}')


# --- karma rules -----------------------------------------------------------------------------------------------


def karma_dump(tmp_path):
    # one page posted three times (score 1 + 1 + 1), one posted once with 3, one with 2
    records = [
        submission("a1", "http://www.example.com/x?utm_source=a", score=1, created_utc=300, subreddit="news"),
        submission("a2", "http://example.com/x/", score=1, created_utc=100, subreddit="science"),
        submission("a3", "http://EXAMPLE.com/x#top", score=1, created_utc=200, subreddit="news"),
        submission("b1", "http://example.org/y", score=3, created_utc=400),
        submission("c1", "http://example.net/z", score=2, created_utc=500),
    ]
    return write_dump(tmp_path / "RS_test.ndjson", records)


def test_karma_rule_max(tmp_path):
    result = run_urls(karma_dump(tmp_path), tmp_path / "out", karma_rule="max")
    rows = read_rows(tmp_path / "out")
    assert [r["url_norm"] for r in rows] == ["http://example.org/y"]
    assert result.funnel == {"in": 5, "out": 1, "merged": 0, "rejected:low_karma": 4}
    details = {r["id"]: r["detail"] for r in read_rejected(tmp_path / "out")}
    assert details["c1"] == "score_max=2<3"


def test_karma_rule_sum_merges_submissions_of_one_page(tmp_path):
    result = run_urls(karma_dump(tmp_path), tmp_path / "out", karma_rule="sum")
    rows = {r["url_norm"]: r for r in read_rows(tmp_path / "out")}
    assert sorted(rows) == ["http://example.com/x", "http://example.org/y"]
    page = rows["http://example.com/x"]
    assert page["score_sum"] == 3 and page["score_max"] == 1 and page["n_submissions"] == 3
    assert page["first_utc"] == 100
    assert page["url"] == "http://example.com/x/"  # the earliest submission's URL is the one fetched
    assert page["ids"] == ["a2", "a3", "a1"]  # in time order
    assert page["subreddits"] == ["news", "science"]  # sorted, not as first seen: the same at any bucket count
    assert page["host"] == "example.com"
    assert result.funnel == {"in": 5, "out": 2, "merged": 2, "rejected:low_karma": 1}


# --- the output table ------------------------------------------------------------------------------------------


def test_output_schema_and_order(tmp_path):
    run_urls(write_dump(tmp_path / "d.zst", synthetic_records(3000, seed=1), "zst"), tmp_path / "out", num_buckets=3)
    parts = sorted((tmp_path / "out" / "urls").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for part in parts:
        table = pq.read_table(part)
        assert table.column_names == ["url", "url_norm", "host", "subreddits", "score_max", "score_sum",
                                      "n_submissions", "first_utc", "ids"]
        keys = table["url_norm"].to_pylist()
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
    rows = read_rows(tmp_path / "out")
    assert len({r["url_norm"] for r in rows}) == len(rows)  # one row per page across parts
    assert all(r["score_max"] >= 3 for r in rows)
    assert all(r["n_submissions"] == len(r["ids"]) for r in rows)


@pytest.mark.parametrize("compression", [None, "zst", "xz", "gz", "bz2"])
def test_every_compression_reads_the_same(tmp_path, compression):
    records = synthetic_records(500, seed=2)
    suffix = f".{compression}" if compression else ".ndjson"
    run_urls(write_dump(tmp_path / f"RS{suffix}", records, compression), tmp_path / "out")
    plain = tmp_path / "plain"
    plain.mkdir()
    run_urls(write_dump(plain / "RS.ndjson", records), tmp_path / "out_plain")
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "out_plain")


# --- real Pushshift dumps --------------------------------------------------------------------------------------


def load_ndjson_xz(path: Path) -> list[dict]:
    return [json.loads(line) for line in lzma.decompress(path.read_bytes()).splitlines() if line.strip()]


@pytest.mark.parametrize("month,expected_3plus", [("06", 83), ("07", 757)])
def test_real_2005_dumps(tmp_path, month, expected_3plus):
    path = shared_data("reddit", f"RS_v2_2005-{month}.xz")
    records = load_ndjson_xz(path)
    high = {r["id"] for r in records if r["score"] >= 3}
    assert len(high) == expected_3plus  # the data is what its README says
    assert not any(r["is_self"] or r["over_18"] for r in records)
    result = run_urls(path, tmp_path / "out", blocked_domains=[], blocked_extensions=[])
    rows = read_rows(tmp_path / "out")
    kept_ids = {i for r in rows for i in r["ids"]}
    assert high <= kept_ids  # every submission with karma >= 3 is in the table
    assert all(r["score_max"] >= 3 for r in rows)
    # the funnel adds up and matches the records: nothing but karma removes anything here
    rejected = read_rejected(tmp_path / "out")
    assert result.funnel["in"] == len(records)
    assert {r["reason"] for r in rejected} <= {"low_karma"}
    assert len(kept_ids) + len(rejected) == len(records)
    assert sum(r["n_submissions"] for r in rows) == len(kept_ids)
    by_id = {r["id"]: r for r in records}
    assert all(by_id[r["id"]]["score"] < 3 for r in rejected)


def test_real_2005_dumps_default_rules(tmp_path):
    paths = [shared_data("reddit", f"RS_v2_2005-{m}.xz") for m in ("06", "07")]
    result = run_urls(paths, tmp_path / "out")
    funnel = result.funnel
    assert funnel["in"] == 103 + 1079
    accounted = funnel["out"] + funnel["merged"] + sum(v for k, v in funnel.items() if k.startswith("rejected:"))
    assert accounted == funnel["in"]
    for row in read_rejected(tmp_path / "out"):
        assert row["file"].endswith(".xz") and row["line"] >= 1


def test_real_mixed_eras(tmp_path):
    path = shared_data("reddit", "mixed_eras_submissions.ndjson")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert {type(r["created_utc"]) for r in records} == {int, float, str}
    result = run_urls(path, tmp_path / "out", min_karma=0)
    rejected = {r["id"]: r["reason"] for r in read_rejected(tmp_path / "out")}
    expected = Counter()
    for r in records:
        if r["is_self"]:
            expected["self_post"] += 1
            assert rejected[r["id"]] == "self_post"
        elif r["over_18"]:
            expected["nsfw"] += 1
            assert rejected[r["id"]] == "nsfw"
        elif "redd.it" in r["url"] or "reddit.com" in r["url"]:
            expected["blocked_domain"] += 1
            assert rejected[r["id"]] == "blocked_domain"
    assert expected["self_post"] and expected["nsfw"] and expected["blocked_domain"]
    rows = {i: row for row in read_rows(tmp_path / "out") for i in row["ids"]}
    assert rows["2f4i97"]["first_utc"] == 1409529600  # string timestamp
    assert rows["87"]["first_utc"] == 1119552233  # int timestamp
    assert result.funnel["in"] == len(records)


# --- bad input -------------------------------------------------------------------------------------------------


def test_corrupt_lines_are_kept_with_file_line_and_reason(tmp_path):
    good = [submission(f"g{i}", f"http://example.com/{i}") for i in range(3)]
    lines = [good[0], b"this is not json", b'{"id": "x", "url": "http://e.com/caf\xe9"}', good[1],
             b'{"id": "t", "url": "http://e.com/tru', good[2]]
    dump = write_dump(tmp_path / "RS_bad.ndjson", lines)
    result = run_urls(dump, tmp_path / "out")
    rejected = {r["line"]: r for r in read_rejected(tmp_path / "out")}
    assert {n: r["reason"] for n, r in rejected.items()} == {2: "bad_json", 3: "invalid_utf8", 5: "bad_json"}
    assert rejected[3]["raw"] == b'{"id": "x", "url": "http://e.com/caf\xe9"}'  # kept byte for byte
    assert all(r["file"] == str(dump) for r in rejected.values())
    assert result.funnel["out"] == 3


def test_numbers_beyond_int64_are_bad_fields_not_a_failed_dump(tmp_path):
    # JSON numbers have no bound: one such value must cost its record, not the dump (it crashed the map task)
    lines = [submission("big", "http://e.com/1", score=10**20), submission("far", "http://e.com/2", created_utc=1e30),
             submission("neg", "http://e.com/3", created_utc=-(2**70)), submission("self", "http://e.com/4",
                                                                              score=10**20, is_self=True),
             submission("ok", "http://e.com/5")]
    result = run_urls(write_dump(tmp_path / "RS_big.ndjson", lines), tmp_path / "out")
    rejected = {r["id"]: r["reason"] for r in read_rejected(tmp_path / "out")}
    assert rejected == {"big": "bad_field", "far": "bad_field", "neg": "bad_field", "self": "bad_field"}
    assert result.funnel["out"] == 1


def test_truncated_zst_keeps_what_it_read_and_reports_the_cut(tmp_path):
    records = [submission(f"s{i}", f"http://example.com/{i}") for i in range(20000)]
    whole = write_dump(tmp_path / "whole.zst", records, "zst")
    cut = tmp_path / "cut" / "RS_cut.zst"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = run_urls(cut, tmp_path / "out")
    rejected = read_rejected(tmp_path / "out")
    truncated = [r for r in rejected if r["reason"] == "truncated_file"]
    assert len(truncated) == 1 and "truncated" in truncated[0]["detail"]
    kept = result.funnel["out"]
    assert 0 < kept < 20000
    # the cut line itself (if any) is a bad_json reject; everything before it is kept
    assert kept + sum(r["reason"] == "bad_json" for r in rejected) == truncated[0]["line"] - 1


def test_empty_file(tmp_path):
    result = run_urls(write_dump(tmp_path / "RS_empty.zst", [], "zst"), tmp_path / "out")
    assert result.funnel == {"in": 0, "out": 0, "merged": 0}


def test_undecompressable_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "RS_garbage.zst"
    bad.write_bytes(b"this was never zstd" * 10)
    with pytest.raises(StageError, match="RS_garbage.zst: cannot decompress"):
        run_urls(bad, tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"this was never compressed\n" * 10])
@pytest.mark.parametrize("ext", ["zst", "xz", "gz", "bz2"])
def test_empty_or_undecompressable_dump_fails_the_plan(tmp_path, ext, content):
    """Never read as "no records": an error naming the file, raised when the stage plans, before any task runs."""
    bad = tmp_path / f"RS_bad.{ext}"
    bad.write_bytes(content)
    inputs = expand_inputs([str(bad)])
    with pytest.raises(StageError, match=f"RS_bad.{ext}: cannot decompress"):
        UrlsStage(UrlsConfig()).plan(inputs)
    with pytest.raises(StageError, match=f"RS_bad.{ext}: cannot decompress"):
        UrlsStage(UrlsConfig(num_buckets=2)).plan(inputs)
    with pytest.raises(StageError, match=f"RS_bad.{ext}"):
        run_urls(bad, tmp_path / "out")
    result = run_urls(bad, tmp_path / "lenient", strict=False)
    assert result.funnel == {"in": 1, "out": 0, "merged": 0, "rejected:unreadable_file": 1}


def test_undecompressable_file_skipped_when_not_strict(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "RS_garbage.xz").write_bytes(b"not xz at all")
    write_dump(tmp_path / "in" / "RS_good.ndjson", [submission("a", "http://example.com/")])
    result = run_urls(tmp_path / "in", tmp_path / "out", strict=False)
    assert result.funnel["rejected:unreadable_file"] == 1 and result.funnel["out"] == 1
    [reject] = [r for r in read_rejected(tmp_path / "out") if r["reason"] == "unreadable_file"]
    assert reject["file"].endswith("RS_garbage.xz")


def test_missing_input_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_inputs([str(tmp_path / "nothing-here*.zst")])


# --- skip, rebuild, resume -------------------------------------------------------------------------------------


def test_up_to_date_output_is_skipped_and_config_change_rebuilds(tmp_path):
    dump = karma_dump(tmp_path)
    first = run_urls(dump, tmp_path / "out")
    assert not first.skipped
    assert not (tmp_path / "out" / "urls" / "_work").exists()  # the map's shuffle files go when the stage is done
    assert run_urls(dump, tmp_path / "out").skipped
    changed = run_urls(dump, tmp_path / "out", karma_rule="sum")
    assert not changed.skipped and changed.funnel["out"] == 2
    manifest = json.loads((tmp_path / "out" / "urls" / "_manifest.json").read_text())
    assert manifest["config"]["karma_rule"] == "sum"
    assert manifest["inputs"][0]["uri"] == str(dump) and manifest["inputs"][0]["size"] == dump.stat().st_size
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"])


def test_rebuild_with_fewer_buckets_leaves_no_stale_parts(tmp_path):
    dump = write_dump(tmp_path / "d.ndjson", synthetic_records(2000, seed=3))
    run_urls(dump, tmp_path / "out", num_buckets=4)
    run_urls(dump, tmp_path / "out", num_buckets=2)
    names = sorted(p.name for p in (tmp_path / "out" / "urls").glob("part-*"))
    assert names == ["part-00000.parquet", "part-00001.parquet"]


def snapshot(out: Path) -> dict[str, object]:
    """The content of a stage directory, without timing fields, for comparisons."""
    stage = out / "urls"
    files = {}
    for path in sorted(stage.rglob("*.parquet")):
        files[str(path.relative_to(stage))] = pq.read_table(path).to_pylist()
    manifest = json.loads((stage / "_manifest.json").read_text())
    files["funnel"] = manifest["funnel"]
    files["parts"] = [(p["name"], p["rows"], p["sha256"]) for p in manifest["parts"]]
    return files


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for i in range(8):
        write_dump(dumps / f"RS_{i}.zst", synthetic_records(40000, seed=10 + i, id_prefix=f"f{i}_"), "zst")
    run_urls(dumps, tmp_path / "clean")

    cmd = [sys.executable, "-m", "jobs.urls", "--dumps", str(dumps), "--out", str(tmp_path / "killed"),
           "--executor", "local"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tasks = tmp_path / "killed" / "urls" / "_tasks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tasks.glob("map-*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(tasks.glob("*.json")))
    assert 3 <= done_before < 8 + 8, "the kill must land halfway"
    assert not (tmp_path / "killed" / "urls" / "_manifest.json").exists()

    result = run_urls(dumps, tmp_path / "killed")
    assert not result.skipped
    assert snapshot(tmp_path / "killed") == snapshot(tmp_path / "clean")
    leftovers = [p for p in (tmp_path / "killed" / "urls").rglob(".tmp-*")]
    assert leftovers == []


# --- config and CLI --------------------------------------------------------------------------------------------


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "urls.yaml"
    config.write_text("min_karma: 3\nmin_karmma: 5\n")
    with pytest.raises(ConfigError, match="unknown key 'min_karmma'"):
        load_config(UrlsConfig, config)
    with pytest.raises(ConfigError, match="karma_rule"):
        load_config(UrlsConfig, None, ["karma_rule=median"])
    config.write_text("min_karma: 3\nkarma_rule: sum\n")
    loaded = load_config(UrlsConfig, config, ["min_karma=10"])
    assert (loaded.min_karma, loaded.karma_rule) == (10, "sum")


def webtext(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_prints_the_funnel(tmp_path):
    dump = karma_dump(tmp_path)
    config = tmp_path / "urls.yaml"
    config.write_text("karma_rule: sum\n")
    proc = webtext("urls", "--dumps", str(dump), "--out", str(tmp_path / "out"), "--config", str(config),
                   "--set", "min_karma=3", "--executor", "local")
    assert proc.returncode == 0, proc.stderr
    assert "rejected:low_karma" in proc.stdout and "merged" in proc.stdout
    assert len(read_rows(tmp_path / "out")) == 2


def test_cli_errors_are_one_line(tmp_path):
    config = tmp_path / "urls.yaml"
    config.write_text("karma: 3\n")
    proc = webtext("urls", "--dumps", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(config))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"webtext: error: unknown key 'karma' (in {config})",
                                                f"webtext: what to do: {ConfigError.hint}"]
    proc = webtext("urls", "--dumps", str(tmp_path / "missing.zst"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "missing.zst: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_on_a_local_ray_head_through_address(tmp_path, ray_head):
    """`--address` joins an existing cluster: a real `ray start --head` on 127.0.0.1."""
    dump = write_dump(tmp_path / "RS_x.ndjson", synthetic_records(2000, seed=9))
    proc = webtext("urls", "--dumps", str(dump), "--out", str(tmp_path / "out"), "--address", ray_head.address)
    assert proc.returncode == 0, proc.stderr
    run_urls(dump, tmp_path / "local")
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "local")


def test_the_plan_probes_each_dump_once_and_carries_the_bucket_count_to_both_phases(tmp_path, monkeypatch):
    import pipeline.urls as urls

    records = synthetic_records(3000, seed=11)
    (tmp_path / "dumps").mkdir()
    for i, compression in enumerate(("zst", "gz", None)):
        write_dump(tmp_path / "dumps" / f"RS_{i}.{compression or 'ndjson'}", records[i::3], compression)
    probed = Counter()
    real = urls.probe_dump
    monkeypatch.setattr(urls, "probe_dump", lambda file: probed.update([file.name]) or real(file))
    events = []
    result = run_urls(tmp_path / "dumps", tmp_path / "out", RunOptions(executor="local", quiet=True,
                                                                       progress=events.append),
                      bucket_raw_bytes=100_000)
    assert probed == {"RS_0.zst": 1, "RS_1.gz": 1, "RS_2.ndjson": 1}  # once per run, not once per phase
    inputs = expand_inputs([str(tmp_path / "dumps")])
    map_phase, reduce_phase = UrlsStage(UrlsConfig(bucket_raw_bytes=100_000)).plan(inputs)
    buckets = len(reduce_phase.tasks)
    assert buckets > 1 and [t.buckets for t in map_phase.tasks] == [buckets] * 3
    assert [t.maps for t in reduce_phase.tasks] == [3] * buckets and len(result.manifest["parts"]) == buckets
    assert [(e.phase, e.tasks_done, e.tasks_total) for e in events if not e.finished][:5] == [
        ("map", 0, 3), ("map", 1, 3), ("map", 2, 3), ("map", 3, 3), ("reduce", 0, buckets)]
    assert events[3].records == result.funnel["in"] == 3000


# --- memory: flat in the input ----------------------------------------------------------------------------------


def test_the_probe_decompresses_its_sample_a_step_at_a_time(tmp_path):
    """2020s records decompress ~120x: the plan's 1 MiB sample at once would hold its whole output (here ~35 MB)."""
    import tracemalloc

    from jobs.fixtures.dumpgen import write_large_zst
    from pipeline.urls import probe_dump

    dump = expand_inputs([str(write_large_zst(tmp_path / "RS_big.zst", 10_000, seed=1, era="2020s"))])[0]
    tracemalloc.start()
    try:
        estimate = probe_dump(dump)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert estimate > 30e6 and peak < estimate / 3


def test_a_map_task_writes_each_flush_into_the_buckets_it_reaches_in_dump_order(tmp_path):
    """The shuffle files of a map task: row groups of at most `batch_rows` rows (its buffer), none empty (with many
    buckets most get nothing from a small flush), each bucket's rows in the dump's order."""
    write_dump(tmp_path / "RS.zst", synthetic_records(600, seed=4), "zst")
    result = run_urls(tmp_path / "RS.zst", tmp_path / "out", RunOptions(executor="local", quiet=True, keep_work=True),
                      num_buckets=40, batch_rows=16)
    files = sorted((tmp_path / "out" / "urls" / "_work" / "map-00000").glob("bucket-*.parquet"))
    assert len(files) == 40
    sizes = [pq.ParquetFile(f).metadata.row_group(g).num_rows for f in files
             for g in range(pq.ParquetFile(f).num_row_groups)]
    assert min(sizes) >= 1 and max(sizes) <= 16
    for f in files:
        lines = pq.read_table(f, columns=["line"])["line"].to_pylist()
        assert lines == sorted(lines)
    assert sum(sizes) == result.funnel["in"] - sum(n for k, n in result.funnel.items()
                                                   if k.startswith("rejected:") and k != "rejected:low_karma")


def test_buckets_are_chosen_so_a_reduce_task_holds_at_most_128_mb_of_dumps(tmp_path):
    from pipeline.storage import InputFile

    sizes = {InputFile(f"RS_{i}.zst", 1, 0): raw for i, raw in enumerate((300 << 20, 600 << 20))}
    assert UrlsStage(UrlsConfig()).num_buckets(sizes) == 8  # 900 MB / 128 MB, rounded up
