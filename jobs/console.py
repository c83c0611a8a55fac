"""What a webtext command shows on the terminal: per stage one progress line (tasks, records, rate, ETA) ending in
the stage's funnel table, one line while a model trains (step, loss, tokens/s, ETA), the job's results, and an
error as what is wrong and what to do. Everything else (Ray's, DeepSpeed's and torch's logs and warnings, the output
of Ray workers and training ranks) goes to `<out>/logs/driver.log`; `--verbose` (or WEBTEXT_VERBOSE=1) leaves it on
the terminal as well.

The log is kept at the level of the process's file descriptors 1 and 2, so output of C++ code (Ray's core worker),
of child processes (torchrun's ranks) and of Ray workers, which the driver prints, all land in it; the console
writes to duplicates of the original descriptors. On a terminal a progress line redraws in place (`\\r`); elsewhere
(CI, `ray job logs`, a pipe) it is printed as sparse lines: its first, one at each tenth of a phase's tasks or after
30 s without one, and its last, and only when it says something new (a rate or an ETA alone is not news), so that
no line is printed twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline.runner import Progress
from pipeline.storage import is_uri

LOG_DIR = "logs"
DRIVER_LOG = "driver.log"
SPARSE_EVERY_S = 30.0  # off a terminal: a progress line at least this often ...
SPARSE_STEPS = 10  # ... and at every tenth of the work
CLEAR_LINE = "\x1b[K"


def log_dir_for(out: str) -> Path:
    """`<out>/logs` for a local output; a local directory named after a URI output (logs are written as they come,
    which object stores do not do)."""
    if is_uri(out):
        name = "".join(c if c.isalnum() or c in "-._" else "_" for c in out.split("?", 1)[0])
        return Path(tempfile.gettempdir()) / "webtext-logs" / name
    return Path(out) / LOG_DIR


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0) + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Line:
    """One progress line: redrawn in place on a terminal, printed sparsely elsewhere."""

    def __init__(self, stream: TextIO, tty: bool):
        self.stream, self.tty = stream, tty
        self._last_print: float | None = None  # off a terminal: when a line was last printed
        self._last_key: object = None  # off a terminal: what the last printed line said
        self._last_bucket, self._drawn = -1, False

    def update(self, text: str, fraction: float | None = None, restart: bool = False, key: object = None,
               news: bool = False) -> None:
        """Show `text`, `fraction` of the way through; `restart`: a new phase of work starts at 0. Off a terminal,
        `key` is what the line says less what only the passing of time changes (a rate, an ETA; by default the
        whole text): a line whose key is the last printed one's is not printed again; `news`: print it now rather
        than at the next tenth (a validation loss)."""
        if self.tty:
            self.stream.write(f"\r{text}{CLEAR_LINE}")
            self._drawn = True
        else:
            key = text if key is None else key
            if key == self._last_key:
                return
            now, bucket = time.monotonic(), int((fraction or 0.0) * SPARSE_STEPS)
            due = news or self._last_print is None or now - self._last_print >= SPARSE_EVERY_S
            if restart or bucket > self._last_bucket:
                due = due or not restart
                self._last_bucket = bucket
            if not due:
                return
            self.stream.write(text + "\n")
            self._last_print, self._last_key = now, key
        self.stream.flush()

    def done(self, text: str, key: object = None) -> None:
        """End the line with `text`; off a terminal, nothing if its `key` (as for `update`) was the last printed."""
        if self.tty:
            self.stream.write(f"\r{text}{CLEAR_LINE}\n")
        elif (text if key is None else key) != self._last_key:
            self.stream.write(text + "\n")
        self._drawn = False
        self.stream.flush()

    def break_line(self) -> None:
        """End a line being redrawn, so that other output starts on a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class StageProgress:
    """The `RunOptions.progress` callback: one line per stage, e.g.
    `dedup    minhash 1/3  12/40 tasks  1,234 records  56 records/s  ETA 0:12`, ending in
    `dedup    done: 40 tasks, 5,678 records in 1:02` (records: the most that a phase of the stage read)."""

    def __init__(self, line_for, final_only: bool = False):
        self._line_for = line_for  # () -> Line, a new one per stage
        self.final_only = final_only  # show only the line that ends each stage
        self._line: Line | None = None
        self._stage: str | None = None
        self._phase: str | None = None
        self._stage_started = 0.0
        self._at_phase_start = (0, 0)  # (tasks_done, records) when the phase started: resumed, not run now
        self._records = 0  # the most records any phase of the stage has read: the done line's

    def __call__(self, p: Progress) -> None:
        first = p.stage != self._stage
        if first:
            self._stage, self._phase, self._line, self._stage_started = p.stage, None, None, time.monotonic()
        if p.phase != self._phase:
            self._phase, self._at_phase_start = p.phase, (p.tasks_done, p.records)
        if self.final_only and not p.finished:
            return
        self._line = self._line or self._line_for()
        name = f"{p.stage:<9}"
        self._records = p.records if first else max(self._records, p.records)
        if p.finished:
            if first:  # the stage's only event: its output was current
                self._line.done(f"{name}up to date, skipped ({p.records:,} records)")
            else:
                self._line.done(f"{name}done: {_count(p.tasks_total, 'task')}, {self._records:,} records in "
                                f"{duration(time.monotonic() - self._stage_started)}")
            self._stage = None
            return
        phase = f"{p.phase} {p.phase_index + 1}/{p.phases}  " if p.phases > 1 else ""
        parts = [f"{name}{phase}{p.tasks_done:,}/{_count(p.tasks_total, 'task')}", f"{p.records:,} records"]
        counts = "  ".join(parts)  # what the line says less the rate and ETA, which change with time alone
        ran, records = p.tasks_done - self._at_phase_start[0], p.records - self._at_phase_start[1]
        if ran > 0 and p.elapsed_s > 0:
            parts.append(f"{records / p.elapsed_s:,.0f} records/s" if records else f"{ran / p.elapsed_s:.2f} tasks/s")
            if p.tasks_done < p.tasks_total:
                parts.append(f"ETA {duration((p.tasks_total - p.tasks_done) * p.elapsed_s / ran)}")
        fraction = p.tasks_done / p.tasks_total if p.tasks_total else 1.0
        self._line.update("  ".join(parts), fraction, restart=ran == 0, key=counts)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class TrainingProgress:
    """One line while a run trains, from the metrics rank 0 appends to `metrics.jsonl` (any launcher): step, loss,
    tokens/s, ETA; read by a thread of the driver every `poll_s` seconds."""

    def __init__(self, line: Line, label: str, metrics: Path, max_steps: int, poll_s: float = 1.0):
        self.line, self.label, self.metrics, self.max_steps, self.poll_s = line, label, metrics, max_steps, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webtext-training-progress", daemon=True)
        self._started = time.monotonic()
        self._first: tuple[int, float] | None = None  # (step, time) when this run's first step was seen
        self._val: float | None = None  # the validation loss last shown

    def __enter__(self) -> TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if (shown := self._state()) is not None:
            self.line.done(shown.text, shown.key)

    def _records(self) -> list[dict]:
        try:
            lines = self.metrics.read_text().splitlines()
        except OSError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line being written
                pass
        return records

    def render(self) -> str | None:
        shown = self._state()
        return shown.text if shown else None

    def poll(self) -> None:
        """Show the line for the metrics logged so far (the thread does this every `poll_s` seconds)."""
        if (shown := self._state()) is not None:
            news, self._val = shown.val is not None and shown.val != self._val, shown.val
            self.line.update(shown.text, shown.step / self.max_steps if self.max_steps else None, key=shown.key,
                             news=news)

    def _state(self) -> _Shown | None:
        """The line from the metrics logged so far; None before the first step's."""
        records = self._records()
        train = [r for r in records if "loss" in r]
        if not train:
            return None
        last = train[-1]
        step, now = last["step"], time.monotonic()
        if self._first is None or step < self._first[0]:
            self._first = (step, now)
        parts = [f"{self.label:<9}step {step:,}/{self.max_steps:,}"]
        if isinstance(last["loss"], (int, float)):
            parts.append(f"loss {last['loss']:.3f}")
        val = [r["val_loss"] for r in records if isinstance(r.get("val_loss"), (int, float))]
        if val:
            parts.append(f"val {val[-1]:.3f}")
        if isinstance(last.get("tokens_per_s"), (int, float)):
            parts.append(f"{last['tokens_per_s']:,.0f} tokens/s")
        key = "  ".join(parts)  # what the line says less the ETA, which changes with time alone
        first_step, first_time = self._first
        if step > first_step and step < self.max_steps:
            parts.append(f"ETA {duration((self.max_steps - step) * (now - first_time) / (step - first_step))}")
        return _Shown("  ".join(parts), key, step, val[-1] if val else None)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()


