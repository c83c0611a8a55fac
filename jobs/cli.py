"""The `webtext` command: one subcommand per stage or job, each implemented by a module in `jobs/`.

A job module exposes `add_arguments(parser)` and `run(args) -> int`, and `main()` for `python -m jobs.X`; the CLI
imports only the module of the subcommand that is run. Every failure a user can cause or meet (bad config, bad or
missing input, an output held by another command, an `--out` that is a file, a read-only or full disk) ends with
one line naming what is wrong and exit code 2, caught here once (pipeline/errors.py says which errors those are);
a second line says what to do about it (the error's hint) and, when the command's logs went to a file (jobs/console.py),
a third one where. `--verbose` or WEBTEXT_VERBOSE=1 adds the traceback (a Ray task's own included). Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from jobs import console
from pipeline.errors import WebtextError, user_hint, user_message

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
                        help="show the logs of Ray, DeepSpeed and torch on the terminal as they come (they are kept "
                             f"in <out>/logs/driver.log anyway), and an error's traceback (or set {VERBOSE_ENV}=1)")


def run_module(module_name: str, args: argparse.Namespace) -> int:
    module = importlib.import_module(module_name)
    verbose = getattr(args, "verbose", False) or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    with console.session(verbose) as session:
        try:
            return module.run(args) or 0
        except Exception as err:
            session.log_exception()
            message = user_message(err)
            if message is None:
                raise
            if verbose:
                traceback.print_exc()
            failure, hint = message, rebuild_hint(message) or user_hint(err)
            log = session.console.log_path if session.redirected else None
    print(f"webtext: error: {failure}", file=sys.stderr)
    if hint:
        print(f"webtext: what to do: {hint}", file=sys.stderr)
    if log is not None:
        print(f"webtext: the full log is in {log}", file=sys.stderr)
    return 2


def rebuild_hint(message: str) -> str | None:
    """For an error naming a file that a finished stage wrote (`OUT/dedup/part-00003.parquet: ...`): the command
    that rebuilds that stage from its inputs, read from the stage's manifest. None for any other error."""
    import json
    from pathlib import Path

    path = Path(message.split(": ", 1)[0])
    if not path.is_absolute() or not path.exists():
        return None
    stage_dir = next((d for d in (path, *path.parents) if (d / "_manifest.json").is_file()), None)
    if stage_dir is None or stage_dir == path:
        return None
    try:
        manifest = json.loads((stage_dir / "_manifest.json").read_text())
        stage, inputs = manifest["stage"], [Path(i["uri"]) for i in manifest["inputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stage not in COMMANDS or stage_dir.name != stage or not inputs:
        return None
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[stage][0]).add_arguments(parser)
    flag = next(a.option_strings[-1] for a in parser._actions if a.required and a.dest != "out")
    parents = {i.parent for i in inputs}
    given = str(parents.pop()) if len(parents) == 1 and len(inputs) > 1 else " ".join(map(str, inputs))
    return (f"{path.name} is part of the {stage} stage's finished output; rebuild {stage} from its inputs: delete "
            f"{stage_dir}/ and rerun the command that built it (build-corpus skips the stages before it), or run "
            f"`webtext {stage} {flag} {given} --out {stage_dir.parent} --force` with the config it was built with")


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
