"""The `webtext` command: one subcommand per stage or job, each implemented by a module in `jobs/`.

A job module exposes `add_arguments(parser)` and `run(args) -> int`, and `main()` for `python -m jobs.X`; the CLI
imports only the module of the subcommand that is run. Every failure a user can cause or meet (bad config, bad or
missing input, an output held by another command, an `--out` that is a file, a read-only or full disk) ends with
one line naming what is wrong and exit code 2, caught here once (pipeline/errors.py says which errors those are);
`--verbose` or WEBTEXT_VERBOSE=1 adds the traceback (a Ray task's own included). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from pipeline.errors import WebtextError, user_message

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.demo", "the main job end to end on generated data, on an embedded loopback-only Ray"),
    "build-corpus": ("jobs.build_corpus", "dumps -> urls -> crawl -> extract -> filter -> dedup -> tokenize, one config"),
    "urls": ("jobs.urls", "Reddit submission dumps -> Parquet table of outbound URLs with karma"),
    "crawl": ("jobs.crawl", "URL table -> WARC files + fetch log: polite, SSRF-guarded, resumable crawl or WARC replay"),
    "extract": ("jobs.extract", "WARC files -> Parquet documents: main text, title, date, language, karma"),
    "filter": ("jobs.filter", "documents -> documents passing language, 128-token and Gopher/C4 quality rules"),
    "dedup": ("jobs.dedup", "documents -> documents without exact and MinHash near duplicates, with clusters"),
    "tokenize": ("jobs.tokenize", "documents -> GPT-2 BPE token shards (llm.c layout), train/val split, index.json"),
    "pretrain": ("jobs.pretrain", "token shards -> GPT-2 trained with DeepSpeed ZeRO on Ray Train or torchrun; resumable"),
    "eval": ("jobs.evaluate", "checkpoint -> validation loss and perplexity on the run's fixed validation windows"),
    "finetune": ("jobs.finetune", "checkpoint + JSONL completion/QA/dialogue -> fine-tuned model, loss on answers only"),
    "export": ("jobs.export", "checkpoint (any ZeRO stage) -> Hugging Face GPT-2 directory that transformers loads"),
    "generate": ("jobs.generate", "checkpoint -> sampled text (temperature, top-k/p, KV cache); --chat for dialogue"),
    "status": ("jobs.status", "where an output stands: each stage current, stale (why) or partial; training runs"),
    "card": ("jobs.card", "corpus output -> README.md dataset card (Hugging Face format) from its manifests"),
}


class UserError(WebtextError):
    """An error the user can fix; printed as one line."""


VERBOSE_ENV = "WEBTEXT_VERBOSE"


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help=f"on an error, print its traceback too (or set {VERBOSE_ENV}=1)")


def run_module(module_name: str, args: argparse.Namespace) -> int:
    module = importlib.import_module(module_name)
    verbose = getattr(args, "verbose", False) or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        return module.run(args) or 0
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        if verbose:
            traceback.print_exc()
        print(f"webtext: error: {message}", file=sys.stderr)
        return 2


def module_main(module_name: str, argv: list[str] | None = None) -> int:
    """`python -m jobs.X`: the same arguments as `webtext X`."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", description=module.__doc__)
    module.add_arguments(parser)
    add_verbose_argument(parser)
    return run_module(module_name, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webtext", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        # Only the chosen subcommand's module is imported (torch and ray are slow to import).
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(sub_parser)
            add_verbose_argument(sub_parser)
    args = parser.parse_args(argv)
    return run_module(COMMANDS[args.command][0], args)


if __name__ == "__main__":
    sys.exit(main())
