"""`make demo` / `webtext demo`: the main job end to end on generated default data, on an embedded Ray.

Today it runs the corpus stages that exist: a Pushshift-format dump of a few thousand submissions (self posts, NSFW,
media links, URL variants and reposts planted) -> `urls`. Each later stage joins the chain as it lands.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.cli import module_main
from jobs.common import add_run_arguments, run_options
from jobs.dumpgen import synthetic_records, write_dump
from pipeline.runner import format_funnel, run_stage
from pipeline.storage import expand_inputs
from pipeline.urls import UrlsConfig, UrlsStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    parser.add_argument("--records", type=int, default=20000, help="submissions in the generated dump")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    started = time.time()
    out = Path(args.out)
    dumps = out / "dumps"
    dumps.mkdir(parents=True, exist_ok=True)
    half = args.records // 2
    for month, (n, offset) in {"2019-06": (half, 0), "2019-07": (args.records - half, half)}.items():
        path = dumps / f"RS_{month}.zst"
        if not path.exists():
            write_dump(path, synthetic_records(n, seed=args.seed + offset, id_prefix=f"{month}_"), "zst")
    print(f"demo: {args.records:,} generated submissions in {dumps}/")
    urls = run_stage(UrlsStage(UrlsConfig()), expand_inputs([str(dumps)]), str(out), run_options(args))
    print(format_funnel(urls))
    print(f"demo: done in {time.time() - started:.0f}s; URL table in {out / 'urls'}/")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.demo"))
