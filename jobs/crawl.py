"""`webtext crawl`: the urls stage's table -> WARC files + fetch log, politely, or replayed from WARCs (stage `crawl`)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import replace

from jobs.cli import module_main
from jobs.common import add_stage_arguments, run_options, stage_config, write_stage_report
from jobs.console import console
from pipeline.crawl import WARC_SUFFIXES, CrawlConfig, CrawlStage, progress_of
from pipeline.runner import format_funnel, run_stage
from pipeline.storage import expand_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--urls", nargs="+", required=True, metavar="PATH",
                        help="the urls stage's output (e.g. out/urls) or Parquet files with a 'url' column")
    parser.add_argument("--from-warc", nargs="+", default=[], metavar="PATH",
                        help="replay: take responses from these WARC files (or directories: their *.warc[.gz]) instead of "
                             "the network")
    add_stage_arguments(parser)


class ProgressBar:
    """Polls the fetch tasks' progress files under <out>/crawl/_resume/ and shows pages, bytes, errors, pages/s."""

    def __init__(self, out: str, total: int, interval: float = 1.0):
        self.out, self.total, self.interval = out, total, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="crawl-progress", daemon=True)

    def __enter__(self) -> ProgressBar:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        line, started = None, time.monotonic()
        while not self.stopped.wait(self.interval):
            progress = progress_of(self.out)  # the checkpoints go when the stage ends (its own line says so)
            if progress:
                line = line or console().new_line()
                line.update(self._text(progress, started), progress.get("done", 0) / max(self.total, 1))

    def _text(self, progress: dict, started: float) -> str:
        rate = progress.get("pages", 0) / max(time.monotonic() - started, 1e-9)
        return (f"crawl    {progress.get('done', 0):,}/{self.total:,} urls  {progress.get('pages', 0):,} pages  "
                f"{progress.get('bytes', 0) / 1e6:,.1f} MB  {progress.get('errors', 0):,} errors  {rate:,.1f} pages/s")


def outcome_table(funnel: dict[str, int]) -> str:
    outcomes = sorted(((k.split(":", 1)[1], v) for k, v in funnel.items() if k.startswith("outcome:")),
                      key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in outcomes) or 1
    width = max([len(k) for k, _ in outcomes] + [7])
    lines = [f"  {'outcome':<{width}}  {'urls':>10}  {'share':>7}"]
    lines += [f"  {name:<{width}}  {n:>10,}  {100 * n / total:>6.2f}%" for name, n in outcomes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    stage = CrawlStage(stage_config(CrawlConfig, args))
    tables = expand_inputs(args.urls)
    warcs = [f for f in expand_inputs(args.from_warc) if f.name.lower().endswith(WARC_SUFFIXES)] if args.from_warc else []
    if args.from_warc and not warcs:
        raise FileNotFoundError(f"--from-warc {' '.join(args.from_warc)}: no WARC files (*.warc, *.warc.gz) there")
    inputs = sorted(tables + warcs)
    tables, _ = stage.split_inputs(inputs)
    with ProgressBar(args.out, total=stage.count_urls(tables)):
        # The stage's own line only ends it: the line above counts URLs, finer than the stage's tasks.
        options = replace(run_options(args), progress=console().stage_progress(final_only=True))
        result = run_stage(stage, inputs, args.out, options)
    console().print(format_funnel(result))
    console().print(outcome_table(result.funnel))
    write_stage_report(args.out, stage.name)
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.crawl"))
