"""Where a training run directory (a path or URI) stands, read-only: its last complete checkpoint, step, tokens
seen and last validation loss, from what the run wrote (`config.json`, `metrics.jsonl`, `checkpoints/step_*/
COMPLETE`, `summary.json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from pipeline.storage import Dir, join
from training.metrics import read_metrics
from training.storage import COMPLETE, complete_tags

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints")


@dataclass
class RunStatus:
    location: str
    state: str  # finished (summary.json written) | stopped (no summary: running, killed or failed)
    max_steps: int | None
    last_checkpoint: str | None  # the newest complete checkpoint's tag, what a resume starts from
    step: int | None  # that checkpoint's step
    tokens_seen: int | None  # tokens trained on up to that step
    last_logged_step: int | None
    val_loss: float | None  # the last validation loss logged
    val_loss_step: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_run_dir(directory: Dir) -> bool:
    return directory.exists("config.json") and any(directory.exists(name) for name in RUN_FILES[1:])


def run_dirs(root: str) -> list[str]:
    """`root` itself if it is a run directory, else its immediate subdirectories that are (e.g. a demo's
    pretrain/ and finetune/)."""
    directory = Dir(root)
    if is_run_dir(directory):
        return [root]
    if not directory.exists(""):
        return []
    infos = directory.fs.get_file_info(pafs.FileSelector(directory.path(), recursive=False))
    subdirs = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
    return [join(root, name) for name in subdirs if is_run_dir(directory.sub(name))]


def run_status(location: str) -> RunStatus:
    run = Dir(location)
    config = run.read_json("config.json") if run.exists("config.json") else {}
    records = read_metrics(join(location, "metrics.jsonl")) if run.exists("metrics.jsonl") else []
    tags = complete_tags(run.sub("checkpoints"))
    tag = tags[-1] if tags else None
    step = run.sub("checkpoints").read_json(f"{tag}/{COMPLETE}")["step"] if tag else None
    validations = [r for r in records if isinstance(r.get("val_loss"), (int, float))]
    return RunStatus(
        location=location,
        state="finished" if run.exists("summary.json") else "stopped",
        max_steps=config.get("max_steps"),
        last_checkpoint=tag,
        step=step,
        tokens_seen=tokens_at(records, step) if step is not None else None,
        last_logged_step=records[-1]["step"] if records else None,
        val_loss=validations[-1]["val_loss"] if validations else None,
        val_loss_step=validations[-1]["step"] if validations else None,
    )


def tokens_at(records: list[dict], step: int) -> int | None:
    """Tokens trained on by `step`: every step trains on the same number (the loop logs `tokens` = step x that)."""
    logged = [r for r in records if isinstance(r.get("tokens"), int) and 0 < r["step"]]
    if not logged:
        return None
    exact = next((r["tokens"] for r in logged if r["step"] == step), None)
    return exact if exact is not None else logged[-1]["tokens"] // logged[-1]["step"] * step
