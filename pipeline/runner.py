"""The stage runner: runs a stage's phases and tasks (here or on Ray), writes atomically, resumes, skips, keeps the
funnel, and reports progress.

A stage is a `Stage` subclass whose `plan(inputs)` returns its phases, once per run: each `Phase` has a name, the
stage's method that runs one task, and its tasks' typed payloads; whatever a later phase must know (a bucket count,
how many tasks the phase before has) is decided in that one planning pass and carried in the payloads. A task is
plain Python that reads its payload and writes through a `TaskContext`. The runner owns everything else, once for
all stages; this is the layout of a stage's output, and the only place it is written down:

    <out>/<stage>/part-XXXXX.<ext>        the stage's output (written by the last phase)
    <out>/<stage>/_rejected/*.parquet      every dropped record with a `reason` column
    <out>/<stage>/_work/<phase>-XXXXX/     the work area: files a task of an earlier phase hands to later phases
                                           (e.g. a shuffle), written with `ctx.work_name`, read with `ctx.read_work`
                                           / `ctx.open_work`; deleted when the stage ends
    <out>/<stage>/_tasks/<phase>-XXXXX.json a task's done marker: its plan hash, counters and files, written last
    <out>/<stage>/_resume/<plan>/<task>/    checkpoints of a task not yet done (kept across a kill while the
                                           plan holds, so a long task can continue; removed when the stage ends)
    <out>/<stage>/_manifest.json            inputs, config, code version, parts with checksums, funnel; written last
    <out>/<stage>/_lock                     the run that writes the output now (pipeline/lock.py); never output
    <out>/<stage>/_previous/                a finished output of another plan, until the new plan's first task
                                           has succeeded (pipeline/previous.py)

A stage whose manifest carries the current plan hash (stage, version, config, inputs) is skipped. Otherwise the
stage is planned first: `plan()` opens and checks the inputs and builds every phase's tasks, and only when that
has succeeded is the output touched, so a command refused for its inputs leaves the previous output byte-identical.
Then the runner takes the output's lock (a second command on it is refused), keeps the tasks whose marker carries
the current plan hash and reruns the others, after every file that no current marker lists has been deleted (a
finished output of another plan, or of this one rebuilt with `force`, is set aside, and put back if no task of the
new plan succeeds): a run killed at any point and rerun gives exactly the output of an uninterrupted run.
Every file a task commits is fenced: it is renamed into place only while the lock still names the task's run and
its driver lives.

Progress: `RunOptions.progress` receives a `Progress` event when a phase starts (its resumed tasks counted done),
after every task (local and Ray alike), and once at the end of the stage (`finished`); a skipped stage sends that
last one only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.executor import connect_ray, run_tasks
from pipeline import previous, task_errors
from pipeline.layout import MANIFEST
from pipeline.lock import Fence, OutputLock, is_lock_file
from pipeline.storage import TMP_PREFIX, Dir, InputFile, is_within, naming, sha256_file

__all__ = ["Phase", "Progress", "Stage", "StageError", "StageResult", "RunOptions", "TaskContext", "run_stage",
           "format_funnel"]

TASKS_DIR = "_tasks"
REJECTED_DIR = "_rejected"
WORK_DIR = "_work"
RESUME_DIR = "_resume"

T = TypeVar("T")


def task_id(phase: str, index: int) -> str:
    return f"{phase}-{index:05d}"


def work_name(phase: str, index: int, name: str) -> str:
    """Where task `index` of `phase` keeps its file `name` in the work area: the one place that says so."""
    return f"{WORK_DIR}/{task_id(phase, index)}/{name}"


def work_files(stage_dir: str, phase: str, name: str) -> list[str]:
    """The file `name` of every task of `phase` left in a finished stage's work area (`RunOptions.keep_work`)."""
    out = Dir(stage_dir)
    return [out.uri(f"{WORK_DIR}/{task}/{name}") for task in subdirs(out, WORK_DIR)
            if fnmatch.fnmatch(task, f"{phase}-*") and out.exists(f"{WORK_DIR}/{task}/{name}")]


def subdirs(directory: Dir, name: str) -> list[str]:
    """Names of the directories directly under `name`, sorted; none if `name` is not a directory."""
    base = directory.path(name)
    if directory.fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    infos = directory.fs.get_file_info(pafs.FileSelector(base))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def code_version() -> str:
    try:
        return importlib.metadata.version("webtext")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Phase(Generic[T]):
    """One step of a stage: its tasks run independently (in any order, anywhere), each by `run(payload, ctx)`,
    once every task of the phase before has finished. `tasks` holds one typed payload per task, in task-index
    order; `name` names the phase's task ids (`<name>-XXXXX`) and work area."""

    name: str
    run: Callable[[T, TaskContext], None]
    tasks: Sequence[T]


