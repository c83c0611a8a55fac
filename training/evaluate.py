"""Evaluate a checkpoint in one process, without DeepSpeed: validation loss and perplexity on the fixed
validation windows the run used (`eval.batches` micro-batches per rank, for every rank of the run).

A checkpoint is whatever `training.resolve` resolves: a run directory (its newest complete checkpoint), a
checkpoint directory (`<run>/checkpoints/step_N`), or a Hugging Face GPT-2 directory (with `--config` naming the
data); a local path or a URI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from pipeline.config import ConfigError, load_config
from training import checkpoint, resolve
from training.config import TrainConfig
from training.loop import validation_batches
from training.model import GPT
from training.resolve import Resolved


def load_model(resolved: Resolved, cfg: TrainConfig) -> GPT:
    if resolved.kind == "hf":
        return resolve.load_model(resolved, pad_vocab_to=cfg.model.pad_vocab_to)
    model = GPT(cfg.model.gpt_config())  # the run's model, or the one --config describes
    model.load_state_dict(checkpoint.consolidate(resolved.ckpt_root, resolved.tag))
    return model


def eval_config(ckpt_path: str | Path, config_path: str | None, overrides: list[str]) -> tuple[Resolved, TrainConfig]:
    resolved = resolve.resolve(ckpt_path)
    if config_path is None:
        if resolved.run_dir is None or not (resolved.run_dir / "config.json").is_file():
            raise ConfigError(f"{ckpt_path}: no run config.json beside the checkpoint; pass --config")
        config_path = str(resolved.run_dir / "config.json")  # JSON is YAML
    return resolved, load_config(TrainConfig, config_path, overrides)


@torch.no_grad()
def evaluate_checkpoint(resolved: Resolved, cfg: TrainConfig) -> dict:
    if not cfg.data.val:
        raise ConfigError("data.val: no validation shards to evaluate on")
    model = load_model(resolved, cfg).eval()
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
    return {"checkpoint": resolved.describe(), "val_loss": val_loss,
            "val_ppl": math.exp(val_loss) if val_loss < 50 else float("inf"),
            "windows": count * cfg.batch.micro_batch_size}


def main_result(ckpt_path: str, config_path: str | None, overrides: list[str]) -> dict:
    resolved, cfg = eval_config(ckpt_path, config_path, overrides)
    result = evaluate_checkpoint(resolved, cfg)
    print(json.dumps(result))
    return result
