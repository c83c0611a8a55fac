"""`webtext filter`: documents -> documents passing language, length and quality rules (stage `filter`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_and_report, stage_config
from pipeline.filter import FilterConfig, FilterStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                        help="document Parquet files, directories (e.g. <out>/extract) or globs")
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_and_report(FilterStage(stage_config(FilterConfig, args)), args.docs, args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.filter"))
