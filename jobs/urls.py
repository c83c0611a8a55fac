"""`webtext urls`: Reddit submission dumps -> Parquet table of outbound URLs with their karma (stage `urls`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_and_report, stage_config
from pipeline.urls import UrlsConfig, UrlsStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dumps", nargs="+", required=True, metavar="PATH",
                        help="submission dumps: files, directories or globs (.zst .xz .gz .bz2 or NDJSON)")
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_and_report(UrlsStage(stage_config(UrlsConfig, args)), args.dumps, args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.urls"))
