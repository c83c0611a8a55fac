"""`webtext card OUT`: write `OUT/README.md`, the corpus's dataset card in the Hugging Face format, from the stage
manifests (pipeline/card.py). Then `datasets.load_dataset(OUT)` loads the documents, and OUT can be uploaded to the
Hub as a dataset repository as it is."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import UserError, module_main
from pipeline.card import CardError, dataset_card
from pipeline.storage import Dir

CARD = "README.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the corpus's output root (path or URI)")
    parser.add_argument("--name", help="the dataset's name in the card (default: webtext corpus (<OUT's name>))")


def run(args: argparse.Namespace) -> int:
    try:
        text = dataset_card(args.out, args.name)
    except CardError as err:
        raise UserError(str(err)) from None
    Dir(args.out).write_bytes(CARD, text.encode())
    print(f"card: {Dir(args.out).uri(CARD).split('?', 1)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.card"))
