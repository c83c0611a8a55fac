"""`webtext urls`: Reddit submission dumps -> Parquet table of outbound URLs with their karma (stage `urls`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import StageCommand
from pipeline.urls import UrlsConfig, UrlsStage

COMMAND = StageCommand(UrlsStage, UrlsConfig, "dumps",
                       "submission dumps: files, directories or globs (.zst .xz .gz .bz2 or NDJSON)")
add_arguments = COMMAND.add_arguments


def run(args: argparse.Namespace) -> int:
    COMMAND.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.urls"))
