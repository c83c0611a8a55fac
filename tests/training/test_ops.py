"""DeepSpeed's CPU comm op build: a build lock left by a killed builder is found and removed with a warning, one a
live builder holds is left alone, and a build about to happen is announced. Real torch FileBaton locks in a
temporary TORCH_EXTENSIONS_DIR."""

from __future__ import annotations

import subprocess
import sys

from torch.utils.file_baton import FileBaton

from training import ops

HOLD = ("import sys, time\n"
        "from torch.utils.file_baton import FileBaton\n"
        "assert FileBaton(sys.argv[1]).try_acquire()\n"  # what torch.utils.cpp_extension does around a build
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


def test_a_lock_no_process_holds_is_removed_with_a_warning_and_a_held_one_is_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ops, "RECHECK_S", 0.05)
    lock = ops.build_directory() / "lock"
    assert lock == tmp_path / ops.SHM_OP / "lock"
    builder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout.readline().strip() == "held"
        assert ops.lock_holders(lock) == [builder.pid]
        assert not ops.remove_stale_lock()  # a build in progress: wait for it, as torch does
        assert lock.exists()
    finally:
        builder.kill()  # killed midway: its lock stays behind
        builder.wait()
        builder.stdout.close()
    assert lock.exists() and ops.lock_holders(lock) == []
    assert capsys.readouterr().err == ""
    assert ops.remove_stale_lock()
    assert not lock.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"webtext: warning: removed {lock}: a stale build lock")
    baton = FileBaton(str(lock))
    assert baton.try_acquire()  # the next build takes the lock instead of waiting forever
    baton.release()


def test_stale_locks_of_every_op_are_removed_before_a_run(tmp_path, monkeypatch, capsys):
    """cpu_adam (optimizer offload) and fused_adam are JIT-built too: a killed build of theirs hangs the next run
    the same way, so the check before a run covers every op in the cache."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ops, "RECHECK_S", 0.05)
    for op in ("cpu_adam", "fused_adam", ops.SHM_OP):
        (tmp_path / op).mkdir()
        (tmp_path / op / "lock").write_bytes(b"")
    ops.prepare_shm_op()
    assert not list(tmp_path.glob("*/lock"))
    warned = [line for line in capsys.readouterr().err.splitlines() if "a stale build lock" in line]
    assert len(warned) == 3 and any("cpu_adam/lock" in line for line in warned)


def test_a_build_about_to_happen_is_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    ops.prepare_shm_op()
    assert f"webtext: building DeepSpeed's CPU communication op {ops.SHM_OP} once" in capsys.readouterr().err
    (tmp_path / ops.SHM_OP / f"{ops.SHM_OP}.so").write_bytes(b"")  # built: nothing to say
    ops.prepare_shm_op()
    assert capsys.readouterr().err == ""