@dataclass(frozen=True)
class _Shown:
    """A training line: its text, what it says less the ETA, its step and its validation loss."""

    text: str
    key: str
    step: int
    val: float | None


class Console:
    """Where a command's words go: results (`print`, stdout) and notes and progress (`note`, stderr)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, verbose: bool = False):
        self._out, self._err, self.verbose = out, err, verbose
        self.log_path: Path | None = None  # the driver log, once a command has one
        self._line: Line | None = None

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @property
    def tty(self) -> bool:
        """Progress redraws in place: stderr is a terminal, and nothing else (verbose logs) writes on it."""
        return not self.verbose and _isatty(self.err)

    def print(self, text: str = "") -> None:
        self._break()
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self._break()
        self.err.write(text + "\n")
        self.err.flush()

    def new_line(self) -> Line:
        self._break()
        self._line = Line(self.err, self.tty)
        return self._line

    def stage_progress(self, final_only: bool = False) -> StageProgress:
        return StageProgress(self.new_line, final_only)

    def training(self, label: str, out_dir: str, max_steps: int) -> contextlib.AbstractContextManager:
        """The training line for a run writing `<out_dir>/metrics.jsonl` (a local run directory; nothing is shown
        for a URI, whose metrics reach it only at checkpoints)."""
        if is_uri(str(out_dir)):
            return contextlib.nullcontext()
        return TrainingProgress(self.new_line(), label, Path(out_dir) / "metrics.jsonl", max_steps)

    def _break(self) -> None:
        if self._line is not None:
            self._line.break_line()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_plain = Console()
_session: Session | None = None


def console() -> Console:
    """The console of the command being run (a plain one on stdout/stderr outside a command)."""
    return _session.console if _session is not None else _plain


def attach_log(out: str) -> Path | None:
    """The command being run keeps its logs under `out` from here on (see `Session.attach`); None outside one."""
    return _session.attach(out) if _session is not None else None


class Session:
    """A command's console and log. `attach(out)` starts the log under the command's output; until then, and with
    `verbose`, output goes where it always did."""

    def __init__(self, verbose: bool):
        self.console = Console(verbose=verbose)
        self.verbose = verbose
        self._saved: list[tuple[int, int]] = []  # (fd, duplicate of what it was)
        self._log: TextIO | None = None
        self._handlers: list[logging.Handler] = []

    @property
    def redirected(self) -> bool:
        return bool(self._saved)

    def attach(self, out: str) -> Path | None:
        """Open `<out>/logs/driver.log` (appended to) and, unless verbose, send fds 1 and 2 there. Where no log can
        be written (a read-only or full disk), output stays on the terminal: the command's own error says why."""
        if self._log is not None:
            return self.console.log_path
        path = log_dir_for(out) / DRIVER_LOG
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(path, "a", buffering=1)
        except OSError:
            return None
        self._log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(sys.argv)}\n")
        self.console.log_path = path
        # Python's logging records at INFO: into the log, and with --verbose onto the terminal as well.
        root = logging.getLogger()
        for stream in (self._log, sys.stderr) if self.verbose else (self._log,):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            self._handlers.append(handler)
        self._root_level = root.level
        root.setLevel(min(root.level, logging.INFO))
        if not self.verbose and _real_fd(sys.stdout) == 1 and _real_fd(sys.stderr) == 2:
            sys.stdout.flush()
            sys.stderr.flush()
            terminal = {fd: os.dup(fd) for fd in (1, 2)}
            self.console._out = io.TextIOWrapper(os.fdopen(terminal[1], "wb", buffering=0, closefd=False),
                                                 line_buffering=True, encoding=sys.stdout.encoding)
            self.console._err = io.TextIOWrapper(os.fdopen(terminal[2], "wb", buffering=0, closefd=False),
                                                 line_buffering=True, encoding=sys.stderr.encoding)
            for fd in (1, 2):
                os.dup2(self._log.fileno(), fd)
                self._saved.append((fd, terminal[fd]))
        return path

    def log_exception(self) -> None:
        """The traceback of the error that ends the command, into the log (the terminal gets one line)."""
        if self._log is not None:
            import traceback

            traceback.print_exc(file=self._log)

    def close(self) -> None:
        if self._saved and "ray" in sys.modules:
            # The driver prints what Ray's workers said a moment after they said it: once the descriptors are back
            # on the terminal that would land there. The command's Ray ends with it, its last words in the log.
            import ray

            if ray.is_initialized():
                ray.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []
        for handler in self._handlers:
            logging.getLogger().removeHandler(handler)
        if self._handlers:
            logging.getLogger().setLevel(self._root_level)
        if self._log is not None:
            self._log.close()


def _real_fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def session(verbose: bool) -> Iterator[Session]:
    """The console of one command, which `console()` returns meanwhile."""
    global _session
    previous, _session = _session, Session(verbose)
    try:
        yield _session
    finally:
        _session.close()
        _session = previous
