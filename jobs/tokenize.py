"""`webtext tokenize`: documents -> GPT-2 BPE token shards (llm.c layout) + index.json (stage `tokenize`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_and_report, stage_config
from pipeline.tokenize import TokenizeConfig, TokenizeStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                        help="document Parquet files, directories (e.g. <out>/dedup) or globs")
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    result = run_and_report(TokenizeStage(stage_config(TokenizeConfig, args)), args.docs, args)
    if not result.skipped:
        print(f"shards and index.json in {args.out.rstrip('/')}/tokenize/")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.tokenize"))
