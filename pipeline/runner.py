"""The stage runner: runs a stage's tasks (here or on Ray), writes atomically, resumes, skips, keeps the funnel.

A stage is a `Stage` subclass: one or more phases, each a list of independent tasks, and `run_task`, plain Python
that reads its inputs and writes through a `TaskContext`. The runner owns everything else, once for all stages:

    <out>/<stage>/part-XXXXX.<ext>        the stage's output (written by the last phase)
    <out>/<stage>/_rejected/*.parquet      every dropped record with a `reason` column
    <out>/<stage>/_work/                   intermediate files of earlier phases (e.g. a shuffle), deleted at the end
    <out>/<stage>/_tasks/<phase>-XXXXX.json a task's done marker: its plan hash, counters and files, written last
    <out>/<stage>/_resume/<plan>/<task>/    checkpoints of a task not yet done (kept across a kill while the
                                           plan holds, so a long task can continue; removed when the stage ends)
    <out>/<stage>/_manifest.json            inputs, config, code version, parts with checksums, funnel; written last
    <out>/<stage>/_lock                     the run that writes the output now (pipeline/lock.py); never output
    <out>/<stage>/_previous/                a finished output of another plan, until the new plan's first task
                                           has succeeded (pipeline/previous.py)

A stage whose manifest carries the current plan hash (stage, version, config, inputs) is skipped. Otherwise the
stage is planned first: `check_inputs()` opens and checks the inputs and every phase's `tasks()` builds its tasks,
and only when that has succeeded is the output touched, so a command refused for its inputs leaves the previous output
byte-identical. Then the runner takes the output's lock (a second command on it is refused), keeps the tasks whose
marker carries the current plan hash and reruns the others, after every file that no current marker lists has been
deleted (a finished output of another plan, or of this one rebuilt with `force`, is set aside, and put back if no task
of the new plan succeeds): a run killed at any point and rerun gives exactly the output of an uninterrupted run.
Every file a task commits is fenced: it is renamed into place only while the lock still names the task's run and
its driver lives.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.executor import connect_ray, run_tasks
from pipeline.layout import MANIFEST
from pipeline import previous
from pipeline.lock import Fence, OutputLock, is_lock_file
from pipeline.storage import TMP_PREFIX, Dir, InputFile, is_within, naming, sha256_file

__all__ = ["Stage", "StageError", "StageResult", "RunOptions", "TaskContext", "run_stage", "format_funnel"]

TASKS_DIR = "_tasks"
REJECTED_DIR = "_rejected"
WORK_DIR = "_work"
RESUME_DIR = "_resume"


def code_version() -> str:
    try:
        return importlib.metadata.version("webtext")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Stage(ABC):
    """One stage of the corpus pipeline. Subclasses set `name` and implement `tasks` and `run_task`."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the output's meaning changes, so old outputs are rebuilt
    phases: ClassVar[tuple[str, ...]] = ("parts",)
    # Counters for records that leave the funnel without being rejects (e.g. submissions merged into one URL row).
    folded: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config):
        self.config = config

    def check_inputs(self, inputs: list[InputFile]) -> None:
        """Raise `StageError` for inputs or a config that cannot work (wrong kind of file, unreadable, missing
        columns, a missing tokenizer file), cheaply (headers, footers, sizes). Called once, before `tasks` and
        before the output is touched, so that such a command leaves the previous output as it was."""

    @abstractmethod
    def tasks(self, phase: str, inputs: list[InputFile]) -> list[Any]:
        """The payloads of `phase`'s tasks, one per task, in a deterministic order (the task index).

        Called for every phase before any task runs and before the output is touched, from the inputs and the
        config alone (not from what an earlier phase writes); a `StageError` raised here leaves the output as
        it was, like one from `check_inputs`."""

    @abstractmethod
    def run_task(self, phase: str, index: int, payload: Any, ctx: TaskContext) -> None:
        """Do one task: read `payload`, write through `ctx`, count `in` records with `ctx.count`."""