class Stage(ABC):
    """One stage of the corpus pipeline. Subclasses set `name` and implement `plan`."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the output's meaning changes, so old outputs are rebuilt
    # Counters for records that leave the funnel without being rejects (e.g. submissions merged into one URL row).
    folded: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config):
        self.config = config

    @abstractmethod
    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        """The stage's phases in order, each with its tasks: called once per run, before any task runs and before
        the output is touched, from the inputs and the config alone (never from what a phase writes).

        Check the inputs here, cheaply (headers, footers, sizes): a `StageError` raised here (a wrong kind of file,
        an unreadable one, missing columns, a missing tokenizer file) leaves the previous output as it was."""


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
        return task_id(self.phase, self.index)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def part_name(self, ext: str = ".parquet") -> str:
        if not self.is_final_phase:
            raise RuntimeError(f"phase {self.phase!r} is not the final phase and writes no parts")
        return f"part-{self.index:05d}{ext}"

    def work_name(self, name: str) -> str:
        """Where this task writes its file `name` for later phases (the work area); read back with `read_work`."""
        return work_name(self.phase, self.index, name)

    def read_work(self, phase: str, index: int, name: str, columns: list[str] | None = None) -> pa.Table:
        """The Parquet file `name` that task `index` of the earlier `phase` wrote with `work_name`."""
        return pq.read_table(self.out.path(work_name(phase, index, name)), columns=columns, filesystem=self.out.fs)

    def has_work(self, phase: str, index: int, name: str) -> bool:
        """Whether task `index` of `phase` wrote `name` (for a phase whose tasks write only what they have)."""
        return self.out.exists(work_name(phase, index, name))

    def open_work(self, phase: str, index: int, name: str):
        """The file `name` of task `index` of `phase`, opened for random access (`read_at`); a context manager."""
        return self.out.fs.open_input_file(self.out.path(work_name(phase, index, name)))

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

    @contextmanager
    def open_part(self, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
        """Write this task's output part as Parquet a table at a time, for a task that streams its input: the block
        gets a function that appends a table as a row group (an empty one is skipped: a part with no rows is a file
        of no row group); the part appears only if the block ends without an error, and its rows count as `out`."""
        name, rows = self.part_name(), 0
        with self.open_output(name) as stream, pq.ParquetWriter(stream, schema, compression="zstd") as writer:

            def write(table: pa.Table) -> None:
                nonlocal rows
                if table.num_rows:
                    writer.write_table(table)
                    rows += table.num_rows

            yield write
        self.files[name]["rows"] = rows
        self.count("out", rows)

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


@dataclass(frozen=True)
class Progress:
    """Where a stage stands, sent to `RunOptions.progress` in the driver: when a phase starts (`tasks_done` counts
    the tasks resumed from an earlier run), after every task, and once with `finished` after the manifest is written.
    A skipped stage (its output current) sends only the finished event, with `phases` 0 and `records` its funnel's
    `in`."""

    stage: str  # e.g. "crawl"
    phase: str  # e.g. "fetch"; phases run in order
    phase_index: int  # 0-based index of the phase within the stage
    phases: int  # number of phases of the stage
    tasks_done: int  # tasks of this phase finished so far (resumed ones included)
    tasks_total: int  # tasks of this phase
    records: int  # records read by the finished tasks of this phase (their funnel input count), 0 if unknown
    elapsed_s: float  # seconds since this phase started
    finished: bool  # True once, on the last event of the stage (after the manifest is written)


@dataclass
class RunOptions:
    """How to run, as opposed to what to compute: none of this enters the plan hash."""

    executor: str = "ray"  # "ray" or "local"
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS or an embedded loopback-only Ray
    num_cpus: int | None = None  # for an embedded Ray
    task_cpus: float = 1.0
    force: bool = False  # rebuild even if the manifest is current
    quiet: bool = False  # no "skipped" line for a current stage
    keep_work: bool = False  # keep the work area (a shuffle's intermediate files) after the stage has finished
    # Called in the driver with every `Progress` event (the CLI's console draws them; None: no display). An
    # exception it raises stops the stage (it is a bug).
    progress: Callable[[Progress], None] | None = None


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


def _execute(out: Dir, phase: str, run: Callable[[Any, TaskContext], None], is_final: bool, plan: str,
             fence: Fence | None, index: int, payload: Any) -> dict:
    """One task, wherever it runs: run it, then write its done marker last (fenced, like every file it commits)."""
    ctx = TaskContext(out=out, phase=phase, index=index, is_final_phase=is_final, plan=plan, fence=fence)
    try:
        run(payload, ctx)
        ctx.finish()
    except BaseException as err:
        ctx.abort()
        if isinstance(err, Exception):  # for `webtext status`; not a kill or an interrupt
            task_errors.record(out, ctx.task_id, plan, err, ctx.check_fence)
        raise
    marker = {"plan": plan, "counters": dict(ctx.counters), "files": ctx.files}
    out.write_json(f"{TASKS_DIR}/{ctx.task_id}.json", marker, before_commit=ctx.check_fence)
    return marker


class _TaskCall:
    """A picklable callable for the executor: (index, payload) -> marker, for the tasks of one phase."""

    def __init__(self, out: Dir, phase: Phase, is_final: bool, plan: str, fence: Fence | None):
        self.args = (out, phase.name, phase.run, is_final, plan, fence)  # not the phase's payloads: one per item

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
        raise StageError(f"{stage.name}: funnel does not add up: in={funnel['in']} but out+rejected+folded={accounted}",
                         hint="a stage that loses records is a bug of webtext's: please report it, with the log")
    return funnel


def run_stage(stage: Stage, inputs: list[InputFile], out_root: str, options: RunOptions | None = None) -> StageResult:
    """Run `stage` over `inputs` into `<out_root>/<stage.name>/`, skipping or resuming as the markers allow.

    Nothing under the output changes until the stage is planned (inputs opened and checked, every phase's tasks
    built), the executor is reachable and this command holds the output's lock."""
    options = options or RunOptions()
    return _run(stage, inputs, Dir(out_root).sub(stage.name), options, options.progress or (lambda event: None))


