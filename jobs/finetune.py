"""`webtext finetune`: fine-tune a pretrained GPT-2 (one of our runs or checkpoints, or a Hugging Face GPT-2
directory) on JSONL completion / QA / dialogue examples, loss on the answers only, with the pretraining engine,
launchers (Ray Train by default) and checkpoints; resumes from the newest checkpoint in out_dir. Prints the
summary: validation loss on answer tokens and QA exact match.

Under `torchrun`/`deepspeed` (RANK, WORLD_SIZE and MASTER_ADDR set) each rank prepares the same data and trains directly.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import report_training_run
from jobs.console import attach_log, console
from pipeline.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="CKPT",
                        help="run directory (newest checkpoint), <run>/checkpoints/step_N, or an HF GPT-2 dir")
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE", help="JSONL example files")
    parser.add_argument("--config", required=True, help="YAML fine-tuning config (configs/finetune_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set max_steps=100")


def run(args: argparse.Namespace) -> int:
    from training.engine import started_as_rank
    from training.finetune import FinetuneConfig, finetune

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    if started_as_rank():  # one rank of torchrun / deepspeed: its launcher owns the terminal
        summary = finetune(cfg, args.source, args.data)
    else:
        attach_log(cfg.out_dir)
        with console().training("finetune", cfg.out_dir, cfg.max_steps):
            summary = finetune(cfg, args.source, args.data)
    report_training_run(summary, cfg.out_dir, "finetune")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.finetune"))
