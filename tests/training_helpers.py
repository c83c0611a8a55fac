"""Helpers for the training tests: write token shards in the llm.c layout, encode real text offline, small configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    """One shard: 256 int32 header (magic, version, token count), then the tokens as uint16."""
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, len(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())
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

    train = [str(write_shard(root / f"train_{i:06d}.bin", stream(tokens_per_shard))) for i in range(n_train)]
    val = [str(write_shard(root / "val_000000.bin", stream(n_val_tokens)))]
    index = {"shards": [{"split": "train", "file": Path(p).name, "tokens": tokens_per_shard} for p in train]
             + [{"split": "val", "file": Path(val[0]).name, "tokens": n_val_tokens}]}
    (root / "index.json").write_text(json.dumps(index))
    return {"train": train, "val": val}


def gpt2_encoding(shared_dir: Path):
    """tiktoken's GPT-2 encoding built offline from OpenAI's files (../shared/FACTS.md)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(shared_dir / "vocab.bpe"),
                                            encoder_json_file=str(shared_dir / "encoder.json"))
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("gpt2", pat_str=pat, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
