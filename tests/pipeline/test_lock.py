"""One writer per stage output: the lock, its stale takeover, its lease on S3, and the fence that keeps a killed
driver's Ray workers from writing."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from jobs.cli import main
from jobs.fixtures.dumpgen import synthetic_records, write_dump
from pipeline.config import Config
from pipeline.errors import FencedError, LockedError
from pipeline.lock import LOCK_NAME, Fence, OutputLock, pid_space
from pipeline.runner import Phase, RunOptions, Stage, run_stage
from pipeline.storage import Dir
from tests.helpers import REPO



def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(directory: Path, pid: int, host: str | None = None, expires: float | None = None,
               run_id: str = "0123456789ab") -> None:
    """A lock as a holder on this machine (or on `host`, another machine, whose pid cannot be checked) writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps({
        "run_id": run_id, "host": host or socket.gethostname(), "pid": pid, "pid_started": None,
        "pid_space": f"{host}:1" if host else pid_space(),
        "command": "webtext urls (killed)", "started": time.time() - 60,
        "expires": time.time() + 600 if expires is None else expires}))


# --- two commands ------------------------------------------------------------------------------------------------

def test_a_second_command_on_the_same_output_is_refused_naming_the_first(tmp_path, capsys):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write_dump(dumps / "RS_2019-01.ndjson", synthetic_records(40000, seed=2))
    out = tmp_path / "out"
    args = ["urls", "--dumps", str(dumps), "--out", str(out), "--executor", "local"]
    first = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        while not (out / "urls" / LOCK_NAME).exists():  # then stop it, so that it holds the lock for certain
            assert first.poll() is None, f"the first command ended before it was seen holding the lock: {first.stderr}"
            time.sleep(0.002)
        first.send_signal(signal.SIGSTOP)
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"webtext: error: {out}/urls: another command is writing this output: run ")
        assert f"(pid {first.pid} on {socket.gethostname()}" in err and len(err.splitlines()) == 2
        assert err.splitlines()[1] == f"webtext: what to do: {LockedError.hint}"
    finally:
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert not (out / "urls" / LOCK_NAME).exists()
    assert main(args) == 0  # the lock was released: the output is up to date and the command skips
    assert "up to date" in capsys.readouterr().err


