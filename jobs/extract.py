"""`webtext extract`: WARC files (+ the crawl's fetch logs) -> Parquet documents with main text (stage `extract`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_and_report, stage_config
from pipeline.extract import ExtractConfig, ExtractStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warc", nargs="+", required=True, metavar="PATH",
                        help="WARC files, directories or globs (a crawl output dir brings its fetch logs along)")
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_and_report(ExtractStage(stage_config(ExtractConfig, args)), args.warc, args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.extract"))
