"""`webtext eval`: validation loss and perplexity of a checkpoint (a run directory, a checkpoint directory or a
Hugging Face GPT-2 directory) on the fixed validation windows of its run config, in one process."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="run directory (newest checkpoint), <run>/checkpoints/step_N, or an HF GPT-2 dir")
    parser.add_argument("--config", help="training config (default: the run's config.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set data.val=[path/val_*.bin]")


def run(args: argparse.Namespace) -> int:
    from training.evaluate import main_result

    main_result(args.checkpoint, args.config, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.evaluate"))
