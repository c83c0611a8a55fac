"""The stage runner: atomic writes, funnel checks, pruning, errors through Ray, and s3:// URIs like paths."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.fixtures.dumpgen import encode, synthetic_records
from pipeline.runner import Phase, RunOptions, StageError, run_stage
from pipeline.storage import Dir, expand_inputs, join
from pipeline.urls import UrlsConfig, UrlsStage
from tests.helpers import (REPO, CountConfig, CountLines, CountLinesFailingOn, CountLinesFailingOnB,
                           count_inputs)

LOCAL = RunOptions(executor="local", quiet=True)


@pytest.fixture
def inputs(tmp_path):
    return count_inputs(tmp_path)


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
    """Planning fails in the check of its inputs, or once its first phase is planned, when told to."""

    def __init__(self, config, fail_in: str = ""):
        super().__init__(config)
        self.fail_in = fail_in

    def plan(self, inputs):
        if self.fail_in == "check":
            raise StageError("refused by the check of the inputs")
        first = Phase("first", self.run_task, [])
        if self.fail_in == "parts":
            raise StageError("refused while planning parts")
        return [first, Phase("parts", self.run_task, list(inputs))]


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

    def run_task(self, file, ctx):
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
from tests.helpers import CountConfig, CountLinesFailingOn
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


# --- phases, the work area, progress -----------------------------------------------------------------------------

class LinesThenParts(CountLines):
    """Two phases through the work area: `lines` writes each file's lines, `parts` gathers them into one part each."""

    def plan(self, inputs):
        return [Phase("lines", self.split_lines, list(inputs)),
                Phase("parts", self.gather, [len(inputs)] * 2)]

    def split_lines(self, file, ctx):
        with file.open() as f:
            lines = f.read().decode().splitlines()
        ctx.count("in", len(lines))
        ctx.write_table(ctx.work_name("lines.parquet"), pa.table({"line": pa.array(lines, pa.string())}))

    def gather(self, n_files, ctx):
        tables = [ctx.read_work("lines", i, "lines.parquet") for i in range(n_files)]
        assert ctx.has_work("lines", 0, "lines.parquet") and not ctx.has_work("lines", n_files, "lines.parquet")
        lines = pa.concat_tables(tables)["line"].to_pylist()[ctx.index::2]
        ctx.write_part(pa.table({"line": pa.array([line for line in lines if line.strip()], pa.string())}))
        ctx.reject(pa.table({"reason": ["blank"] * sum(1 for line in lines if not line.strip())}))


def progress_of(events):
    """The events without their times, which depend on the machine."""
    return [(e.stage, e.phase, e.phase_index, e.phases, e.tasks_done, e.tasks_total, e.records, e.finished)
            for e in events]


def test_phases_hand_files_on_through_the_work_area_and_report_progress_in_order(tmp_path, inputs):
    events = []
    result = run_stage(LinesThenParts(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"),
                       RunOptions(executor="local", quiet=True, progress=events.append))
    assert result.funnel == {"in": 4, "out": 3, "rejected:blank": 1}
    assert progress_of(events) == [
        ("count", "lines", 0, 2, 0, 2, 0, False), ("count", "lines", 0, 2, 1, 2, 3, False),
        ("count", "lines", 0, 2, 2, 2, 4, False),
        ("count", "parts", 1, 2, 0, 2, 0, False), ("count", "parts", 1, 2, 1, 2, 0, False),
        ("count", "parts", 1, 2, 2, 2, 0, False), ("count", "parts", 1, 2, 2, 2, 0, True)]
    assert all(e.elapsed_s >= 0 for e in events)
    assert not (tmp_path / "out" / "count" / "_work").exists()  # the work area goes when the stage ends
    assert [e.finished for e in events].count(True) == 1 and events[-1].finished


def test_progress_counts_resumed_tasks_and_a_skipped_stage_sends_one_finished_event(tmp_path, inputs):
    files, out = expand_inputs([str(inputs)]), str(tmp_path / "out")
    with pytest.raises(StageError, match="b.txt: refused"):
        run_stage(CountLinesFailingOnB(CountConfig()), files, out, LOCAL)
    events = []
    run_stage(CountLines(CountConfig()), files, out, RunOptions(executor="local", quiet=True, progress=events.append))
    assert progress_of(events) == [("count", "parts", 0, 1, 1, 2, 3, False), ("count", "parts", 0, 1, 2, 2, 4, False),
                                   ("count", "parts", 0, 1, 2, 2, 4, True)]
    events.clear()
    assert run_stage(CountLines(CountConfig()), files, out, RunOptions(executor="local", quiet=True,
                                                                         progress=events.append)).skipped
    assert progress_of(events) == [("count", "", 0, 0, 0, 0, 4, True)]


def test_an_error_in_the_progress_callback_stops_the_stage(tmp_path, inputs):
    def broken(event):
        raise ZeroDivisionError("a bug in the display")

    with pytest.raises(ZeroDivisionError):
        run_stage(CountLines(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"),
                  RunOptions(executor="local", quiet=True, progress=broken))


def test_progress_on_ray_equals_progress_here(tmp_path, inputs, ray_session):
    runs = {}
    for executor in ("local", "ray"):
        events = []
        run_stage(LinesThenParts(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / executor),
                  RunOptions(executor=executor, quiet=True, progress=events.append))
        # Ray finishes tasks in any order: the records counted after each task may come in another order
        runs[executor] = [(s, p, i, n, done, total, finished) for s, p, i, n, done, total, _, finished
                          in progress_of(events)], [e.records for e in events if e.tasks_done == e.tasks_total]
    assert runs["ray"] == runs["local"]


def test_a_plan_whose_phases_share_a_name_is_refused_before_the_output_is_touched(tmp_path, inputs):
    class Twice(CountLines):
        def plan(self, inputs):
            return [Phase("parts", self.run_task, []), Phase("parts", self.run_task, list(inputs))]

    with pytest.raises(ValueError, match="distinct names"):
        run_stage(Twice(CountConfig()), expand_inputs([str(inputs)]), str(tmp_path / "out"), LOCAL)
    assert not (tmp_path / "out").exists()


def test_the_work_area_is_named_only_by_the_runner():
    """The layout of a stage's output is written down once: no other module spells the work area's name."""
    import re

    spelled = re.compile(r"(?<![A-Za-z])_work\b")
    found = [f"{path.relative_to(REPO)}:{n}" for top in ("pipeline", "training", "jobs", "bench")
             for path in sorted((REPO / top).rglob("*.py")) if path.name != "runner.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if spelled.search(line)]
    assert found == []
