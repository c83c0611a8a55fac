"""Evaluate a checkpoint in one process, without DeepSpeed: validation loss and perplexity on the fixed
validation windows the run used (`eval.batches` micro-batches per rank, for every rank of the run).

A checkpoint is a run directory (its newest complete checkpoint), a checkpoint directory
(`<run>/checkpoints/step_N`), or a Hugging Face GPT-2 directory (with `--config` naming the data); a local path or a
URI (s3://...; `training.storage.localize` mirrors what is needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from pipeline.config import ConfigError, load_config
from training import checkpoint
from training.config import TrainConfig
from training.loop import validation_batches
from training.model import GPT
from training.storage import COMPLETE, complete_tags


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint directory or HF directory, the run directory if there is one)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        tags = complete_tags(path / "checkpoints")
        if not tags:
            raise FileNotFoundError(f"{path}/checkpoints: no complete checkpoint")
        return path / "checkpoints" / tags[-1], path
    if (path / COMPLETE).is_file():
        return path, path.parent.parent
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path, None
    raise FileNotFoundError(f"{path}: not a run directory, a complete checkpoint or a Hugging Face GPT-2 directory")


def load_model(ckpt: Path, cfg: TrainConfig) -> GPT:
    if (ckpt / "model.safetensors").is_file():
        from training.hf import import_hf

        return import_hf(ckpt, pad_vocab_to=cfg.model.pad_vocab_to)
    model = GPT(cfg.model.gpt_config())
    model.load_state_dict(checkpoint.consolidate(ckpt.parent, ckpt.name))
    return model


def eval_config(ckpt_path: str | Path, config_path: str | None, overrides: list[str]) -> tuple[Path, TrainConfig]:
    from training.storage import localize

    ckpt, run_dir = resolve_checkpoint(localize(str(ckpt_path)))  # a URI's checkpoint mirrored on this machine
    if config_path is None:
        if run_dir is None or not (run_dir / "config.json").is_file():
            raise ConfigError(f"{ckpt_path}: no run config.json beside the checkpoint; pass --config")
        config_path = str(run_dir / "config.json")  # JSON is YAML
    return ckpt, load_config(TrainConfig, config_path, overrides)


@torch.no_grad()
def evaluate_checkpoint(ckpt: Path, cfg: TrainConfig) -> dict:
    if not cfg.data.val:
        raise ConfigError("data.val: no validation shards to evaluate on")
    model = load_model(ckpt, cfg).eval()
    # One process reads what every rank of the run read, masks included: each rank's eval.batches micro-batches,
    # from that rank's own loader (a validation set of few windows wraps per rank, not per process).
    total, count = 0.0, 0
    world_size = cfg.launch.num_workers
    for rank in range(world_size):
        for x, y in validation_batches(cfg, model.config, rank, world_size, cfg.eval.batches):
            _, loss = model(x, y)
            if torch.isfinite(loss):
                total, count = total + loss.item(), count + 1
    val_loss = total / count if count else float("nan")
    return {"checkpoint": str(ckpt), "val_loss": val_loss,
            "val_ppl": math.exp(val_loss) if val_loss < 50 else float("inf"),
            "windows": count * cfg.batch.micro_batch_size}


def main_result(ckpt_path: str, config_path: str | None, overrides: list[str]) -> dict:
    ckpt, cfg = eval_config(ckpt_path, config_path, overrides)
    result = evaluate_checkpoint(ckpt, cfg)
    print(json.dumps(result))
    return result
