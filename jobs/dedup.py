"""`webtext dedup`: documents -> one document per cluster of exact or near duplicates (stage `dedup`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_and_report, stage_config
from pipeline.dedup import DedupConfig, DedupStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                        help="document Parquet files, directories (e.g. <out>/filter) or globs")
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_and_report(DedupStage(stage_config(DedupConfig, args)), args.docs, args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.dedup"))
