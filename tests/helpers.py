"""Helpers for the training tests: token shards in the tokenize stage's format, real text encoded offline, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.shards import shard_header


def steps_per_epoch(loader) -> int:
    """Global steps a training loader serves per epoch (its sampler drops the remainder of B x W)."""
    return loader.sampler.n_items // loader.sampler.global_batch


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    """One shard in the tokenize stage's format (pipeline/shards.py): the llm.c header, then uint16 tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(shard_header(len(tokens)))
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
    return path


def write_token_dataset(root: Path, vocab_size: int = 512, n_train: int = 3, tokens_per_shard: int = 20_000,
                        n_val_tokens: int = 8_000, seed: int = 0) -> dict[str, list[str]]:
    """Shards of a learnable token stream (a noisy repeating pattern, so loss falls fast) under root/."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, vocab_size, size=97)

    def stream(n: int) -> np.ndarray:
        tokens = np.resize(pattern, n)
        noise = rng.random(n) < 0.1
        tokens[noise] = rng.integers(0, vocab_size, size=int(noise.sum()))
        return tokens

    train = [str(write_shard(root / f"part-train-{i:05d}.bin", stream(tokens_per_shard))) for i in range(n_train)]
    val = [str(write_shard(root / "part-val-00000.bin", stream(n_val_tokens)))]
    return {"train": train, "val": val}


def gpt2_encoding(shared_dir: Path):
    """tiktoken's GPT-2 encoding built offline from OpenAI's files (../shared/FACTS.md)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(shared_dir / "vocab.bpe"),
                                            encoder_json_file=str(shared_dir / "encoder.json"))
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("gpt2", pat_str=pat, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def tiny_config(data: dict[str, list[str]], out_dir, **overrides) -> dict:
    """A TrainConfig dict for a 2-layer, 64-wide model on a 512-token vocabulary: a step takes milliseconds."""
    config = {
        "out_dir": str(out_dir), "max_steps": 8, "seed": 7, "precision": "fp32",
        "model": {"size": "tiny", "block_size": 32, "vocab_size": 512, "pad_vocab_to": 64},
        "data": {"train": data["train"], "val": data["val"]},
        "batch": {"seq_len": 32, "micro_batch_size": 4, "grad_accum_steps": 1},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.1, "grad_clip": 1.0},
        "zero": {"stage": 0},
        "checkpoint": {"every": 4, "keep_last": 2},
        "eval": {"every": 4, "batches": 2},
        "log": {"every": 1, "tensorboard": False},
        "launch": {"launcher": "local", "num_workers": 1},
    }
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def run_tiny(data: dict[str, list[str]], out_dir, **overrides) -> dict:
    """Launch a `tiny_config` run (its launcher, in this process or as its ranks) and return its summary."""
    from training.config import TrainConfig
    from training.launch import launch

    return launch(TrainConfig.model_validate(tiny_config(data, out_dir, **overrides)))


def parse_transcript(template, text: str) -> list[dict]:
    """Messages back from a dialogue the template rendered: the inverse of the template on valid messages."""
    from training.finetune_data import ROLES, FinetuneDataError

    messages, rest = [], text
    headers = {template.header(r): r for r in ROLES}
    while rest:
        role = next((r for h, r in headers.items() if rest.startswith(h)), None)
        if role is None:
            raise FinetuneDataError(f"transcript: expected a role header at {rest[:40]!r}")
        rest = rest[len(template.header(role)):]
        end = template.end_of_turn if role == "assistant" else template.turn_separator
        if role != "assistant":
            # a system/user turn ends at the separator that precedes the next header
            cut = min((rest.find(template.turn_separator + h) for h in headers if
                       rest.find(template.turn_separator + h) >= 0), default=-1)
            if cut < 0:
                if not rest.endswith(end):
                    raise FinetuneDataError(f"transcript: unterminated {role} turn")
                cut = len(rest) - len(end)
        else:
            cut = rest.find(end)
            if cut < 0:
                raise FinetuneDataError("transcript: assistant turn without end-of-turn marker")
        messages.append({"role": role, "content": rest[:cut]})
        rest = rest[cut + len(end):]
    return messages
