"""The stage runner: atomic writes, funnel checks, pruning, errors through Ray, and s3:// URIs like paths."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.runner import RunOptions, Stage, StageError, run_stage
from pipeline.storage import Dir, expand_inputs, join
from pipeline.urls import UrlsConfig, UrlsStage
from jobs.dumpgen import encode, synthetic_records
from tests.helpers import REPO

LOCAL = RunOptions(executor="local", quiet=True)


class CountConfig(Config):
    lose_one: bool = False
    tag: str = ""  # changes the plan, nothing else
    delay: float = 0  # seconds each task that does not fail waits before it writes


class CountLines(Stage):
    """Keeps lines with text, rejects blank ones; miscounts when told to."""

    name = "count"

    def tasks(self, phase, inputs):
        return list(inputs)

    def run_task(self, phase, index, file, ctx):
        with file.open() as f:
            lines = f.read().decode().splitlines()
        ctx.count("in", len(lines) + (1 if self.config.lose_one else 0))
        kept = [line for line in lines if line.strip()]
        ctx.write_part(pa.table({"line": pa.array(kept, pa.string())}))
        ctx.reject(pa.table({"reason": ["blank"] * (len(lines) - len(kept))}))


class CountLinesFailingOnB(CountLines):
    """The same stage (same name, config and so plan) but a task that fails on b.txt, like a crash would."""

    def run_task(self, phase, index, file, ctx):
        if file.uri.endswith("b.txt"):
            raise StageError(f"{file.uri}: refused")
        super().run_task(phase, index, file, ctx)


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.txt").write_text("one\n\ntwo\n")
    (root / "b.txt").write_text("three\n")
    (root / "_ignored.txt").write_text("not an input\n")
    return root


def test_funnel_and_manifest(tmp_path, inputs):
    result = run_stage(CountLines(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"), LOCAL)
    assert result.funnel == {"in": 4, "out": 3, "rejected:blank": 1}
    assert [p["name"] for p in result.manifest["parts"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert [Path(i["uri"]).name for i in result.manifest["inputs"]] == ["a.txt", "b.txt"]


def test_funnel_that_does_not_add_up_is_an_error(tmp_path, inputs):
    with pytest.raises(StageError, match="funnel does not add up"):
        run_stage(CountLines(CountConfig(lose_one=True)), expand_inputs([str(inputs)]), str(tmp_path / "o"), LOCAL)


def test_failed_task_leaves_finished_tasks_and_reruns_only_itself(tmp_path, inputs):
    files = expand_inputs([str(inputs)])
    with pytest.raises(StageError, match="b.txt: refused"):
        run_stage(CountLinesFailingOnB(CountConfig()), files, str(tmp_path / "out"), LOCAL)
    stage_dir = tmp_path / "out" / "count"
    done = stage_dir / "_tasks" / "parts-00000.json"
    first_write = done.stat().st_mtime_ns
    assert not (stage_dir / "_manifest.json").exists()
    result = run_stage(CountLines(CountConfig()), files, str(tmp_path / "out"), LOCAL)
    assert result.funnel["out"] == 3
    assert done.stat().st_mtime_ns == first_write  # the finished task was not run again


def test_error_inside_a_ray_task_keeps_its_type_and_message(tmp_path, inputs, ray_session):
    with pytest.raises(StageError, match="b.txt: refused"):
        run_stage(CountLinesFailingOnB(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"),
                  RunOptions(executor="ray", quiet=True))


def test_prune_removes_files_no_marker_owns(tmp_path, inputs):
    files = expand_inputs([str(inputs)])
    run_stage(CountLines(CountConfig()), files, str(tmp_path / "out"), LOCAL)
    stage_dir = tmp_path / "out" / "count"
    (stage_dir / "part-00009.parquet").write_bytes(b"left by an older plan")
    (stage_dir / ".tmp-1234-part-00000.parquet").write_bytes(b"a killed write")
    run_stage(CountLines(CountConfig()), files, str(tmp_path / "out"), RunOptions(executor="local", quiet=True,
                                                                                  force=True))
    assert sorted(p.name for p in stage_dir.iterdir() if p.is_file()) == [
        "_manifest.json", "part-00000.parquet", "part-00001.parquet"]


def test_open_output_is_all_or_nothing(tmp_path):
    from pipeline.runner import TaskContext

    ctx = TaskContext(out=Dir(str(tmp_path)), phase="parts", index=0, is_final_phase=True)
    with pytest.raises(RuntimeError):
        with ctx.open_output("part-00000.bin") as stream:
            stream.write(b"half")
            raise RuntimeError("killed mid-write")
    assert not (tmp_path / "part-00000.bin").exists()
    with ctx.open_output("part-00000.bin") as stream:
        stream.write(b"whole")
    assert (tmp_path / "part-00000.bin").read_bytes() == b"whole"
    assert ctx.files["part-00000.bin"] == {"bytes": 5, "sha256": hashlib.sha256(b"whole").hexdigest()}


def test_join_keeps_uri_query():
    assert join("s3://b/x?endpoint_override=h:1", "urls", "part-0.parquet") == \
        "s3://b/x/urls/part-0.parquet?endpoint_override=h:1"
    assert join("/data/out/", "urls") == "/data/out/urls"


def test_urls_stage_on_s3_equals_local(tmp_path, s3):
    records = synthetic_records(3000, seed=5)
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "RS_a.ndjson").write_bytes(encode(records[:1500]))
    (tmp_path / "dumps" / "RS_b.ndjson").write_bytes(encode(records[1500:]))
    dumps = Dir(s3("webtext-test/dumps"))
    dumps.fs.create_dir("webtext-test")
    for name in ("RS_a.ndjson", "RS_b.ndjson"):
        dumps.write_bytes(name, (tmp_path / "dumps" / name).read_bytes())

    local = run_stage(UrlsStage(UrlsConfig()), expand_inputs([str(tmp_path / "dumps")]), str(tmp_path / "out"), LOCAL)
    remote_inputs = expand_inputs([s3("webtext-test/dumps")])
    assert [f.name for f in remote_inputs] == ["RS_a.ndjson", "RS_b.ndjson"]
    remote = run_stage(UrlsStage(UrlsConfig()), remote_inputs, s3("webtext-test/out"), LOCAL)
    assert remote.funnel == local.funnel
    out = Dir(s3("webtext-test/out")).sub("urls")
    for part in local.manifest["parts"]:
        remote_table = pq.read_table(io.BytesIO(out.read_bytes(part["name"])))
        assert remote_table.equals(pq.read_table(tmp_path / "out" / "urls" / part["name"]))
    assert run_stage(UrlsStage(UrlsConfig()), remote_inputs, s3("webtext-test/out"), LOCAL).skipped


class TwoPhases(CountLines):
    """Planning fails in the check of its inputs, or in its last phase's tasks(), when told to."""

    phases = ("first", "parts")

    def __init__(self, config, fail_in: str = ""):
        super().__init__(config)
        self.fail_in = fail_in

    def check_inputs(self, inputs):
        if self.fail_in == "check":
            raise StageError("refused by check_inputs")

    def tasks(self, phase, inputs):
        if self.fail_in == phase:
            raise StageError(f"refused while planning {phase}")
        return list(inputs) if phase == "parts" else []


