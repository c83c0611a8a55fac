"""`webtext dedup`: documents -> one document per cluster of exact or near duplicates (stage `dedup`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.common import StageCommand
from pipeline.dedup import DedupConfig, DedupStage

COMMAND = StageCommand(DedupStage, DedupConfig, "docs",
                       "document Parquet files, directories (e.g. <out>/filter) or globs")
add_arguments = COMMAND.add_arguments


def run(args: argparse.Namespace) -> int:
    COMMAND.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.dedup"))
