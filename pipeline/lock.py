"""One writer per stage output: `<out>/<stage>/_lock`, and the fence that keeps a dead run's tasks from writing.

The lock is a small JSON object: the run id, host, pid (with the pid's start time, against pid reuse, and its pid
namespace and machine boot, where the pid means this process), command, start time and a lease expiry that a thread of the holder renews every `LEASE_SECONDS / 4`. A second command on
the same output refuses at once with a `LockedError` naming the holder (it does not wait).

- Local filesystem: written whole, then hard-linked into place (the link fails if a lock is there), so exactly
  one command gets it and nobody reads a lock without its holder. A lock is stale when its holder
  runs on this machine (same pid namespace) and its process is gone, or when its lease has expired (a holder on
  another machine or container sharing the filesystem that stopped renewing). A stale lock is taken over with a warning; two commands taking over the same
  stale lock race for `_lock.takeover-<run id>` (O_EXCL too), and only the winner removes it.
- Object stores (s3://, gs://) have no create-if-absent in pyarrow: the lock is a lease object written after
  checking that none is live, then read back after `SETTLE_SECONDS`; the command whose lease is read back wins and
  the other refuses. Two commands started within that moment of each other can both pass: on object stores the
  lock guards against the usual mistakes (a second command minutes later, a dead holder), not a tight race.

`Fence` is what a task carries: before it commits a file, it checks that the lock still names its run, that the
driver holding it is alive (same machine) and that the lease has not expired. A task of a killed driver, or of a run
another command has taken over, then raises `FencedError` and commits nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from pipeline.errors import FencedError, LockedError
from pipeline.storage import TMP_PREFIX, Dir

LOCK_NAME = "_lock"
LEASE_SECONDS = 120.0
SETTLE_SECONDS = 1.0
TAKEOVER_PREFIX = f"{LOCK_NAME}.takeover-"


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    pid_started: str | None
    pid_space: str  # where `pid` means this process: see `pid_space()`
    command: str
    started: float
    expires: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.started))
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {since}: {self.command})"

    def is_stale(self) -> bool:
        """Where its pid can be checked: its process is gone (a live one keeps it however long it stalls);
        elsewhere (another machine or container): its lease expired."""
        if self.pid_space == pid_space():
            return not process_alive(self.pid, self.pid_started)
        return self.expires < time.time()


def pid_space() -> str:
    """The machine boot and pid namespace this process runs in: pids compare only within one (a container on
    the same host, or with the same hostname, has pids of its own)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, ... (Linux); None elsewhere or when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether `pid` runs (a killed process not yet reaped by its parent counts as gone) and is the process that
    started at `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the signal check is all there is
    return stat[0] not in ("Z", "X") and (started is None or stat[19] == started)


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None


def _read(out: Dir) -> Holder | None:
    """The holder named by the lock, None when there is no lock; a lock being written reads as unparsable."""
    try:
        data = out.read_bytes(LOCK_NAME)
    except FileNotFoundError:
        return None
    holder = _parse(data)
    if holder is None:  # damaged, or (object stores) being written
        info = out.fs.get_file_info(out.path(LOCK_NAME))
        age = time.time() - (info.mtime_ns or 0) / 1e9
        return Holder("unknown", "an unknown host", -1, None, "unknown", "an unreadable lock", time.time(),
                      expires=time.time() - 1 if age > 10 else time.time() + 10)
    return holder


@dataclass(frozen=True)
class Fence:
    """Picklable: shipped with every task, checked before every file the task commits."""

    out: Dir
    run_id: str

    def check(self) -> None:
        holder = _read(self.out)
        where = self.out.uri(LOCK_NAME)
        if holder is None:
            raise FencedError(f"{where}: run {self.run_id} no longer holds this output (its lock was released)")
        if holder.run_id != self.run_id:
            raise FencedError(f"{where}: run {self.run_id} no longer holds this output ({holder.describe()} does)")
        if holder.is_stale():
            raise FencedError(f"{where}: run {self.run_id} has ended (its driver died or its lease expired); "
                              "nothing more is written for it")


class OutputLock:
    """`with OutputLock(out, command) as fence:` holds `out` for one run; see the module docstring."""

    def __init__(self, out: Dir, command: str = "", lease_seconds: float = LEASE_SECONDS):
        self.out = out
        self.lease_seconds = lease_seconds
        self.holder = Holder(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), process_start(os.getpid()),
                             pid_space(), command or " ".join(sys.argv)[:200], time.time(), 0.0)
        self.local = isinstance(out.fs, pafs.LocalFileSystem)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Fence:
        self.acquire()
        return Fence(self.out, self.holder.run_id)

    def __exit__(self, *exc) -> None:
        self.release()

    def _content(self) -> bytes:
        holder = Holder(**{**asdict(self.holder), "expires": time.time() + self.lease_seconds})
        return (json.dumps(asdict(holder), indent=2) + "\n").encode()

    def acquire(self) -> None:
        self.out.makedirs()
        for _ in range(100):
            if self._try_create():
                break
            current = _read(self.out)
            if current is None:
                continue  # released between our create and read: try again
            if not current.is_stale():
                raise LockedError(
                    f"{self.out.location}: another command is writing this output: {current.describe()}; "
                    f"wait for it to end (if it is gone and its lock stays, delete {self.out.uri(LOCK_NAME)})")
            self._take_over(current)
        else:
            raise LockedError(f"{self.out.uri(LOCK_NAME)}: could not take the lock (other commands keep taking it)")
        self._renewer = threading.Thread(target=self._renew, name="webtext-lock-lease", daemon=True)
        self._renewer.start()

    def _try_create(self) -> bool:
        if self.local:
            # Written whole under a name of our own, then linked into place (link fails if the lock exists): a
            # reader never sees a lock without its holder, even one whose writer was stopped or killed midway.
            tmp = self.out.path(f"{TMP_PREFIX}{self.holder.run_id}-{LOCK_NAME}")
            try:
                with open(tmp, "wb") as f:
                    f.write(self._content())
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as err:  # a read-only or full output: name the lock, not our temporary
                raise OSError(err.errno, err.strerror, self.out.path(LOCK_NAME)) from None
            try:
                os.link(tmp, self.out.path(LOCK_NAME))
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if _read(self.out) is not None:
            return False  # live: refused; stale: taken over, then tried again
        self.out.write_bytes(LOCK_NAME, self._content())
        time.sleep(SETTLE_SECONDS)
        current = _read(self.out)
        return current is not None and current.run_id == self.holder.run_id

    def _take_over(self, stale: Holder) -> None:
        """Remove a stale lock, exactly once however many commands found it stale (local); then create ours."""
        if not self.local:
            self._warn_takeover(stale)
            self.out.delete(LOCK_NAME)
            return
        marker = self.out.path(f"{TAKEOVER_PREFIX}{stale.run_id}")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if time.time() - os.stat(marker).st_mtime > 30:  # its owner was killed while taking over
                os.unlink(marker)
            time.sleep(0.05)
            return
        try:
            current = _read(self.out)
            if current is not None and current.run_id == stale.run_id:
                self._warn_takeover(stale)
                os.unlink(self.out.path(LOCK_NAME))
        finally:
            os.unlink(marker)

    def _warn_takeover(self, stale: Holder) -> None:
        print(f"webtext: warning: {self.out.uri(LOCK_NAME)}: taking over the stale lock of {stale.describe()}",
              file=sys.stderr)

    def revoke_tasks(self) -> None:
        """Fence off every task of the run so far (a new run id in the lock): tasks still running after their stage
        failed commit nothing while the runner cleans up."""
        self.holder = Holder(**{**asdict(self.holder), "run_id": uuid.uuid4().hex[:12]})
        self.out.write_bytes(LOCK_NAME, self._content())

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            current = _read(self.out)
            if current is None or current.run_id != self.holder.run_id:
                return  # taken over after we stalled past the lease: our tasks are fenced off
            try:
                self.out.write_bytes(LOCK_NAME, self._content())
            except OSError:
                pass  # a full disk or a network error: try again at the next beat, the lease lasts 4 beats

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = _read(self.out)
        if current is not None and current.run_id == self.holder.run_id:
            self.out.delete(LOCK_NAME)


def is_lock_file(rel: str) -> bool:
    """Files of the lock, its takeover and its renewal's temporary (never output, never pruned)."""
    return rel == LOCK_NAME or rel.startswith(TAKEOVER_PREFIX) or (rel.startswith(TMP_PREFIX)
                                                                   and rel.endswith(f"-{LOCK_NAME}"))
