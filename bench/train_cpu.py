"""Training throughput on CPU: our training function (DeepSpeed engine, ZeRO-1, 1 process, the real loader reading
shards) against a plain PyTorch loop (AdamW, clipping, the same schedule) with the same model and batch, in the
same run. Model: 4 layers, 256 wide, GPT-2's 50,257-token vocabulary, batch 8 x 256 tokens, fp32, 2 threads.

Prints tokens/s medians over steps after warm-up, then `RESULT train_vs_torch=<ratio> goal>=0.85`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
if os.environ.get("GLIBC_TUNABLES") != TUNABLES:  # ../shared/FACTS.md: glibc's malloc costs 25-40 % otherwise
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNABLES})

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # not bench/: its tokenize.py would shadow the standard library's

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.shards import shard_header  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import param_groups  # noqa: E402
from training.metrics import read_metrics  # noqa: E402
from training.model import GPT  # noqa: E402

BATCH, SEQ, WARMUP, STEPS = 8, 256, 2, 8
THREADS = min(2, os.cpu_count() or 1)


def config(data_dir: Path, out_dir: Path) -> TrainConfig:
    return TrainConfig.model_validate({
        "out_dir": str(out_dir), "max_steps": WARMUP + STEPS, "seed": 0, "precision": "fp32",
        "model": {"size": "tiny", "n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": SEQ, "pad_vocab_to": 64},
        "data": {"train": [str(data_dir / "part-train-00000.bin")], "val": []},
        "batch": {"seq_len": SEQ, "micro_batch_size": BATCH},
        "optim": {"lr": 6e-4, "warmup_steps": 2},
        "zero": {"stage": 1},
        "checkpoint": {"every": 0, "resume": False},
        "log": {"every": 1, "tensorboard": False},
        "launch": {"launcher": "local", "threads_per_worker": THREADS},
    })


def plain_pytorch(cfg: TrainConfig, tokens: np.ndarray) -> list[float]:
    """tokens/s per step of the textbook loop on the same model, batch and optimizer settings."""
    torch.manual_seed(0)
    model = GPT(cfg.model.gpt_config())
    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.lr_at(s) / o.lr)
    rng = np.random.default_rng(0)
    rates = []
    for step in range(WARMUP + STEPS):
        t0 = time.perf_counter()
        starts = rng.integers(0, len(tokens) - SEQ - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([tokens[s:s + SEQ + 1] for s in starts]).astype(np.int64))
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= WARMUP:
            rates.append(BATCH * SEQ / (time.perf_counter() - t0))
    return rates


def ours(cfg: TrainConfig) -> list[float]:
    from training.loop import train_worker

    train_worker(cfg.model_dump(mode="json"))
    records = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if "tokens_per_s" in r]
    return [r["tokens_per_s"] for r in records if r["step"] > WARMUP]


def main() -> None:
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = np.random.default_rng(0).integers(0, 50257, size=400_000).astype("<u2")
        (tmp / "data").mkdir()
        with open(tmp / "data" / "part-train-00000.bin", "wb") as f:
            f.write(shard_header(len(tokens)))
            f.write(tokens.tobytes())
        base = plain_pytorch(config(tmp / "data", tmp / "plain"), tokens)
        mine = ours(config(tmp / "data", tmp / "ours"))
        base += plain_pytorch(config(tmp / "data", tmp / "plain"), tokens)  # before and after: drift cancels
    plain_median, ours_median = statistics.median(base), statistics.median(mine)
    print(f"plain PyTorch loop: {plain_median:,.0f} tokens/s (median of {len(base)} steps)")
    print(f"webtext train_worker (DeepSpeed ZeRO-1, 1 process): {ours_median:,.0f} tokens/s (median of {len(mine)})")
    print(f"RESULT train_vs_torch={ours_median / plain_median:.3f} goal>=0.85")


if __name__ == "__main__":
    main()
