"""The token shard file format that llm.c and modded-nanogpt read, and the index that lists a split's shards.

A shard is a 256 x int32 little-endian header (magic 20240520, version 1, token count, the rest zero) followed by
the tokens as little-endian uint16. `read_shard` memory-maps one and checks the header against the file size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import WebtextError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
INDEX_NAME = "index.json"


class ShardError(WebtextError, ValueError):
    """A shard or index that is not what it claims to be; the message names the file."""

    hint = ("token shards are what `webtext tokenize` writes: rebuild them with `webtext tokenize --docs <out>/dedup "
            "--out <out> --force`, or point data.train / data.val at shards it wrote")


def shard_header(n_tokens: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, n_tokens)
    return header.tobytes()


def read_shard(path: str | Path) -> np.memmap:
    """The tokens of a shard as a read-only uint16 memmap, after checking magic, version and length."""
    path = Path(path)
    try:
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as err:
        raise ShardError(f"{path}: cannot read shard: {err.strerror}") from None
    if header.size < HEADER_INTS or header[0] != MAGIC:
        raise ShardError(f"{path}: not a token shard (magic {header[0] if header.size else None}, expected {MAGIC})")
    if header[1] != VERSION:
        raise ShardError(f"{path}: shard version {header[1]}, only {VERSION} (uint16 tokens) is supported")
    n_tokens = int(header[2])
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ShardError(f"{path}: header says {n_tokens} tokens ({expected} bytes) but the file has {actual} bytes")
    if n_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def read_index(path: str | Path) -> tuple[dict, Path]:
    """(index, directory of its shards) from an index.json or the directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except OSError as err:
        raise ShardError(f"{path}: cannot read shard index: {err.strerror}") from None
    except ValueError as err:
        raise ShardError(f"{path}: not valid JSON: {err}") from None
    if "splits" not in index or "tokenizer" not in index:
        raise ShardError(f"{path}: not a shard index (no 'splits' / 'tokenizer')")
    return index, path.parent
