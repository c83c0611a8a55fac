"""`webtext status`: each stage current, stale (the config key or input named), partial (tasks done / total, the
last error) after a failed task or a kill; a training run's checkpoint, step, tokens and validation loss; local
paths and s3:// alike; the --json schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.fixtures.dumpgen import synthetic_records, write_dump
from pipeline.runner import RunOptions, StageError, run_stage
from pipeline.status import corpus_status
from pipeline.storage import expand_inputs, join
from tests.helpers import REPO, CountConfig, CountLines, CountLinesFailingOn, count_inputs

LOCAL = RunOptions(executor="local", quiet=True)
STAGE_KEYS = {"name", "location", "state", "reasons", "tasks_done", "tasks_total", "last_error", "funnel", "parts",
              "bytes", "finished_at"}
RUN_KEYS = {"location", "state", "max_steps", "last_checkpoint", "step", "tokens_seen", "last_logged_step",
            "val_loss", "val_loss_step"}


@pytest.fixture
def inputs(tmp_path):
    return count_inputs(tmp_path)


class Recount(CountLines):
    """A second stage reading the first one's parts."""

    name = "recount"

    def run_task(self, file, ctx):
        import pyarrow.parquet as pq

        lines = pq.read_table(file.uri).column("line").to_pylist()
        ctx.count("in", len(lines))
        ctx.write_part(pq.read_table(file.uri))


def build(inputs: Path, out: str, tag: str = "") -> None:
    run_stage(CountLines(CountConfig(tag=tag)), expand_inputs([str(inputs)]), out, LOCAL)
    run_stage(Recount(CountConfig()), expand_inputs([join(out, "count")]), out, LOCAL)


def status(inputs: Path, out: str, tag: str = "") -> dict:
    return {s.name: s for s in corpus_status(out, [CountLines(CountConfig(tag=tag)), Recount(CountConfig())],
                                             [str(inputs)])}


def test_a_finished_output_is_current_with_its_funnel_and_size(tmp_path, inputs):
    out = str(tmp_path / "out")
    build(inputs, out)
    found = status(inputs, out)
    assert [(s.state, s.reasons) for s in found.values()] == [("current", []), ("current", [])]
    assert found["count"].funnel == {"in": 4, "out": 3, "rejected:blank": 1}
    assert found["count"].parts == 2
    parts = sorted((tmp_path / "out" / "count").glob("part-*.parquet"))
    assert found["count"].bytes == sum(p.stat().st_size for p in parts) > 0


def test_a_changed_config_key_is_named_with_both_values_and_makes_downstream_stale(tmp_path, inputs):
    out = str(tmp_path / "out")
    build(inputs, out, tag="a")
    found = status(inputs, out, tag="b")
    assert found["count"].state == "stale"
    assert found["count"].reasons == ['config count.tag: "a" -> "b"']
    assert found["recount"].state == "stale"
    assert found["recount"].reasons == ["upstream stage count is stale: it is rebuilt first, then this one"]
    assert found["count"].funnel["out"] == 3  # the old output is still there and described


def test_a_changed_input_is_named(tmp_path, inputs):
    out = str(tmp_path / "out")
    build(inputs, out)
    (inputs / "b.txt").write_text("three\nfour\n")
    (inputs / "c.txt").write_text("five\n")
    found = status(inputs, out)
    assert found["count"].state == "stale"
    assert found["count"].reasons == [f"input {inputs / 'b.txt'} changed: 6 -> 11 bytes", f"input {inputs / 'c.txt'} is new"]


def test_after_a_failed_task_the_stage_is_partial_with_the_error(tmp_path, inputs):
    out = str(tmp_path / "out")
    with pytest.raises(StageError, match="b.txt: refused"):
        run_stage(CountLinesFailingOn(CountConfig(tag="b.txt")), expand_inputs([str(inputs)]), out, LOCAL)
    found = status(inputs, out, tag="b.txt")["count"]
    assert (found.state, found.tasks_done, found.tasks_total) == ("partial", 1, 2)
    assert found.last_error["task"] == "parts-00001"
    assert found.last_error["error"] == f"{inputs / 'b.txt'}: refused"
    assert found.parts == 1 and found.funnel is None
    # The rerun clears the error with the rest of what the failed run left, and finishes the stage.
    run_stage(CountLines(CountConfig(tag="b.txt")), expand_inputs([str(inputs)]), out, LOCAL)
    found = status(inputs, out, tag="b.txt")["count"]
    assert (found.state, found.last_error) == ("current", None)
    assert not list((tmp_path / "out" / "count").glob("_errors/*"))


KILLED = """
import sys
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs
from tests.helpers import CountConfig, CountLinesFailingOn
run_stage(CountLinesFailingOn(CountConfig(tag="kill-b.txt")), expand_inputs([sys.argv[1]]), sys.argv[2],
          RunOptions(executor="local", quiet=True))
"""


