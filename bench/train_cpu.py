"""Training throughput on CPU: our training step (training/loop.py's `Stepper` on the DeepSpeed engine, ZeRO-1,
1 process, the project's loader reading a shard) against a plain PyTorch loop (AdamW, clipping, the same schedule)
with the same model and batch. Model: 4 layers, 256 wide, GPT-2's 50,257-token vocabulary, batch 8 x 256 tokens,
fp32, 2 threads. The two alternate step by step, so a machine whose load changes slows both alike.

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
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.shards import shard_header  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import param_groups  # noqa: E402
from training.model import GPT  # noqa: E402

BATCH, SEQ, WARMUP, STEPS = 8, 256, 2, 12
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


class PlainPyTorch:
    """The textbook loop on the same model, batch and optimizer settings."""

    def __init__(self, cfg: TrainConfig, tokens: np.ndarray):
        torch.manual_seed(0)
        self.model = GPT(cfg.model.gpt_config())
        o = cfg.optim
        self.opt = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: cfg.lr_at(s) / o.lr)
        self.clip, self.tokens, self.rng = o.grad_clip, tokens, np.random.default_rng(0)

    def step(self) -> None:
        starts = self.rng.integers(0, len(self.tokens) - SEQ - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([self.tokens[s:s + SEQ + 1] for s in starts]).astype(np.int64))
        _, loss = self.model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def ours(cfg: TrainConfig):
    """Our step as train_worker runs it: engine, loader and Stepper built by the same functions."""
    from training.engine import build_engine, init_distributed
    from training.loop import Stepper, build_model, make_loader, seed_everything

    d = init_distributed(cfg)
    _, accum, _ = cfg.batch.resolve(d.world_size)
    seed_everything(cfg.seed)
    engine = build_engine(build_model(cfg), cfg, d.world_size)
    stepper = Stepper(engine, cfg, make_loader(cfg, "train", d.rank, d.world_size, cfg.seed), d, accum)
    return stepper.step


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return BATCH * SEQ / (time.perf_counter() - t0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = np.random.default_rng(0).integers(0, 50257, size=400_000).astype("<u2")
        (tmp / "data").mkdir()
        with open(tmp / "data" / "part-train-00000.bin", "wb") as f:
            f.write(shard_header(len(tokens)))
            f.write(tokens.tobytes())
        cfg = config(tmp / "data", tmp / "ours")
        our_step = ours(cfg)  # sets 2 threads, as it would for a run
        torch.set_num_threads(THREADS)
        plain = PlainPyTorch(cfg, tokens)
        base, mine = [], []
        for step in range(WARMUP + STEPS):
            if step % 2:  # alternate which goes first, so neither always inherits the other's warm caches
                rates = (timed(plain.step), timed(our_step, step))
            else:
                rates = tuple(reversed((timed(our_step, step), timed(plain.step))))
            if step >= WARMUP:
                base.append(rates[0])
                mine.append(rates[1])
    plain_median, ours_median = statistics.median(base), statistics.median(mine)
    print(f"plain PyTorch loop: {plain_median:,.0f} tokens/s (median of {len(base)} steps)")
    print(f"webtext Stepper (DeepSpeed ZeRO-1, 1 process): {ours_median:,.0f} tokens/s (median of {len(mine)})")
    print(f"RESULT train_vs_torch={ours_median / plain_median:.3f} goal>=0.85")


if __name__ == "__main__":
    main()
