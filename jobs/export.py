"""`webtext export`: a Hugging Face GPT-2 directory from one of our checkpoints, whatever its ZeRO stage: the
newest complete checkpoint of a run, or the one `--tag` names, consolidated to fp32 and written as
`model.safetensors` + `config.json` (+ the tokenizer files, given OpenAI's encoder.json and vocab.bpe).

A model card (`README.md`: the run's config, data and validation loss; training/model_card.py) goes beside the
weights. `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads the result; so do `model.init_from: DIR` (pretrain),
`webtext finetune --from DIR`, `webtext eval` and `webtext generate`. The directory appears whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from jobs.cli import UserError, module_main
from jobs.console import console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN",
                        help="run directory (its newest complete checkpoint), <run>/checkpoints or "
                             "<run>/checkpoints/step_N; a path or a URI")
    parser.add_argument("--tag", metavar="step_N", help="the checkpoint to export (default: the newest complete)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the Hugging Face directory to write (new)")
    parser.add_argument("--tokenizer-dir", metavar="DIR",
                        help="OpenAI's encoder.json + vocab.bpe, copied in as the tokenizer (default: the run's "
                             "checkpoint.tokenizer_dir, if set)")


def export_checkpoint(source: str, out: Path, tag: str | None = None, tokenizer_dir: str | None = None) -> dict:
    from training import checkpoint
    from training.hf import export_hf
    from training.model_card import model_card
    from training.resolve import resolve, run_model_config
    from training.storage import COMPLETE

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty", hint="give a new --out (an export never overwrites)")
    resolved = resolve(source, tag)
    if resolved.kind != "checkpoint":
        raise UserError(f"{source}: already a Hugging Face GPT-2 directory; nothing to export",
                        hint="use it as it is: `webtext generate --ckpt`, `webtext finetune --from` and "
                             "transformers load it")
    config = run_model_config(resolved.run_dir)
    run_config = json.loads((resolved.run_dir / "config.json").read_text())
    if tokenizer_dir is None:
        tokenizer_dir = run_config["checkpoint"].get("tokenizer_dir")
    tmp = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out.name}")
    try:
        export_hf(checkpoint.consolidate(resolved.ckpt_root, resolved.tag), config, tmp, tokenizer_dir)
        step = json.loads((resolved.path / COMPLETE).read_text())["step"]
        card = model_card(run_location(source, resolved), resolved.tag, step, run_config, f"webtext {out.name}")
        (tmp / "README.md").write_text(card)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"checkpoint": resolved.describe(), "out": str(out)}


def run_location(source: str, resolved) -> str:
    """The run directory a checkpoint source names (a run, its checkpoints/ or one step_* in it): the local run
    itself, or for a URI the remote run (its metrics are read there, not mirrored)."""
    if not resolved.remote:
        return str(resolved.run_dir)
    from pipeline.storage import base_name, parent_uri

    name = base_name(source)
    if name.startswith("step_"):
        return parent_uri(parent_uri(source))
    return parent_uri(source) if name == "checkpoints" else source


def run(args: argparse.Namespace) -> int:
    result = export_checkpoint(args.checkpoint, Path(args.out), args.tag, args.tokenizer_dir)
    console().print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.export"))