@pytest.mark.parametrize("fail_in", ["check", "parts"])
def test_a_plan_that_fails_leaves_the_output_byte_identical(tmp_path, inputs, fail_in):
    run_stage(TwoPhases(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"), LOCAL)
    stage_dir = tmp_path / "out" / "count"
    before = {p: p.read_bytes() if p.is_file() else None for p in stage_dir.rglob("*")}
    (inputs / "c.txt").write_text("a new input: a new plan\n")
    with pytest.raises(StageError, match="refused"):
        run_stage(TwoPhases(CountConfig(), fail_in), expand_inputs([str(inputs)]), str(tmp_path / "out"), LOCAL)
    assert {p: p.read_bytes() if p.is_file() else None for p in stage_dir.rglob("*")} == before
    with pytest.raises(StageError):  # nothing is created for an output that did not exist either
        run_stage(TwoPhases(CountConfig(), fail_in), expand_inputs([str(inputs)]), str(tmp_path / "new"), LOCAL)
    assert not (tmp_path / "new").exists()


class CountLinesFailingOn(CountLines):
    """Fails on the input named by its tag (like a crash would); with `kill-` before the name, its process dies."""

    def run_task(self, phase, index, file, ctx):
        if file.uri.endswith(self.config.tag.removeprefix("kill-")):
            if self.config.tag.startswith("kill-"):
                os.kill(os.getpid(), signal.SIGKILL)
            raise StageError(f"{file.uri}: refused")
        time.sleep(self.config.delay)
        super().run_task(phase, index, file, ctx)


def files_of(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_new_plan_whose_first_task_fails_puts_the_previous_output_back(tmp_path, inputs):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL)
    before = files_of(tmp_path / "out" / "count")
    with pytest.raises(StageError, match="a.txt: refused"):  # the first task (a.txt) of a new plan fails
        run_stage(CountLinesFailingOn(CountConfig(tag="a.txt")), files, out, LOCAL)
    assert files_of(tmp_path / "out" / "count") == before
    assert run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL).skipped


class CountLinesFailing(CountLines):
    """The plan of CountLines, but every task fails."""

    def run_task(self, phase, index, file, ctx):
        raise StageError(f"{file.uri}: refused")


@pytest.mark.parametrize("tag", ["", "another plan"])
def test_a_forced_rebuild_whose_first_task_fails_puts_the_previous_output_back(tag, tmp_path, inputs):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    run_stage(CountLines(CountConfig()), files, out, LOCAL)
    before = files_of(tmp_path / "out" / "count")
    with pytest.raises(StageError, match="a.txt: refused"):
        run_stage(CountLinesFailing(CountConfig(tag=tag)), files, out, RunOptions(executor="local", quiet=True,
                                                                                   force=True))
    assert files_of(tmp_path / "out" / "count") == before


def test_once_a_task_of_the_new_plan_succeeded_the_previous_output_is_gone(tmp_path, inputs):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL)
    with pytest.raises(StageError, match="b.txt: refused"):  # a.txt succeeded first
        run_stage(CountLinesFailingOn(CountConfig(tag="b.txt")), files, out, LOCAL)
    stage_dir = tmp_path / "out" / "count"
    assert not (stage_dir / "_manifest.json").exists() and not (stage_dir / "_previous").exists()
    assert sorted(p.name for p in (stage_dir / "_tasks").iterdir()) == ["parts-00000.json"]