def _run(stage: Stage, inputs: list[InputFile], out: Dir, options: RunOptions,
         report: Callable[[Progress], None]) -> StageResult:
    if inside := next((f.uri for f in inputs if is_within(f.uri, out.location)), None):
        raise StageError(f"{inside}: an input inside this stage's own output ({out.location}), which the stage "
                         "rewrites: give another --out")
    plan = plan_hash(stage, inputs)
    if (current := _current(stage, out, plan, options, report)) is not None:
        return current
    phases = _checked(stage, stage.plan(inputs))
    if options.executor == "ray":
        connect_ray(options.address, options.num_cpus)
    lock = OutputLock(out)
    with lock as fence:
        _recover_previous(out)  # of a command killed before its first task succeeded
        if (current := _current(stage, out, plan, options, report)) is not None:
            return current  # another command finished it while we planned, or its previous output was put back
        started = time.time()
        markers = {} if options.force else _valid_markers(out, plan)
        keeping = out.exists(MANIFEST) and previous.can_set_aside(out)  # a forced rebuild may fail too
        _prune(out, markers, plan, set_aside=keeping)
        try:
            for number, phase in enumerate(phases):
                tracker = _PhaseProgress(stage.name, phase, number, len(phases), report)
                call = _TaskCall(out, phase, phase is phases[-1], plan, fence)
                todo = tracker.resume(markers)
                for marker in run_tasks(call, todo, options.executor, num_cpus=options.task_cpus):
                    if keeping:  # a task of the new plan has succeeded: the previous output is obsolete
                        out.delete(previous.PREVIOUS_DIR)
                        keeping = False
                    tracker.task_done(marker)
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
    tracker.finish()
    return StageResult(stage.name, False, manifest)


def _checked(stage: Stage, phases: list[Phase]) -> list[Phase]:
    names = [phase.name for phase in phases]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{stage.name}: plan() must return phases with distinct names, not {names}")
    return phases


class _PhaseProgress:
    """The progress of one phase: which of its tasks are done, the records they read, and the events it sends."""

    def __init__(self, stage: str, phase: Phase, number: int, phases: int, report: Callable[[Progress], None]):
        self.stage, self.phase, self.number, self.phases, self.report = stage, phase, number, phases, report
        self.done = self.records = 0
        self.started = time.monotonic()

    def resume(self, markers: dict[str, dict]) -> list[tuple[int, Any]]:
        """The tasks still to run, after sending the phase's first event, which counts the resumed ones as done."""
        todo = []
        for index, payload in enumerate(self.phase.tasks):
            if (marker := markers.get(task_id(self.phase.name, index))) is None:
                todo.append((index, payload))
            else:
                self._count(marker)
        self._send()
        return todo

    def task_done(self, marker: dict) -> None:
        self._count(marker)
        self._send()

    def finish(self) -> None:
        self._send(finished=True)

    def _count(self, marker: dict) -> None:
        self.done += 1
        self.records += marker["counters"].get("in", 0)

    def _send(self, finished: bool = False) -> None:
        self.report(Progress(self.stage, self.phase.name, self.number, self.phases, self.done,
                             len(self.phase.tasks), self.records, time.monotonic() - self.started, finished))


def _recover_previous(out: Dir) -> None:
    previous.recover(out, succeeded=lambda plan: bool(_valid_markers(out, plan)), is_kept=is_lock_file)


def _current(stage: Stage, out: Dir, plan: str, options: RunOptions,
             report: Callable[[Progress], None]) -> StageResult | None:
    """The result of a finished run of this very plan, if its manifest is there (and no rebuild is forced)."""
    if options.force or not out.exists(MANIFEST):
        return None
    try:
        manifest = out.read_json(MANIFEST)
    except ValueError:  # a damaged manifest: the output is not known to be current, so the stage runs
        return None
    if manifest.get("plan") != plan:
        return None
    if options.progress is None and not options.quiet:
        print(f"{stage.name}: up to date ({out.location}), skipped", file=sys.stderr)
    report(Progress(stage.name, "", 0, 0, 0, 0, manifest.get("funnel", {}).get("in", 0), 0.0, True))
    return StageResult(stage.name, True, manifest)


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
