"""The training loader: windows from memory-mapped shards, deterministic, disjoint across ranks, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.shards import ShardError, read_shard, shard_header
from tests.helpers import steps_per_epoch
from training.data import TokenStream, TokenWindows, validation_batches

T = 16
SIZES = (1000, 457, 2000)  # unequal shards, so windows cross shard boundaries


@pytest.fixture
def shards(tmp_path):
    """Shards whose token at stream position p is p (positions stay under 65,536), so a window names itself."""
    paths, start = [], 0
    for k, size in enumerate(SIZES):
        path = tmp_path / f"part-train-{k:05d}.bin"
        path.write_bytes(shard_header(size) + np.arange(start, start + size, dtype="<u2").tobytes())
        paths.append(path)
        start += size
    return paths


def starts(x: torch.Tensor) -> list[int]:
    return x[:, 0].tolist()


def epoch_windows(shards, world_size: int, batch_size: int = 4, seed: int = 0) -> list[list[int]]:
    loaders = [TokenWindows(shards, batch_size, T, rank=r, world_size=world_size, seed=seed)
               for r in range(world_size)]
    return [[s for _ in range(steps_per_epoch(loaders[0])) for s in starts(loader.next_batch()[0])]
            for loader in loaders]


def test_windows_are_contiguous_and_shifted_by_one(shards):
    loader = TokenWindows(shards, 8, T)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (8, T) and x.dtype == y.dtype == torch.int64
    assert (y[:, :-1] == x[:, 1:]).all()
    expected = x[:, :1] + torch.arange(T)  # token value = stream position
    assert (x == expected).all() and (y == expected + 1).all()
    assert all(s % T == 0 for s in starts(x))
    assert loader.n_windows == (sum(SIZES) - 1) // T


def test_a_window_across_shards_is_read_whole(shards):
    stream = TokenStream(shards)
    assert stream.read(990, 30).tolist() == list(range(990, 1020))
    assert stream.read(1000 + 450, 20).tolist() == list(range(1450, 1470))


def test_same_seed_same_batches_other_seed_other_batches(shards):
    a, b, c = (TokenWindows(shards, 4, T, seed=s) for s in (7, 7, 8))
    batches_a = [a.next_batch()[0] for _ in range(10)]
    assert all(torch.equal(x, b.next_batch()[0]) for x in batches_a)
    assert not all(torch.equal(x, c.next_batch()[0]) for x in batches_a)


def test_an_epoch_serves_each_window_once_and_ranks_are_disjoint(shards):
    per_rank = epoch_windows(shards, world_size=3)
    served = [s for rank in per_rank for s in rank]
    assert len(served) == len(set(served))
    n_windows = (sum(SIZES) - 1) // T
    assert n_windows - 3 * 4 < len(served) <= n_windows  # only the remainder under one global batch is left
    assert all(len(rank) == len(per_rank[0]) for rank in per_rank)
    assert epoch_windows(shards, world_size=3) == per_rank  # deterministic


def test_next_epoch_is_a_new_permutation(shards):
    loader = TokenWindows(shards, 4, T, seed=1)
    first = [s for _ in range(steps_per_epoch(loader)) for s in starts(loader.next_batch()[0])]
    second = [s for _ in range(steps_per_epoch(loader)) for s in starts(loader.next_batch()[0])]
    assert loader.sampler.epoch == 1 and first != second and len(set(second)) == len(second)


def test_resume_continues_with_exactly_the_next_batch(shards):
    loader = TokenWindows(shards, 4, T, rank=1, world_size=2, seed=3)
    for _ in range(steps_per_epoch(loader) + 5):  # into the second epoch
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(20)]
    resumed = TokenWindows(shards, 4, T, rank=1, world_size=2, seed=3)
    resumed.load_state_dict(state)
    for x, y in expected:
        rx, ry = resumed.next_batch()
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resume_with_another_world_size_neither_repeats_nor_skips(shards):
    before = [TokenWindows(shards, 4, T, rank=r, world_size=2, seed=5) for r in range(2)]
    served = []
    for _ in range(10):
        for loader in before:
            served += starts(loader.next_batch()[0])
    state = before[0].state_dict()
    after = [TokenWindows(shards, 4, T, rank=r, world_size=3, seed=5) for r in range(3)]
    for loader in after:
        loader.load_state_dict(state)
    while after[0].sampler.epoch == 0 and after[0].sampler.position + 12 <= after[0].n_windows:
        for loader in after:
            served += starts(loader.next_batch()[0])
    assert len(served) == len(set(served))
    permutation = np.random.default_rng([5, 0]).permutation(after[0].n_windows)
    assert served == [int(w) * T for w in permutation[: len(served)]]  # the epoch's order, no gap


def test_state_from_other_data_or_sequence_length_is_refused(shards, tmp_path):
    state = TokenWindows(shards, 4, T, seed=1).state_dict()
    with pytest.raises(ValueError, match="seq_len"):
        TokenWindows(shards, 4, T * 2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        TokenWindows(shards, 4, T, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="n_windows|data"):
        TokenWindows(shards[:2], 4, T, seed=1).load_state_dict(state)


def test_validation_batches_are_fixed_and_split_across_ranks(shards):
    full = validation_batches(shards, 4, T, split="train")
    assert len(full) == ((sum(SIZES) - 1) // T) // 4
    assert [starts(x) for x, _ in full[:2]] == [[0, 16, 32, 48], [64, 80, 96, 112]]
    rank0 = validation_batches(shards, 4, T, rank=0, world_size=2, max_batches=3)
    rank1 = validation_batches(shards, 4, T, rank=1, world_size=2, max_batches=3)
    assert len(rank0) == len(rank1) == 3
    assert [starts(x) for x, _ in rank0] == [starts(full[i][0]) for i in (0, 2, 4)]
    assert [starts(x) for x, _ in rank1] == [starts(full[i][0]) for i in (1, 3, 5)]


def test_corrupt_shards_are_named(tmp_path, shards):
    bad_magic = tmp_path / "bad.bin"
    bad_magic.write_bytes(np.zeros(300, "<i4").tobytes())
    with pytest.raises(ShardError, match="bad.bin: not a token shard"):
        read_shard(bad_magic)
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(shards[0].read_bytes()[:-10])
    with pytest.raises(ShardError, match="short.bin: header says 1000 tokens"):
        read_shard(truncated)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenWindows(shards, 64, 64, world_size=4)