@dataclass
class TaskContext:
    """What a task writes through. Every file is written atomically and listed in the task's done marker."""

    out: Dir
    phase: str
    index: int
    is_final_phase: bool
    plan: str = ""
    fence: Fence | None = None  # checked before every commit: the run still holds the output
    files: dict[str, dict] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)
    _rejected_writer: Any = None
    _rejected_stream: Any = None
    _rejected_tmp: str = ""

    @property
    def task_id(self) -> str:
        return f"{self.phase}-{self.index:05d}"

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def part_name(self, ext: str = ".parquet") -> str:
        if not self.is_final_phase:
            raise RuntimeError(f"phase {self.phase!r} is not the final phase and writes no parts")
        return f"part-{self.index:05d}{ext}"

    def work_name(self, name: str) -> str:
        """A path for an intermediate file of this task under `_work/`."""
        return f"{WORK_DIR}/{self.task_id}/{name}"

    def resume_name(self, name: str) -> str:
        """A path for this task's own checkpoint files: kept if the task is killed, for its rerun under the same
        plan, and never listed in the done marker (the stage's final output must not depend on them)."""
        return f"{RESUME_DIR}/{self.plan}/{self.task_id}/{name}"

    def write_part(self, table: pa.Table) -> None:
        """Write this task's output part as Parquet; its rows count as the stage's `out`."""
        self.write_table(self.part_name(), table)
        self.count("out", table.num_rows)

    def write_table(self, name: str, table: pa.Table) -> None:
        self.out.write_parquet(name, table, before_commit=self.check_fence)
        self._record(name, rows=table.num_rows)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.out.write_bytes(name, data, before_commit=self.check_fence)
        self._record(name, sha256=hashlib.sha256(data).hexdigest())

    def check_fence(self) -> None:
        """Raise FencedError if this task's run no longer holds the output (its driver died, or it was taken over)."""
        if self.fence is not None:
            self.fence.check()

    @contextmanager
    def open_output(self, name: str) -> Iterator[Any]:
        """A writable binary stream; the file appears under `name` only if the block ends without an error."""
        fs, final = self.out.fs, self.out.path(name)
        parent, _, base = final.rpartition("/")
        fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/{TMP_PREFIX}{base}"
        with self.out.removed_on_error(tmp, final):
            with fs.open_output_stream(tmp, compression=None) as stream:
                yield stream
            self.check_fence()
            fs.move(tmp, final)
        self._record(name)

    def reject(self, table: pa.Table) -> None:
        """Keep dropped records: `table` must have a string `reason` column; batches stream to one Parquet file."""
        if table.num_rows == 0:
            return
        if "reason" not in table.column_names:
            raise ValueError("rejected records need a 'reason' column")
        if self._rejected_writer is None:
            name = self._rejected_name
            parent, _, base = self.out.path(name).rpartition("/")
            self.out.fs.create_dir(parent, recursive=True)
            self._rejected_tmp = f"{parent}/{TMP_PREFIX}{base}"
            self._rejected_stream = self.out.fs.open_output_stream(self._rejected_tmp, compression=None)
            self._rejected_writer = pq.ParquetWriter(self._rejected_stream, table.schema, compression="zstd")
        try:
            self._rejected_writer.write_table(table.cast(self._rejected_writer.schema))
        except OSError as err:
            raise naming(err, self.out.path(self._rejected_name)) from None
        for reason, n in Counter(table.column("reason").to_pylist()).items():
            self.counters[f"rejected:{reason}"] += n

    @property
    def _rejected_name(self) -> str:
        return f"{REJECTED_DIR}/{self.task_id}.parquet"

    def finish(self) -> None:
        if self._rejected_writer is not None:
            with self.out.removed_on_error(self._rejected_tmp, self.out.path(self._rejected_name)):
                self._rejected_writer.close()
                self._rejected_stream.close()
                self.check_fence()
                self.out.fs.move(self._rejected_tmp, self.out.path(self._rejected_name))
            self._record(self._rejected_name)

    def abort(self) -> None:
        """After a failed task: close and delete the rejected records' temporary (nothing half-written stays)."""
        if self._rejected_writer is not None:
            for closing in (self._rejected_writer.close, self._rejected_stream.close):
                try:
                    closing()
                except Exception:  # the error that failed the task (e.g. a full disk) may fail these too
                    pass
            try:
                self.out.fs.delete_file(self._rejected_tmp)
            except OSError:
                pass

    def _record(self, name: str, rows: int | None = None, sha256: str | None = None) -> None:
        """List a written file in the task's marker; output parts get their checksum here, on the worker."""
        entry: dict[str, Any] = {"bytes": self.out.fs.get_file_info(self.out.path(name)).size}
        if rows is not None:
            entry["rows"] = rows
        if name.startswith("part-"):
            entry["sha256"] = sha256 or sha256_file(self.out.path(name), self.out.fs)
        self.files[name] = entry


@dataclass
class RunOptions:
    """How to run, as opposed to what to compute: none of this enters the plan hash."""

    executor: str = "ray"  # "ray" or "local"
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS or an embedded loopback-only Ray
    num_cpus: int | None = None  # for an embedded Ray
    task_cpus: float = 1.0
    force: bool = False  # rebuild even if the manifest is current
    quiet: bool = False
    keep_work: bool = False  # keep `_work/` (a shuffle's intermediate files) after the stage has finished


