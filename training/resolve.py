"""What a checkpoint argument names, decided in one place for every command (eval, generate, finetune --from,
export, `model.init_from`): one of our runs, one of our checkpoint directories, or a Hugging Face GPT-2 directory,
at a local path or a URI.

- a run: a directory with `checkpoints/`; its newest complete checkpoint, or the tag asked for;
- its `checkpoints/` directory: the same;
- a checkpoint: `<run>/checkpoints/step_N` with its `COMPLETE` (training/checkpoint.py);
- a Hugging Face GPT-2 directory: `config.json` with `model_type` "gpt2" and the weights `training.hf` reads
  (`hf.WEIGHT_FILES`: model.safetensors, sharded safetensors with their index, or pytorch_model.bin).

A URI is mirrored into this machine's cache with the same layout (`<cache>/mirrors/<hash>/`): a Hugging Face
directory whole, or a run's config.json, chat template and the one complete checkpoint resolved; the mirror is
reused while the remote files are the same. Anything else is a FileNotFoundError naming the path and what it is not.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.storage import Dir, base_name, display_uri, is_uri, join, parent_uri
from training.storage import COMPLETE, cache_root, complete_tags, download, location_key, node_lock

NOT_A_CHECKPOINT = "not a run with a complete checkpoint, a complete checkpoint or a Hugging Face GPT-2 directory"


@dataclass(frozen=True)
class Resolved:
    """A checkpoint argument, resolved to local files."""

    source: str  # as given (a path or a URI)
    kind: Literal["hf", "checkpoint"]
    path: Path  # the Hugging Face directory, or our checkpoint directory `<run>/checkpoints/<tag>`
    run_dir: Path | None = None  # our checkpoint's run (its config.json, chat template); None for a HF directory
    tag: str | None = None

    @property
    def ckpt_root(self) -> Path:
        return self.path.parent

    @property
    def remote(self) -> bool:
        return is_uri(self.source)

    def describe(self) -> str:
        """The source for people and records: a URI without its query (and the tag), else the local path."""
        if not self.remote:
            return str(self.path)
        return f"{display_uri(self.source)} {self.tag}" if self.tag else display_uri(self.source)


def is_hf_dir(directory: Dir) -> bool:
    """A Hugging Face GPT-2 directory: config.json says model_type gpt2 and weights `training.hf` reads are there."""
    from training.hf import WEIGHT_FILES

    if not directory.exists("config.json"):
        return False
    try:
        config = directory.read_json("config.json")
    except ValueError:
        return False
    return (isinstance(config, dict) and config.get("model_type") == "gpt2"
            and any(directory.exists(name) for name in WEIGHT_FILES))


def _locate(directory: Dir, tag: str | None) -> tuple[Dir, str]:
    """(the run, the checkpoint's tag) for a run, its checkpoints/ or a step_* directory."""
    name = base_name(directory.location)
    if name.startswith("step_") and directory.exists(COMPLETE) and tag in (None, name):
        return Dir(_parent(_parent(directory.location))), name
    ckpt_uri = directory.location if name == "checkpoints" else join(directory.location, "checkpoints")
    tags = complete_tags(Dir(ckpt_uri))
    if not tags:
        raise FileNotFoundError(f"{display_uri(directory.location)}: {NOT_A_CHECKPOINT}")
    if tag is not None and tag not in tags:
        raise FileNotFoundError(f"{display_uri(join(ckpt_uri, tag))}: not a complete checkpoint "
                                f"(complete: {', '.join(tags)})")
    return Dir(_parent(ckpt_uri)), tag or tags[-1]


def _parent(location: str) -> str:
    return parent_uri(location) if is_uri(location) else str(Path(location).parent)


def resolve(source: str | Path, tag: str | None = None, cache_dir: str | Path | None = None) -> Resolved:
    """What `source` is, with its files on this machine; `tag` picks one of a run's complete checkpoints."""
    source = str(source)
    directory = Dir(source)
    if not is_uri(source) and not Path(source).is_dir():
        raise FileNotFoundError(f"{source}: no such directory")
    if is_hf_dir(directory):
        if tag is not None:
            raise FileNotFoundError(f"{display_uri(source)}: a Hugging Face directory has no checkpoint {tag}")
        return Resolved(source, "hf", _mirror_hf(directory, cache_dir) if is_uri(source) else Path(source))
    run, tag = _locate(directory, tag)
    if not is_uri(source):
        run_dir = Path(run.location)
        return Resolved(source, "checkpoint", run_dir / "checkpoints" / tag, run_dir, tag)
    mirror = _mirror_run(run, tag, source, cache_dir)
    return Resolved(source, "checkpoint", mirror / "checkpoints" / tag, mirror, tag)


def _mirror_root(source: str, cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else cache_root() / "mirrors") / location_key(source)


def _listing_record(remote: Dir) -> list:
    import pyarrow.fs as pafs

    infos = remote.fs.get_file_info(pafs.FileSelector(remote.path(), recursive=True))
    root = remote.path()
    return sorted([i.path[len(root):], i.size, i.mtime_ns] for i in infos if i.type == pafs.FileType.File)


def _mirror_hf(remote: Dir, cache_dir: str | Path | None) -> Path:
    root = _mirror_root(remote.location, cache_dir)
    with node_lock(root):
        listing = _listing_record(remote)
        record = root / "listing.json"
        if not (record.is_file() and json.loads(record.read_text()) == listing and (root / "hf").is_dir()):
            record.unlink(missing_ok=True)
            download(remote, "", root / "hf")
            record.write_text(json.dumps(listing))
    return root / "hf"


def _mirror_run(run: Dir, tag: str, source: str, cache_dir: str | Path | None) -> Path:
    from training.finetune_data import TEMPLATE_FILE

    root = _mirror_root(source, cache_dir)
    mirror = root / "run"
    with node_lock(root):
        for stale in (mirror / "checkpoints").glob("step_*"):
            if stale.name != tag:
                shutil.rmtree(stale, ignore_errors=True)
        if not (mirror / "checkpoints" / tag / COMPLETE).is_file():
            download(run, f"checkpoints/{tag}", mirror / "checkpoints" / tag)
        for run_file in ("config.json", TEMPLATE_FILE):
            if not download(run, run_file, mirror / run_file):
                (mirror / run_file).unlink(missing_ok=True)
    return mirror


def run_model_config(run_dir: Path):
    """The model of one of our runs (a GPTConfig), from the TrainConfig it saved (`config.json`)."""
    from training.config import ModelConfig

    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's config is missing; cannot rebuild its model")
    model = dict(json.loads(path.read_text())["model"])
    model["init_from"] = None
    return ModelConfig.model_validate(model).gpt_config()


def load_model(resolved: Resolved, **hf_overrides):
    """The model's fp32 weights in our GPT: a Hugging Face directory imported (`hf_overrides` as `import_hf`
    takes them), our checkpoint consolidated into the model its run's config.json describes."""
    if resolved.kind == "hf":
        from training.hf import import_hf

        return import_hf(resolved.path, **hf_overrides)
    from training import checkpoint
    from training.model import GPT

    model = GPT(run_model_config(resolved.run_dir))
    model.load_state_dict(checkpoint.consolidate(resolved.ckpt_root, resolved.tag))
    return model
