"""Sampling speed on CPU: new tokens/s of `training.generate` with the KV cache vs without it (the whole prefix
recomputed per token), and the same two for transformers' GPT2LMHeadModel.generate on the same weights (our HF
export), in one run. Greedy decoding, so all four produce the same tokens (checked).

Model: GPT-2's vocabulary, 4 layers x 256 wide (a small model a CPU samples from in seconds), prompt 48 tokens,
64 new tokens, batch 1 and batch 4 (left padded). Each figure is the median of 3 runs after one warm-up run.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import functools
import os
import statistics
import tempfile
import time

import torch

from training.generate import Sampling, generate_ids
from training.hf import export_hf
from training.model import GPT, GPTConfig

PROMPT_TOKENS, NEW_TOKENS, REPEATS = 48, 64, 3
GOAL_RATIO = 3.0  # cached generation at least 3x the tokens/s of uncached at this length


def timed(fn) -> tuple[float, object]:
    times, result = [], fn()  # warm-up: first-call allocations and thread start-up are not sampling speed
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=50257)
    model = GPT(config).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 50256, (PROMPT_TOKENS - 7 * i,), generator=gen).tolist() for i in range(4)]

    from transformers import GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, config, tmp)
        hf = GPT2LMHeadModel.from_pretrained(tmp).eval()

    def ours(batch, cache):
        return generate_ids(model, batch, Sampling(max_new_tokens=NEW_TOKENS, temperature=0.0, stop_ids=(),
                                                   use_cache=cache))

    def theirs(batch, cache):
        longest = max(map(len, batch))
        ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              do_sample=False, use_cache=cache, pad_token_id=0, eos_token_id=None)
        return [row[longest:].tolist() for row in out]

    ratios = []
    for batch in (prompts[:1], prompts):
        rates = {}
        outputs = {}
        for name, fn in (("ours", ours), ("transformers", theirs)):
            for cache in (True, False):
                seconds, outputs[name, cache] = timed(functools.partial(fn, batch, cache))
                rates[name, cache] = len(batch) * NEW_TOKENS / seconds
                print(f"batch {len(batch)}  {name:12s} cache={'on ' if cache else 'off'}  "
                      f"{rates[name, cache]:8.1f} new tokens/s  ({seconds:.2f} s)")
        same = len({str(v) for v in outputs.values()}) == 1
        print(f"batch {len(batch)}  same greedy tokens in all four: {same}")
        if not same:
            raise SystemExit("greedy outputs differ between cached/uncached or ours/transformers")
        ratio = rates["ours", True] / rates["ours", False]
        ratios.append(ratio)
        print(f"batch {len(batch)}  ours cached/uncached {ratio:.2f}x; transformers cached/uncached "
              f"{rates['transformers', True] / rates['transformers', False]:.2f}x; ours/transformers cached "
              f"{rates['ours', True] / rates['transformers', True]:.2f}x")
    print(f"RESULT generate_cached_vs_uncached={min(ratios):.2f} goal>={GOAL_RATIO}")


if __name__ == "__main__":
    main()
