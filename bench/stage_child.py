"""One corpus stage in a fresh process on one core, measured: the benches' way to time a stage and read its memory.

`run_child({"stage": "dedup", "inputs": [...], "out": ..., "config": {...}})` runs `python bench/stage_child.py SPEC`
(executor local, `force`, the work area kept) and returns its CPU and wall seconds, peak RSS (VmHWM) and RSS
before the stage, the funnel, and the bytes and files it wrote (the work area apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Not ru_maxrss: Linux carries that over from the parent at
    fork and keeps it across exec, so a child would report at least the bench's own RSS."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def child(spec: dict) -> dict:
    """Run one stage as `spec` says and measure it (this process does nothing else)."""
    from pipeline.runner import RunOptions, run_stage
    from pipeline.storage import expand_inputs

    stage = stage_of(spec["stage"], spec.get("config", {}))
    inputs = expand_inputs(spec["inputs"])
    baseline = _status_bytes("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_stage(stage, inputs, spec["out"], RunOptions(executor="local", quiet=True, force=True,
                                                              keep_work=True))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": cpu, "wall_s": wall, "peak_rss": _status_bytes("VmHWM"), "baseline_rss": baseline,
            "funnel": result.funnel, **written(Path(spec["out"]) / stage.name)}


def stage_of(name: str, config: dict):
    from jobs.build_corpus import CorpusConfig, corpus_stages

    full = CorpusConfig(**{name: config})
    return next(s for s in corpus_stages(full) if s.name == name)


def written(directory: Path) -> dict:
    """Bytes and files under a stage's output: all of it, and its work area (intermediate files)."""
    from pipeline.runner import TASKS_DIR, WORK_DIR

    total = work = n_files = n_work = n_tasks = 0
    for path in directory.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total, n_files = total + size, n_files + 1
            parts = path.relative_to(directory).parts
            if WORK_DIR in parts:
                work, n_work = work + size, n_work + 1
            n_tasks += parts[0] == TASKS_DIR
    return {"bytes_written": total, "files_written": n_files, "work_bytes": work, "work_files": n_work,
            "tasks": n_tasks}


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['stage']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
