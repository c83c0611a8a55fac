"""`webtext status OUT`: where an output stands, without changing it: each corpus stage current, stale (which config
key or input changed), partial (tasks done / total, the last error) or running, with its funnel and size; each
training run under OUT with its last complete checkpoint, step, tokens seen and last validation loss.

The config compared against is the one `webtext build-corpus` would run with the same `--config` / `--set` (its
defaults without them); `--json` prints one JSON object instead of the table.

    webtext status out/corpus --set dedup.threshold=0.6
    webtext status 's3://bucket/webtext?endpoint_override=...' --json
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.build_corpus import CorpusConfig, corpus_stages
from jobs.cli import UserError, module_main
from pipeline.config import load_config
from pipeline.status import StageStatus, corpus_status
from pipeline.storage import Dir
from training.run_status import RunStatus, run_dirs, run_status

SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="an output root (path or URI): corpus stages and/or run dirs")
    parser.add_argument("--config", help="the build-corpus YAML config to compare against (default: its defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key as build-corpus would, e.g. --set dedup.threshold=0.6")
    parser.add_argument("--dumps", nargs="+", metavar="PATH",
                        help="the dumps as build-corpus is given them (default: those the urls manifest lists)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def status_of(out: str, config: CorpusConfig, dumps: list[str] | None = None) -> dict:
    """What `--json` prints: {"schema", "out", "stages": [StageStatus], "runs": [RunStatus]}."""
    if not Dir(out).exists(""):
        raise UserError(f"{out}: no such output")
    stages = [s for s in corpus_status(out, corpus_stages(config), dumps) if s.state != "missing"]
    runs = [run_status(location) for location in run_dirs(out)]
    return {"schema": SCHEMA_VERSION, "out": out, "stages": [s.to_json() for s in stages],
            "runs": [r.to_json() for r in runs]}


def format_status(report: dict) -> str:
    lines = [f"webtext status of {report['out'].split('?', 1)[0]}"]
    if not report["stages"] and not report["runs"]:
        lines.append("  no corpus stage and no training run here")
    for stage in (StageStatus(**s) for s in report["stages"]):
        lines.append(_stage_line(stage))
        lines.extend(f"    {reason}" for reason in stage.reasons)
        if stage.last_error:
            error = stage.last_error
            lines.append(f"    last error: task {error['task']} at {error['at']}: {error['error']}")
        if stage.funnel:
            lines.append("    funnel: " + ", ".join(f"{k} {v:,}" for k, v in stage.funnel.items()))
    for run in (RunStatus(**r) for r in report["runs"]):
        lines.append(_run_line(run))
    return "\n".join(lines)


def _stage_line(stage: StageStatus) -> str:
    tasks = ""
    if stage.tasks_done is not None:
        total = stage.tasks_total if stage.tasks_total is not None else "?"
        tasks = f", {stage.tasks_done}/{total} tasks done"
    size = f"{stage.parts} parts, {human_bytes(stage.bytes)}"
    return f"  {stage.name:<9} {stage.state:<8} {size}{tasks}"


def _run_line(run: RunStatus) -> str:
    where = run.location.split("?", 1)[0]
    if run.last_checkpoint is None:
        checkpoint = "no complete checkpoint"
    else:
        of = f" of {run.max_steps}" if run.max_steps is not None else ""
        tokens = f", {run.tokens_seen:,} tokens seen" if run.tokens_seen is not None else ""
        checkpoint = f"checkpoint {run.last_checkpoint} (step {run.step}{of}{tokens})"
    val = (f", val loss {run.val_loss:.4f} at step {run.val_loss_step}" if run.val_loss is not None
           else ", no validation loss logged")
    return f"  run {where}: {run.state}, {checkpoint}{val}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    config = load_config(CorpusConfig, args.config, args.overrides)
    report = status_of(args.out, config, args.dumps)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.status"))