KILLED_DRIVER = """
import sys
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs
from tests.pipeline.test_runner import CountConfig, CountLinesFailingOn
run_stage(CountLinesFailingOn(CountConfig(tag="kill-a.txt")), expand_inputs([sys.argv[1]]), sys.argv[2],
          RunOptions(executor="local", quiet=True))
"""


def test_a_command_killed_before_its_first_task_succeeded_leaves_the_previous_output_to_the_next(tmp_path, inputs,
                                                                                                 capsys):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL)
    before = files_of(tmp_path / "out" / "count")
    killed = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(inputs), out], cwd=REPO, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    stage_dir = tmp_path / "out" / "count"
    assert (stage_dir / "_previous" / "_manifest.json").exists() and not (stage_dir / "_manifest.json").exists()
    assert run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL).skipped  # put back, and current
    assert "taking over the stale lock" in capsys.readouterr().err
    assert files_of(stage_dir) == before
    subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(inputs), out], cwd=REPO, capture_output=True)
    result = run_stage(CountLines(CountConfig(tag="b")), files, out, LOCAL)  # a new plan after the kill: runs
    assert result.funnel["out"] == 3 and not (stage_dir / "_previous").exists()


def test_on_ray_tasks_still_running_when_the_first_fails_do_not_write_over_the_previous_output(tmp_path, inputs,
                                                                                               ray_session):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    run_stage(CountLines(CountConfig(tag="a")), files, out, LOCAL)
    before = files_of(tmp_path / "out" / "count")
    with pytest.raises(StageError, match="a.txt: refused"):  # b.txt's task is still running when a.txt's fails
        run_stage(CountLinesFailingOn(CountConfig(tag="a.txt", delay=2)), files, out,
                  RunOptions(executor="ray", quiet=True))
    time.sleep(3)  # past b.txt's delay: a task left running would have written by now
    assert files_of(tmp_path / "out" / "count") == before
