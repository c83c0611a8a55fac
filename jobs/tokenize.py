"""`webtext tokenize`: documents -> GPT-2 BPE token shards (llm.c layout) + index.json (stage `tokenize`)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import module_main
from jobs.console import console
from jobs.common import StageCommand
from pipeline.tokenize import TokenizeConfig, TokenizeStage

COMMAND = StageCommand(TokenizeStage, TokenizeConfig, "docs",
                       "document Parquet files, directories (e.g. <out>/dedup) or globs")
add_arguments = COMMAND.add_arguments


def run(args: argparse.Namespace) -> int:
    result = COMMAND.run(args)
    if not result.skipped:
        console().print(f"shards and index.json in {args.out.rstrip('/')}/tokenize/")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.tokenize"))
