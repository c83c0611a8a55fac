"""`webtext eval` in one process gives the validation loss the run's ranks computed, for every objective."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import tiny_config, write_token_dataset
from training import checkpoint
from training.config import TrainConfig
from training.evaluate import evaluate_checkpoint
from training.resolve import resolve
from training.loop import build_model, validation_batches


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_eval_matches_the_ranks_even_when_the_validation_set_wraps(objective, tmp_path):
    """A validation set smaller than `eval.batches` global batches: each rank's loader starts a new epoch after
    n_windows // (B x W) steps, which one loader reading W x batches does not (it wraps after n_windows // B)."""
    data = write_token_dataset(tmp_path / "tokens", n_train=1, tokens_per_shard=2_000, n_val_tokens=10 * 32 + 1)
    cfg = TrainConfig.model_validate(tiny_config(data, tmp_path / "run", **{
        "model.objective": objective, "launch.launcher": "torchrun", "launch.num_workers": 2,
        "batch.micro_batch_size": 2, "batch.global_batch_size": 4, "batch.grad_accum_steps": None,
        "eval.batches": 4}))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = tmp_path / "run" / "checkpoints" / checkpoint.tag_for(1)
    ckpt.mkdir(parents=True)
    save_file({k: v for k, v in model.state_dict().items() if k != "lm_head.weight"},
              str(ckpt / checkpoint.FP32_EXPORT))
    (ckpt / "COMPLETE").write_text(json.dumps({"step": 1, "files": {}}))

    with torch.no_grad():  # what the run's evaluate() averages: every rank's batches
        losses = [model(x, y)[1].item() for rank in range(2)
                  for x, y in validation_batches(cfg, model.config, rank, 2, cfg.eval.batches)]
    assert evaluate_checkpoint(resolve(ckpt), cfg)["val_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