def take(location: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = OutputLock(Dir(location))
        lock.acquire()
    except LockedError:
        results.put("refused")
        return
    results.put("held")
    time.sleep(1.0)  # hold it while the others try
    lock.release()


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_of_many_commands_starting_at_once_exactly_one_holds_the_lock(stale, tmp_path):
    if stale:
        write_lock(tmp_path / "out", dead_pid())
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    procs = [context.Process(target=take, args=(str(tmp_path / "out"), barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    outcomes = sorted(results.get(timeout=10) for _ in procs)
    assert outcomes == ["held"] + ["refused"] * 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # released; no takeover marker left


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write_dump(dumps / "RS_2019-01.ndjson", synthetic_records(300, seed=2))
    out = tmp_path / "out"
    pid = dead_pid()
    write_lock(out / "urls", pid)
    assert main(["urls", "--dumps", str(dumps), "--out", str(out), "--executor", "local"]) == 0
    err = capsys.readouterr().err
    assert f"webtext: warning: {out}/urls/_lock: taking over the stale lock of run 0123456789ab (pid {pid} " in err
    assert not (out / "urls" / LOCK_NAME).exists()


def test_a_live_holder_on_another_host_is_respected_until_its_lease_expires(tmp_path):
    write_lock(tmp_path, os.getpid(), host="elsewhere")
    with pytest.raises(LockedError, match="pid .* on elsewhere"):
        OutputLock(Dir(str(tmp_path))).acquire()
    write_lock(tmp_path, os.getpid(), host="elsewhere", expires=time.time() - 1)
    with OutputLock(Dir(str(tmp_path))):
        pass


# --- the lock is not output --------------------------------------------------------------------------------------

class LockWatching(Stage):
    """Records, from inside its task, what the stage directory holds while the stage runs."""

    name = "watch"

    def plan(self, inputs):
        return [Phase("parts", self.run_task, [0])]

    def run_task(self, payload, ctx):
        seen = sorted(Path(ctx.out.path()).iterdir())
        ctx.count("in", 1)
        ctx.write_part(pa.table({"seen": [p.name for p in seen]}))


def test_the_lock_survives_the_prune_and_is_not_in_the_manifest(tmp_path):
    stage_dir = tmp_path / "out" / "watch"
    stage_dir.mkdir(parents=True)
    (stage_dir / "part-00005.parquet").write_bytes(b"an older plan's part: pruned")
    result = run_stage(LockWatching(Config()), [], str(tmp_path / "out"), RunOptions(executor="local", quiet=True))
    seen = Dir(str(stage_dir)).read_parquet("part-00000.parquet")["seen"].to_pylist()
    assert LOCK_NAME in seen and "part-00005.parquet" not in seen
    assert LOCK_NAME not in json.dumps(result.manifest)
    assert sorted(p.name for p in stage_dir.iterdir()) == ["_manifest.json", "_tasks", "part-00000.parquet"]


# --- the fence ---------------------------------------------------------------------------------------------------

def test_the_fence_refuses_once_another_run_holds_the_output_or_the_driver_is_gone(tmp_path):
    out = Dir(str(tmp_path))
    with OutputLock(out) as fence:
        fence.check()
    with pytest.raises(FencedError, match="lock was released"):
        fence.check()
    write_lock(tmp_path, os.getpid(), run_id="another-run")
    with pytest.raises(FencedError, match="another-run"):
        fence.check()
    write_lock(tmp_path, dead_pid(), run_id=fence.run_id)
    with pytest.raises(FencedError, match="driver died"):
        fence.check()


def test_revoked_tasks_are_fenced_off_while_the_lock_stays_held(tmp_path):
    lock = OutputLock(Dir(str(tmp_path)))
    with lock as fence:
        lock.revoke_tasks()
        with pytest.raises(FencedError, match="no longer holds this output"):
            fence.check()
        with pytest.raises(LockedError):
            OutputLock(Dir(str(tmp_path))).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_fenced_task_commits_nothing(tmp_path):
    from pipeline.runner import TaskContext

    write_lock(tmp_path, dead_pid(), run_id="the-run")
    ctx = TaskContext(out=Dir(str(tmp_path)), phase="parts", index=0, is_final_phase=True,
                      fence=Fence(Dir(str(tmp_path)), "the-run"))
    with pytest.raises(FencedError):
        ctx.write_part(pa.table({"x": [1]}))
    with pytest.raises(FencedError):
        with ctx.open_output("part-00001.bin") as stream:
            stream.write(b"tokens")
    ctx.reject(pa.table({"reason": ["r"]}))
    with pytest.raises(FencedError):
        ctx.finish()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [LOCK_NAME]


# --- object stores -----------------------------------------------------------------------------------------------

def test_s3_lease_refuses_a_second_holder_and_expires(s3, capsys):
    out = Dir(s3("webtext-locks/out/urls"))
    out.fs.create_dir("webtext-locks")
    first = OutputLock(out)
    with first as fence:
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            OutputLock(out).acquire()
        fence.check()
    assert not out.exists(LOCK_NAME)
    stale = {"run_id": "old-run", "host": "gone-host", "pid": 1, "pid_started": None, "pid_space": "gone-host:1",
             "command": "webtext urls",
             "started": time.time() - 900, "expires": time.time() - 1}
    out.write_json(LOCK_NAME, stale)
    with OutputLock(out):
        assert "taking over the stale lock of run old-run" in capsys.readouterr().err
        with pytest.raises(FencedError):
            Fence(out, "old-run").check()


# --- the embedded Ray dies with its driver ------------------------------------------------------------------------

class SlowParts(Stage):
    """Each task says it started, waits for the test's go (given right after it killed the driver: the moment
    a busy worker outlives its driver), then writes its part."""

    name = "slow"

    def plan(self, inputs):
        return [Phase("parts", self.run_task, [0, 1])]

    def run_task(self, index, ctx):
        root = Path(ctx.out.path()).parent
        (root / f"started-{index}").touch()
        deadline = time.time() + 60
        while not (root / "go").exists() and time.time() < deadline:
            time.sleep(0.005)
        ctx.count("in", 1)
        ctx.write_part(pa.table({"x": [index]}))
        (root / f"wrote-{index}").touch()


DRIVER = """
import sys
from pipeline.config import Config
from pipeline.runner import RunOptions, run_stage
from tests.pipeline.test_lock import SlowParts
run_stage(SlowParts(Config()), [], sys.argv[1], RunOptions(executor="ray", num_cpus=2, quiet=True))
"""


@pytest.mark.slow
def test_workers_of_a_killed_driver_write_nothing(tmp_path):
    out = tmp_path / "out"
    ray_tmp = tempfile.mkdtemp(prefix="rayk", dir="/tmp")  # AF_UNIX paths must stay short
    env = {**os.environ, "WEBTEXT_RAY_TMP": ray_tmp}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(out)], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.time()
    try:
        while not all((out / f"started-{i}").exists() for i in (0, 1)):
            assert driver.poll() is None, driver.stderr.read()
            assert time.time() - started < 240, "the tasks did not start"
            time.sleep(0.05)
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its process group; the workers have their own
        driver.wait()
        (out / "go").touch()
        time.sleep(3)
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert written == ["go", "slow/_lock", "started-0", "started-1"]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        for proc in locals().get("ray_processes", []):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
