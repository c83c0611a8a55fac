"""The training data loader: (B, T) batches of token windows from memory-mapped shards, deterministic per rank.

A split's shards (from the tokenize stage's `index.json`, or a list of shard files) are one token stream of N
tokens. Window w is tokens [w*T, w*T + T + 1): x is its first T tokens and y the last T, so consecutive windows
share one token and every token of the stream except the first is a target exactly once per epoch. There are
(N - 1) // T windows; the few tokens after the last full window are not served.

The windows are served by `training.sampler.EpochSampler`: each epoch a permutation of them drawn from
(seed, epoch), cut into global steps of B*W windows (W ranks, batch B each), with a global cursor that resumes
exactly, also with another world size or batch size. An epoch serves floor(n_windows / (B*W)) steps.
A different sequence length, seed or data is refused: the windows would differ.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

import numpy as np

from pipeline.shards import ShardError, read_index, read_shard
from pipeline.storage import is_uri
from training.sampler import EpochSampler
from training.storage import fetch_shards


class TokenStream:
    """The shards of one split as one random-access token sequence (memory-mapped, nothing loaded up front)."""

    def __init__(self, source: str | Path | list, split: str = "train"):
        self.paths = _shard_paths(source, split)
        self.shards = [read_shard(p) for p in self.paths]
        sizes = np.array([s.size for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.n_tokens = int(self.starts[-1])
        # Identifies the data for the cursor: shard names and sizes (cheap, and what changes when shards do).
        spec = ";".join(f"{Path(p).name}:{n}" for p, n in zip(self.paths, sizes))
        self.fingerprint = hashlib.sha256(spec.encode()).hexdigest()[:16]

    def read_into(self, out: np.ndarray, begin: int) -> None:
        """Fill `out` (any integer dtype) with tokens [begin, begin + len(out))."""
        k = int(np.searchsorted(self.starts, begin, side="right")) - 1
        local, filled = begin - int(self.starts[k]), 0
        while filled < out.size:
            take = min(out.size - filled, self.shards[k].size - local)
            out[filled : filled + take] = self.shards[k][local : local + take]
            filled += take
            k, local = k + 1, 0

    def read(self, begin: int, length: int) -> np.ndarray:
        """Tokens [begin, begin + length) as a uint16 array (a copy)."""
        out = np.empty(length, dtype=np.uint16)
        self.read_into(out, begin)
        return out


class TokenWindows:
    """Shuffled (B, T) training batches for rank `rank` of `world_size`, resumable with `state_dict()`."""

    def __init__(self, source: str | Path | list, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, split: str = "train"):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive (got {batch_size}, {seq_len})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.stream = source if isinstance(source, TokenStream) else TokenStream(source, split)
        self.seq_len = seq_len
        self.n_windows = max(0, (self.stream.n_tokens - 1) // seq_len)
        if self.n_windows < batch_size * world_size:
            raise ValueError(f"{self.n_windows} windows of {seq_len + 1} tokens in {self.stream.n_tokens} tokens: "
                             f"fewer than one global batch ({batch_size} x {world_size} ranks)")
        self.sampler = EpochSampler(self.n_windows, batch_size, rank, world_size, seed)

    def next_windows(self) -> np.ndarray:
        """This rank's next batch as a (B, T + 1) int64 array; all ranks advance the global cursor together."""
        return self.windows(self.sampler.next_ids())

    def windows(self, window_ids) -> np.ndarray:
        """Windows by id as a (len, T + 1) int64 array."""
        span = self.seq_len + 1
        begins = np.asarray(window_ids, dtype=np.int64) * self.seq_len
        shard_ids = np.searchsorted(self.stream.starts, begins, side="right") - 1
        locals_ = begins - self.stream.starts[shard_ids]
        batch = np.empty((len(begins), span), dtype=np.int64)
        for row, (k, local) in enumerate(zip(shard_ids.tolist(), locals_.tolist())):
            shard = self.stream.shards[k]
            if local + span <= shard.size:
                batch[row] = shard[local : local + span]
            else:  # the window runs into the next shard
                self.stream.read_into(batch[row], int(begins[row]))
        return batch

    def next_batch(self):
        """(x, y) int64 torch tensors of shape (B, T): y is x shifted by one token."""
        import torch

        windows = torch.from_numpy(self.next_windows())
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "seq_len": self.seq_len, "n_windows": self.n_windows,
                "data": self.stream.fingerprint, "batch_size": self.sampler.batch_size,
                "world_size": self.sampler.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (any rank's); batch size and world size may differ from the saving run's."""
        current = {"seq_len": self.seq_len, "n_windows": self.n_windows, "data": self.stream.fingerprint}
        for key, mine in current.items():
            if state[key] != mine:
                raise ValueError(f"data loader state: {key} was {state[key]!r}, this loader has {mine!r}")
        self.sampler.load_state_dict(state)


def validation_batches(source: str | Path | list, batch_size: int, seq_len: int, rank: int = 0,
                       world_size: int = 1, max_batches: int | None = None, split: str = "val"):
    """A fixed list of (x, y) batches of the split, the same on every call: windows in stream order, rank r taking
    every W-th batch-sized slice; every rank gets the same number of batches (a remainder is left out)."""
    import torch

    loader = TokenWindows(source, batch_size, seq_len, rank=0, world_size=1, split=split)
    n_batches = loader.n_windows // (batch_size * world_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    batches = []
    for b in range(n_batches):
        first = (b * world_size + rank) * batch_size
        windows = torch.from_numpy(loader.windows(range(first, first + batch_size)))
        batches.append((windows[:, :-1], windows[:, 1:]))
    return batches


def expand_shards(specs: list[str], split: str, cache_dir: str | None = None) -> list[str]:
    """Shard files from files, globs and tokenize output directories (the split's shards in their index.json),
    in a stable order. A URI's shards are fetched into this machine's cache (training/storage.py) and their local
    copies returned."""
    paths: list[str] = []
    for spec in specs:
        if is_uri(spec):
            found = fetch_shards(spec, split, cache_dir)
        elif os.path.isdir(spec):
            index, directory = read_index(spec)
            shards = index["splits"].get(split, {}).get("shards", [])
            found = [str(directory / shard["name"]) for shard in shards]
        elif any(c in spec for c in "*?["):
            found = sorted(glob.glob(spec))
        else:
            found = [spec] if os.path.isfile(spec) else []
        if not found:
            raise FileNotFoundError(f"data.{split}: no token shards at {spec!r}")
        paths.extend(found)
    return paths


def _shard_paths(source, split: str) -> list[Path]:
    if isinstance(source, (list, tuple)):
        if not source:
            raise ShardError(f"split {split!r}: no shard files given")
        return [Path(p) for p in source]
    return [Path(p) for p in expand_shards([str(source)], split)]