@dataclass
class StageResult:
    name: str
    skipped: bool
    manifest: dict

    @property
    def funnel(self) -> dict[str, int]:
        return self.manifest["funnel"]


def plan_hash(stage: Stage, inputs: list[InputFile]) -> str:
    spec = {
        "stage": stage.name,
        "version": stage.version,
        "config": stage.config.model_dump(mode="json"),
        "inputs": [[f.uri, f.size, f.mtime_ns] for f in inputs],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _execute(stage: Stage, out: Dir, phase: str, is_final: bool, plan: str, fence: Fence | None, index: int,
             payload: Any) -> dict:
    """One task, wherever it runs: run it, then write its done marker last (fenced, like every file it commits)."""
    ctx = TaskContext(out=out, phase=phase, index=index, is_final_phase=is_final, plan=plan, fence=fence)
    try:
        stage.run_task(phase, index, payload, ctx)
        ctx.finish()
    except BaseException:
        ctx.abort()
        raise
    marker = {"plan": plan, "counters": dict(ctx.counters), "files": ctx.files}
    out.write_json(f"{TASKS_DIR}/{ctx.task_id}.json", marker, before_commit=ctx.check_fence)
    return marker


class _TaskCall:
    """A picklable callable for the executor: (index, payload) -> marker."""

    def __init__(self, stage: Stage, out: Dir, phase: str, is_final: bool, plan: str, fence: Fence | None):
        self.args = (stage, out, phase, is_final, plan, fence)

    def __call__(self, item: tuple[int, Any]) -> dict:
        return _execute(*self.args, *item)


def _valid_markers(out: Dir, plan: str) -> dict[str, dict]:
    markers = {}
    for name in out.list(TASKS_DIR, "*.json"):
        try:
            marker = out.read_json(name)
        except (OSError, ValueError):
            continue
        if marker.get("plan") == plan:
            markers[name.rsplit("/", 1)[-1][: -len(".json")]] = marker
    return markers


def _prune(out: Dir, markers: dict[str, dict], plan: str, set_aside: bool) -> None:
    """Remove every file that no current marker lists: stale plans, killed tasks, temporaries, the manifest.

    Checkpoints of this plan's unfinished tasks (`_resume/<plan>/<task>/`) are kept for the tasks to continue.
    With `set_aside` the files (a finished output of another plan) are moved under `_previous/`, not deleted.
    """
    resumable = f"{RESUME_DIR}/{plan}/"
    keep = {f"{TASKS_DIR}/{task_id}.json" for task_id in markers}
    for marker in markers.values():
        keep.update(marker["files"])
    stale = []
    for rel in previous.files_under(out):
        temporary = rel.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
        if is_lock_file(rel) or rel in keep:
            continue
        if rel.startswith(resumable) and rel[len(resumable):].split("/", 1)[0] not in markers and not temporary:
            continue
        if temporary or not set_aside:
            out.fs.delete_file(out.path(rel))
        else:
            stale.append(rel)
    if set_aside:
        previous.set_aside(out, stale, plan, first=MANIFEST)


def funnel_of(stage: Stage, markers: list[dict]) -> dict[str, int]:
    """Sum the task counters; check that records in = out + rejected + folded."""
    total: Counter = Counter()
    for marker in markers:
        total.update(marker["counters"])
    funnel = {"in": total.get("in", 0), "out": total.get("out", 0)}
    funnel.update(sorted((k, v) for k, v in total.items() if k not in ("in", "out")))
    accounted = funnel["out"] + sum(v for k, v in total.items() if k.startswith("rejected:") or k in stage.folded)
    if accounted != funnel["in"]:
        raise StageError(f"{stage.name}: funnel does not add up: in={funnel['in']} but out+rejected+folded={accounted}")
    return funnel


def run_stage(stage: Stage, inputs: list[InputFile], out_root: str, options: RunOptions = RunOptions()) -> StageResult:
    """Run `stage` over `inputs` into `<out_root>/<stage.name>/`, skipping or resuming as the markers allow.

    Nothing under the output changes until every phase is planned (inputs opened and checked, tasks built), the
    executor is reachable and this command holds the output's lock."""
    out = Dir(out_root).sub(stage.name)
    if inside := next((f.uri for f in inputs if is_within(f.uri, out.location)), None):
        raise StageError(f"{inside}: an input inside this stage's own output ({out.location}), which the stage "
                         "rewrites: give another --out")
    plan = plan_hash(stage, inputs)
    if (current := _current(stage, out, plan, options)) is not None:
        return current
    stage.check_inputs(inputs)
    planned = [(phase, stage.tasks(phase, inputs)) for phase in stage.phases]
    if options.executor == "ray":
        connect_ray(options.address, options.num_cpus)
    lock = OutputLock(out)
    with lock as fence:
        _recover_previous(out)  # of a command killed before its first task succeeded
        if (current := _current(stage, out, plan, options)) is not None:
            return current  # another command finished it while we planned, or its previous output was put back
        started = time.time()
        markers = {} if options.force else _valid_markers(out, plan)
        keeping = out.exists(MANIFEST) and previous.can_set_aside(out)  # a forced rebuild may fail too
        _prune(out, markers, plan, set_aside=keeping)
        try:
            for phase, payloads in planned:
                is_final = phase == stage.phases[-1]
                todo = [(i, p) for i, p in enumerate(payloads) if f"{phase}-{i:05d}" not in markers]
                call = _TaskCall(stage, out, phase, is_final, plan, fence)
                results = run_tasks(call, todo, options.executor, num_cpus=options.task_cpus)
                for _ in _progress(results, len(todo), f"{stage.name}:{phase}", len(payloads) - len(todo), options):
                    if keeping:  # a task of the new plan has succeeded: the previous output is obsolete
                        out.delete(previous.PREVIOUS_DIR)
                        keeping = False
                markers = _valid_markers(out, plan)
        except BaseException:
            if keeping:
                try:
                    lock.revoke_tasks()  # tasks still running commit nothing while the previous output goes back
                    _recover_previous(out)
                except Exception:  # the error that stopped the run is the one to report
                    pass  # and the next command on this output puts the previous output back
            raise
        out.delete(previous.PREVIOUS_DIR)
        out.delete(RESUME_DIR)
        if not options.keep_work:  # every task is done: no later phase reads them again
            out.delete(WORK_DIR)
        task_markers = [m for task_id, m in sorted(markers.items())]
        manifest = _manifest(stage, inputs, plan, task_markers, time.time() - started)
        out.write_json(MANIFEST, manifest, before_commit=fence.check)
    return StageResult(stage.name, False, manifest)


def _recover_previous(out: Dir) -> None:
    previous.recover(out, succeeded=lambda plan: bool(_valid_markers(out, plan)), is_kept=is_lock_file)


def _current(stage: Stage, out: Dir, plan: str, options: RunOptions) -> StageResult | None:
    """The result of a finished run of this very plan, if its manifest is there (and no rebuild is forced)."""
    if options.force or not out.exists(MANIFEST):
        return None
    try:
        manifest = out.read_json(MANIFEST)
    except ValueError:  # a damaged manifest: the output is not known to be current, so the stage runs
        return None
    if manifest.get("plan") != plan:
        return None
    if not options.quiet:
        print(f"{stage.name}: up to date ({out.location}), skipped", file=sys.stderr)
    return StageResult(stage.name, True, manifest)


def _progress(results, total: int, label: str, already: int, options: RunOptions):
    if options.quiet or total == 0:
        yield from results
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="task", file=sys.stderr, postfix={"resumed": already}) as bar:
        for item in results:
            bar.update(1)
            yield item