def test_after_a_kill_the_stage_is_partial_and_says_under_which_config_its_tasks_count(tmp_path, inputs, capsys):
    out = str(tmp_path / "out")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(inputs), out], cwd=REPO, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    found = status(inputs, out, tag="kill-b.txt")["count"]
    assert (found.state, found.tasks_done, found.tasks_total, found.last_error) == ("partial", 1, 2, None)
    assert found.reasons == []
    other = status(inputs, out, tag="another")["count"]  # the config changed since: nothing of it is done
    assert (other.state, other.tasks_done, other.tasks_total) == ("partial", 0, 2)
    assert other.reasons == ["1 task(s) done under another plan (config or inputs changed since): rerun"]


def small_dump(tmp_path: Path) -> Path:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write_dump(dumps / "RS_test.zst", synthetic_records(200, seed=1), "zst")
    return dumps


def test_cli_json_schema_and_stale_by_a_build_corpus_key(tmp_path, capsys):
    dumps, out = small_dump(tmp_path), str(tmp_path / "out")
    assert main(["urls", "--dumps", str(dumps), "--out", out, "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["status", out, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"schema", "out", "stages", "runs"} and report["schema"] == 1
    assert report["runs"] == [] and [s["name"] for s in report["stages"]] == ["urls"]
    urls = report["stages"][0]
    assert set(urls) == STAGE_KEYS
    assert (urls["state"], urls["reasons"], urls["last_error"]) == ("current", [], None)
    assert urls["funnel"]["in"] == 200 and urls["bytes"] > 0 and urls["parts"] >= 1
    assert main(["status", out, "--set", "urls.min_karma=5"]) == 0
    text = capsys.readouterr().out
    assert "urls      stale" in text and "config urls.min_karma: 3 -> 5" in text
    (dumps / "RS_test.zst").unlink()
    assert main(["status", out, "--json"]) == 0
    urls = json.loads(capsys.readouterr().out)["stages"][0]
    assert (urls["state"], urls["reasons"]) == ("stale", [f"input {dumps / 'RS_test.zst'} is gone"])


def test_cli_on_s3(tmp_path, s3, capsys):
    dumps, out = small_dump(tmp_path), s3("bucket/corpus")
    assert main(["urls", "--dumps", str(dumps), "--out", out, "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["status", out, "--json"]) == 0
    urls = json.loads(capsys.readouterr().out)["stages"][0]
    assert (urls["name"], urls["state"], urls["reasons"]) == ("urls", "current", [])
    assert urls["bytes"] > 0
    assert main(["status", out, "--set", "urls.karma_rule=sum"]) == 0
    assert "config urls.karma_rule: \"max\" -> \"sum\"" in capsys.readouterr().out


def test_an_output_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such output" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_run_shows_its_checkpoint_step_tokens_and_val_loss(tmp_path, s3, capsys):
    from pipeline.storage import Dir
    from tests.helpers import run_tiny, write_token_dataset
    from training.metrics import read_metrics
    from training.storage import upload

    run = tmp_path / "run"
    run_tiny(write_token_dataset(tmp_path / "tokens"), run, max_steps=6, **{"checkpoint.every": 4})
    capsys.readouterr()
    records = read_metrics(run / "metrics.jsonl")
    val = [r for r in records if "val_loss" in r]
    for location in (str(run), s3("bucket/runs")):
        if location.startswith("s3://"):
            upload(run, Dir(location), "run")
        assert main(["status", location, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["stages"] == [] and len(report["runs"]) == 1
        found = report["runs"][0]
        assert set(found) == RUN_KEYS
        assert found["state"] == "finished" and found["max_steps"] == 6
        assert (found["last_checkpoint"], found["step"]) == ("step_00000006", 6)
        assert found["tokens_seen"] == 6 * 4 * 32  # steps x micro batch x sequence length, one worker
        assert (found["val_loss"], found["val_loss_step"]) == (val[-1]["val_loss"], val[-1]["step"])
        assert found["last_logged_step"] == 6
    (run / "summary.json").unlink()
    (run / "checkpoints" / "step_00000006" / "COMPLETE").unlink()  # as a run killed while saving its last checkpoint
    assert main(["status", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"run {run}: stopped, checkpoint step_00000004 (step 4 of 6, 512 tokens seen), val loss" in text


def test_a_stage_run_on_inputs_of_its_own_is_compared_with_those(tmp_path, capsys):
    from jobs.fixtures.dupgen import planted_corpus, write_parts

    write_parts(planted_corpus(2, 4, seed=5), tmp_path / "docs", 2)
    out = str(tmp_path / "out")
    assert main(["dedup", "--docs", str(tmp_path / "docs"), "--out", out, "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["status", out]) == 0
    assert "  dedup     current  2 parts" in capsys.readouterr().out  # no filter/ upstream of it here
    (tmp_path / "docs" / "part-00001.parquet").unlink()
    assert main(["status", out, "--json"]) == 0
    dedup = json.loads(capsys.readouterr().out)["stages"][0]
    assert dedup["reasons"] == [f"input {tmp_path / 'docs' / 'part-00001.parquet'} is gone"]
