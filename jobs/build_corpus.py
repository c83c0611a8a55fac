"""`webtext build-corpus` / `python -m jobs.build_corpus`: dumps -> urls -> crawl -> extract -> filter -> dedup ->
tokenize, one config with a section per stage, each stage skipped when its output is current.

    python -m jobs.build_corpus --dumps 'RS_2019-*.zst' --out s3://bucket/webtext --set urls.karma_rule=sum
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_options
from jobs.console import console
from pipeline.config import Config, load_config
from pipeline.crawl import CrawlConfig, CrawlStage
from pipeline.dedup import DedupConfig, DedupStage
from pipeline.extract import ExtractConfig, ExtractStage
from pipeline.filter import FilterConfig, FilterStage
from jobs.report import write_report
from pipeline.runner import RunOptions, Stage, StageResult, format_funnel, run_stage
from pipeline.storage import expand_inputs, join
from pipeline.tokenize import TokenizeConfig, TokenizeStage
from pipeline.urls import UrlsConfig, UrlsStage


class CorpusConfig(Config):
    """One section per stage; each is that stage's own config."""

    urls: UrlsConfig = UrlsConfig()
    crawl: CrawlConfig = CrawlConfig()
    extract: ExtractConfig = ExtractConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    tokenize: TokenizeConfig = TokenizeConfig()


def corpus_stages(config: CorpusConfig) -> list[Stage]:
    """The stages in order; each reads the directory of the one before it (urls reads the dumps)."""
    return [UrlsStage(config.urls), CrawlStage(config.crawl), ExtractStage(config.extract),
            FilterStage(config.filter), DedupStage(config.dedup), TokenizeStage(config.tokenize)]


def build_corpus(dumps: list[str], out: str, config: CorpusConfig, options: RunOptions,
                 quiet: bool = False) -> list[StageResult]:
    results = []
    inputs = dumps
    for stage in corpus_stages(config):
        result = run_stage(stage, expand_inputs(inputs), out, options)
        if not quiet:
            console().print(format_funnel(result))
        results.append(result)
        inputs = [join(out, stage.name)]
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dumps", nargs="+", required=True, metavar="PATH",
                        help="submission dumps: files, directories or globs (.zst .xz .gz .bz2 or NDJSON)")
    add_stage_arguments(parser)  # --config has a section per stage: --set urls.min_karma=5


def run(args: argparse.Namespace) -> int:
    started = time.time()
    config = load_config(CorpusConfig, args.config, args.overrides)
    results = build_corpus(args.dumps, args.out, config, run_options(args))
    tokens = results[-1].funnel.get("tokens")
    console().print(f"corpus: {len(results)} stages in {time.time() - started:.0f}s"
                    + (f", {tokens:,} tokens" if tokens else "") + f"; output under {args.out}")
    console().print(f"corpus: report in {write_report(args.out, title='webtext corpus report')}")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.build_corpus"))