def _manifest(stage: Stage, inputs: list[InputFile], plan: str, markers: list[dict], elapsed: float) -> dict:
    parts = []
    for marker in markers:
        for name, entry in marker["files"].items():
            if name.startswith("part-"):
                parts.append({"name": name, **entry})
    return {
        "stage": stage.name,
        "version": stage.version,
        "code_version": code_version(),
        "plan": plan,
        "config": stage.config.model_dump(mode="json"),
        "config_hash": stage.config.config_hash(),
        "inputs": [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in inputs],
        "parts": sorted(parts, key=lambda p: p["name"]),
        "rejected": sorted(n for m in markers for n in m["files"] if n.startswith(REJECTED_DIR)),
        "funnel": funnel_of(stage, markers),
        "elapsed_s": round(elapsed, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_funnel(result: StageResult) -> str:
    """The funnel as a table: records in, out, then each reject reason and folded counter."""
    funnel = result.funnel
    n_in = funnel["in"] or 1
    rows = [(k, v) for k, v in funnel.items()]
    width = max(len(k) for k, _ in rows)
    status = "skipped, up to date" if result.skipped else f"{result.manifest['elapsed_s']:.1f}s"
    lines = [f"{result.name} ({status})", f"  {'':<{width}}  {'records':>12}  {'share':>7}"]
    for key, value in rows:
        lines.append(f"  {key:<{width}}  {value:>12,}  {100 * value / n_in:>6.2f}%")
    return "\n".join(lines)
