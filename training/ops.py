"""DeepSpeed's CPU shared-memory collective op (`deepspeed_shm_comm`), compiled once and never waited on forever.

DeepSpeed compiles this op (JIT, through torch.utils.cpp_extension) the first time a CPU process group starts: about
30 s on a quiet machine, minutes under load, silently. `make install` runs `python -m training.ops` to build it
then; a run that still finds it unbuilt says so before DeepSpeed starts (`prepare_shm_op`).

torch serialises builds with a lock file, `<extensions dir>/<op>/lock` (its `FileBaton`): the builder creates it
and holds it open until the build ends, then deletes it; everyone else polls until it is gone. A builder killed
midway leaves the file behind and every later build waits on it forever, without a word. A lock that no process
holds open (looked up in /proc; processes this user may not inspect are not seen) still there a moment later is
such a leftover: it is removed, with a warning; so is any other op's (cpu_adam, fused_adam) before a run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SHM_OP = "deepspeed_shm_comm"
RECHECK_S = 1.0  # a builder deletes its lock right after closing it: a lock without a holder must outlive this


def build_directory(name: str = SHM_OP) -> Path:
    """Where torch builds and caches op `name` ($TORCH_EXTENSIONS_DIR/<name>, or torch's per-Python default)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(name, verbose=False))


def lock_holders(lock: Path) -> list[int]:
    """Process ids that have `lock` open (the live builder, if any)."""
    target = os.path.realpath(lock)
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.append(int(proc.name))
                    break
            except OSError:
                continue
    return holders


def remove_stale_lock(name: str = SHM_OP) -> bool:
    """Remove op `name`'s build lock if no process holds it (now and a moment later), with a warning. True if it
    removed one."""
    lock = build_directory(name) / "lock"
    if not lock.exists() or lock_holders(lock):
        return False
    time.sleep(RECHECK_S)
    if not lock.exists() or lock_holders(lock):
        return False
    lock.unlink(missing_ok=True)
    print(f"webtext: warning: removed {lock}: a stale build lock of {name} (no process holds it; a build was "
          "killed midway), which would have made this build wait forever", file=sys.stderr, flush=True)
    return True


def remove_stale_locks() -> list[str]:
    """`remove_stale_lock` for every op in the extensions cache: DeepSpeed also JIT-builds cpu_adam (optimizer
    offload) and fused_adam, whose leftover locks hang a run the same way. The ops whose lock it removed."""
    root = build_directory().parent
    return [lock.parent.name for lock in sorted(root.glob("*/lock")) if remove_stale_lock(lock.parent.name)]


def is_built(name: str = SHM_OP) -> bool:
    directory = build_directory(name)
    return any(directory.glob(f"{name}*.so"))


def prepare_shm_op() -> None:
    """Before a CPU process group starts: clear stale build locks, and announce a build DeepSpeed is about to do."""
    remove_stale_locks()
    if not is_built() and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"webtext: building DeepSpeed's CPU communication op {SHM_OP} once (30 s to a few minutes; cached in "
              f"{build_directory()}; `make install` builds it ahead)", file=sys.stderr, flush=True)


def build_shm_op() -> None:
    """Compile the op now, exactly as DeepSpeed does when a CPU process group starts."""
    prepare_shm_op()
    from deepspeed.comm.torch import build_shm_op as deepspeed_build

    if deepspeed_build() is None:
        print(f"webtext: {SHM_OP} is not used with this accelerator; nothing to build", file=sys.stderr)


if __name__ == "__main__":
    try:
        build_shm_op()
    except Exception as err:  # install goes on: the run builds it (with a message) if it can
        print(f"webtext: warning: could not build {SHM_OP} now ({err}); the first training run will try again",
              file=sys.stderr)
