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


class ShardWindows:
    """A token-window loader for tests with the interface training/loop.py uses (the project's loader is
    `training.data.TokenWindows`): windows of seq_len + 1 tokens at multiples of seq_len, shuffled per epoch by
    the seed, dealt round-robin to ranks; the cursor is (epoch, position)."""

    def __init__(self, shard_paths, batch_size, seq_len, rank=0, world_size=1, seed=0):
        self.shards = []
        for path in shard_paths:
            header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
            assert header[0] == SHARD_MAGIC and header[1] == SHARD_VERSION, path
            self.shards.append(np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_INTS * 4,
                                         shape=(int(header[2]),)))
        self.windows = [(s, start) for s, tokens in enumerate(self.shards)
                        for start in range(0, len(tokens) - seq_len, seq_len)]
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.position = 0, 0
        self._order = self._shuffle()

    def _shuffle(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.windows))

    def next_batch(self):
        import torch

        rows = []
        for _ in range(self.batch_size):
            index = self.position * self.world_size + self.rank
            if index >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle()
                index = self.rank
            shard, start = self.windows[self._order[index]]
            rows.append(np.asarray(self.shards[shard][start:start + self.seq_len + 1], dtype=np.int64))
            self.position += 1
        batch = torch.from_numpy(np.stack(rows))
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._shuffle()


def tiny_config(data: dict[str, list[str]], out_dir, **overrides) -> dict:
    """A TrainConfig dict for a 2-layer, 64-wide model on a 512-token vocabulary: a step takes milliseconds."""
    config = {
        "out_dir": str(out_dir), "max_steps": 8, "seed": 7, "precision": "fp32",
        "model": {"size": "tiny", "block_size": 32, "vocab_size": 512, "pad_vocab_to": 64},
        "data": {"train": data["train"], "val": data["val"], "loader": "tests.training_helpers:ShardWindows"},
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
