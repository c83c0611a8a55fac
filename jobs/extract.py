"""`webtext extract`: WARC files (+ the crawl's fetch logs) -> Parquet documents with main text (stage `extract`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import StageCommand
from pipeline.extract import ExtractConfig, ExtractStage

COMMAND = StageCommand(ExtractStage, ExtractConfig, "warc",
                       "WARC files, directories or globs (a crawl output dir brings its fetch logs along)")
add_arguments = COMMAND.add_arguments


def run(args: argparse.Namespace) -> int:
    COMMAND.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.extract"))
