"""Metrics: the peak-FLOPs table and MFU, the JSONL log (NaN, resumed steps), the loss-curve PNG."""

from __future__ import annotations

import json

import pytest
import torch

from training.metrics import MetricsLog, losses_by_step, mfu, peak_flops
from training.model import GPT, GPTConfig


def test_peak_flops_by_device_name_and_unknown_elsewhere():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "bf16") == 312e12
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta
    assert peak_flops("cpu", "fp32") is None
    assert mfu(1000.0, 1e9, None, 1) is None


def test_mfu_of_gpt2_matches_nanogpt_accounting():
    with torch.device("meta"):
        model = GPT(GPTConfig.named("gpt2"))
    # nanoGPT: 6N + 12 L H Q T per token, N without position embeddings.
    n = model.num_params()
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024
    # 150k tokens/s on one A100 in bf16 is about 37 % MFU (nanoGPT's reported figure for gpt2 at 1024).
    assert mfu(150e3, model.flops_per_token(1024), peak_flops("NVIDIA A100-SXM4-80GB", "bf16"), 1) == \
        pytest.approx(0.41, abs=0.01)


def test_jsonl_log_keeps_nan_readable_and_a_resumed_run_drops_the_steps_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, tensorboard=True)
    log.log(1, loss=5.0, lr=1e-3, mfu=None)
    log.log(2, loss=float("nan"), lr=1e-3, mfu=None)
    log.log(2, val_loss=4.5, val_ppl=90.0)
    log.log(3, loss=4.9, lr=1e-3, mfu=None)  # after the checkpoint at step 2: the killed run's
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a line the kill cut short
    log = MetricsLog(tmp_path, enabled=True, tensorboard=False, start_step=2)  # resumed from step 2
    log.log(3, loss=4.8, lr=1e-3, mfu=None)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 2, 3]  # one line per step and kind, in any reader
    assert lines[0]["mfu"] == "unknown" and lines[1]["loss"] == "nan"
    assert losses_by_step(tmp_path / "metrics.jsonl") == {1: 5.0, 3: 4.8}
    assert losses_by_step(tmp_path / "metrics.jsonl", "val_loss") == {2: 4.5}
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(tmp_path.glob(".*tmp*")), "rewritten through a temporary file renamed over it"
    MetricsLog(tmp_path, enabled=True, tensorboard=False, plot=False).close()  # a run from scratch: no old curve
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_other_ranks_write_nothing(tmp_path):
    log = MetricsLog(tmp_path / "rank1", enabled=False)
    log.log(1, loss=1.0)
    log.close()
    assert not (tmp_path / "rank1").exists()
