"""`webtext filter`: documents -> documents passing language, length and quality rules (stage `filter`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import StageCommand
from pipeline.filter import FilterConfig, FilterStage

COMMAND = StageCommand(FilterStage, FilterConfig, "docs",
                       "document Parquet files, directories (e.g. <out>/extract) or globs")
add_arguments = COMMAND.add_arguments


def run(args: argparse.Namespace) -> int:
    COMMAND.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.filter"))
