"""MinHash signatures for many documents at once, bit-identical to datasketch's, and LSH band keys.

datasketch hashes each shingle and applies its permutations one shingle (`update`) or one document
(`update_batch`) at a time. `MinHasher` hashes the shingles of a whole batch of documents, applies every
permutation to all of them in one numpy expression and takes per-document minima with `np.minimum.reduceat`.

It reproduces datasketch exactly because it takes the permutation parameters from datasketch itself
(`MinHash(num_perm, seed, scheme).permutations`) and repeats its arithmetic in the same dtypes: for the default
`affine32` scheme, the MurmurHash3 finalizer then `a*h + b` wrapping in uint32; for `legacy`,
`((a*h + b) mod (2^61-1)) & (2^32-1)` in uint64, whose multiplication wraps modulo 2^64 before the modulus,
just as datasketch's does. (Drawing one's own multipliers below 2^32 with a 2^61-1 modulus gives correlated
permutations; see FACTS.md.) The shingle hash is datasketch's `sha1_hash32` or xxh32, five times cheaper.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Literal

import numpy as np
import xxhash
from datasketch import MinHash

_WORD = re.compile(r"\w+")
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)
# shingles per permutation step: a (2048 x 128) uint32 matrix stays in cache (measured: 2.3x faster than 32768)
_CHUNK_SHINGLES = 2048

ShingleHash = Literal["xxh32", "sha1"]
Scheme = Literal["affine32", "legacy"]


def words(text: str) -> list[str]:
    """The normalised words of a text: lower case, runs of Unicode word characters (punctuation dropped)."""
    return _WORD.findall(text.lower())


def word_shingles(text: str, n: int = 5) -> list[bytes]:
    """The word n-grams of `text` (words joined by one space), UTF-8 encoded, in order, repeats included (MinHash
    and the shingle sets built from its hashes ignore them); a text shorter than n words is one shingle."""
    tokens = words(text)
    if len(tokens) <= n:
        return [" ".join(tokens).encode()] if tokens else []
    joined = " ".join(tokens)
    data = joined.encode()
    # slices of the encoded text: byte offsets equal character offsets for ASCII, else count each word's bytes
    lengths = list(map(len, tokens)) if len(data) == len(joined) else [len(t.encode()) for t in tokens]
    starts = list(accumulate(lengths[:-1], lambda offset, length: offset + length + 1, initial=0))
    return [data[starts[i] : starts[i + n - 1] + lengths[i + n - 1]] for i in range(len(tokens) - n + 1)]


def sha1_hash32(data: bytes) -> int:
    """datasketch's default shingle hash (its `hashfunc.sha1_hash32`)."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


HASH_FUNCTIONS: dict[str, Callable[[bytes], int]] = {"xxh32": xxhash.xxh32_intdigest, "sha1": sha1_hash32}


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


class MinHasher:
    """Signatures of many documents at once, equal to datasketch's MinHash with the same parameters."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: Scheme = "affine32", shingle_hash: ShingleHash = "xxh32"):
        self.num_perm, self.seed, self.scheme = num_perm, seed, scheme
        self.hashfunc = HASH_FUNCTIONS[shingle_hash]
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        self.dtype = np.uint32 if scheme == "affine32" else np.uint64
        self.a = np.asarray(a, dtype=self.dtype)[None, :]
        self.b = np.asarray(b, dtype=self.dtype)[None, :]
        self.empty = np.iinfo(np.uint32).max  # datasketch's value for a MinHash that saw nothing

    def hash_shingles(self, shingles: Sequence[bytes]) -> np.ndarray:
        hashfunc = self.hashfunc
        return np.fromiter((hashfunc(s) for s in shingles), dtype=np.uint32, count=len(shingles))

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(len(hashes), num_perm) permuted values of 32-bit shingle hashes."""
        if self.scheme == "affine32":
            permuted = np.multiply.outer(_fmix32(hashes.astype(np.uint32)), self.a[0])
            permuted += self.b[0]
            return permuted
        hv = hashes.astype(np.uint64)[:, None]
        return ((hv * self.a + self.b) % _MERSENNE) & _MAX_HASH32

    def signatures(self, shingle_hashes: Sequence[np.ndarray]) -> np.ndarray:
        """(n_docs, num_perm) uint32 signatures of documents given as arrays of 32-bit shingle hashes."""
        out = np.full((len(shingle_hashes), self.num_perm), self.empty, dtype=np.uint32)
        batch: list[int] = []
        size = 0
        for i, hashes in enumerate(shingle_hashes):
            if len(hashes) >= _CHUNK_SHINGLES:
                for start in range(0, len(hashes), _CHUNK_SHINGLES):
                    chunk_min = self._permuted(hashes[start : start + _CHUNK_SHINGLES]).min(axis=0)
                    np.minimum(out[i], chunk_min, out=out[i], casting="unsafe")
                continue
            if len(hashes) == 0:
                continue
            if size + len(hashes) > _CHUNK_SHINGLES:
                self._fill(out, batch, shingle_hashes)
                batch, size = [], 0
            batch.append(i)
            size += len(hashes)
        self._fill(out, batch, shingle_hashes)
        return out

    def _fill(self, out: np.ndarray, batch: list[int], shingle_hashes: Sequence[np.ndarray]) -> None:
        if not batch:
            return
        parts = [shingle_hashes[i] for i in batch]
        starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        permuted = self._permuted(np.concatenate(parts))
        out[batch] = np.minimum.reduceat(permuted, starts, axis=0)

    def signatures_of_texts(self, texts: Sequence[str], ngram: int = 5) -> np.ndarray:
        return self.signatures([self.hash_shingles(word_shingles(t, ngram)) for t in texts])


# Odd 64-bit multipliers for combining a band's values into one key; fixed so keys agree across runs and nodes.
_BAND_MULTIPLIERS = np.random.RandomState(0x5EED).randint(0, 1 << 63, size=1024, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 keys: documents share a key in band i iff (barring 2^-64 collisions) they agree on
    that band's `rows` signature values."""
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds the {signatures.shape[1]} permutations")
    if rows > len(_BAND_MULTIPLIERS):
        raise ValueError(f"at most {len(_BAND_MULTIPLIERS)} rows per band")
    values = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    mixed = (values * _BAND_MULTIPLIERS[:rows]).sum(axis=2, dtype=np.uint64)  # wraps modulo 2^64
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xFF51AFD7ED558CCD)
    mixed ^= mixed >> np.uint64(33)
    return mixed


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """The chance that two documents of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets of shingle hashes (sorted, unique arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
