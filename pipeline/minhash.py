"""MinHash signatures for many documents at once, bit-identical to datasketch's, and LSH band keys.

datasketch hashes each shingle and applies its permutations one shingle (`update`) or one document
(`update_batch`) at a time. `MinHasher` works on a whole batch of documents in a few numpy passes
(bench/dedup.py measures each step against datasketch's per-shingle loop):
1. Shingles are never built as Python objects: the batch's normalised texts are joined into one UTF-8 buffer and
   each word n-gram is a (start, length) span of it, found from the positions of the separators in the buffer.
2. xxh32 of every span at once (`xxh32_spans`: the xxHash32 algorithm in numpy, over unaligned 32-bit loads of
   the buffer, in cache-sized chunks); sha1 (datasketch's default) is one `hashlib.sha1` per span in a tight loop.
3. Permutations in a (num_perm, shingles) layout, cache-sized chunks, and per-document minima with
   `np.minimum.reduceat` along the contiguous axis (along axis 0 it is about 15x slower).

It reproduces datasketch exactly because it takes the permutation parameters from datasketch itself
(`MinHash(num_perm, seed, scheme).permutations`) and repeats its arithmetic in the same dtypes: for the default
`affine32` scheme, the MurmurHash3 finalizer then `a*h + b` wrapping in uint32; for `legacy`,
`((a*h + b) mod (2^61-1)) & (2^32-1)` in uint64, whose multiplication wraps modulo 2^64 before the modulus,
just as datasketch's does. (Drawing one's own multipliers below 2^32 with a 2^61-1 modulus gives correlated
permutations; see FACTS.md.) The shingle hash is datasketch's `sha1_hash32` or xxh32, several times cheaper.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import Literal

import numpy as np
import xxhash
from datasketch import MinHash

try:  # CPython's own SHA-1: on 30-byte inputs 1.2x faster than OpenSSL's (hashlib.sha1), whose setup dominates
    from _sha1 import sha1 as _sha1
except ImportError:  # another Python
    _sha1 = hashlib.sha1

_WORD = re.compile(r"\w+")
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)
# shingles per permutation step: a (128 x 4096) uint32 matrix stays in cache (measured: 2048-8192 within 10 %)
_CHUNK_SHINGLES = 4096
# spans per xxh32 step: its dozen temporaries stay in cache (measured: 1.1x faster than the whole batch at once)
_CHUNK_SPANS = 16384
_XXH_P1, _XXH_P2, _XXH_P3, _XXH_P4, _XXH_P5 = (
    np.uint32(p) for p in (2654435761, 2246822519, 3266489917, 668265263, 374761393))
_XXH_LANES = [np.uint32(v) for v in ((2654435761 + 2246822519) & 0xFFFFFFFF, 2246822519, 0, -2654435761 & 0xFFFFFFFF)]

# bytes.translate table for ASCII text: word characters lowered, NUL (the text separator) kept, other ASCII bytes
# to a space; bytes >= 0x80 come only from texts already normalised, where they are word characters
_ASCII_WORD_BYTES = bytes(
    b + 32 if 65 <= b <= 90 else b if chr(b).isalnum() or b in (0, 95) or b >= 128 else 32 for b in range(256))

# characters of text per shingle_spans call (about 1M shingles of 60 bytes of index arrays)
_GROUP_CHARS = 4 << 20

ShingleHash = Literal["xxh32", "sha1"]
Scheme = Literal["affine32", "legacy"]


def words(text: str) -> list[str]:
    """The normalised words of a text: lower case, runs of Unicode word characters (punctuation dropped)."""
    return _WORD.findall(text.lower())


def word_shingles(text: str, n: int = 5) -> list[bytes]:
    """The word n-grams of `text` (words joined by one space), UTF-8 encoded, in order, repeats included (MinHash
    and the shingle sets built from its hashes ignore them); a text shorter than n words is one shingle.
    The reference form of `shingle_spans`, for datasketch and tests."""
    tokens = words(text)
    if len(tokens) <= n:
        return [" ".join(tokens).encode()] if tokens else []
    joined = " ".join(tokens)
    data = joined.encode()
    # slices of the encoded text: byte offsets equal character offsets for ASCII, else count each word's bytes
    lengths = list(map(len, tokens)) if len(data) == len(joined) else [len(t.encode()) for t in tokens]
    starts = list(accumulate(lengths[:-1], lambda offset, length: offset + length + 1, initial=0))
    return [data[starts[i] : starts[i + n - 1] + lengths[i + n - 1]] for i in range(len(tokens) - n + 1)]


def shingle_spans(texts: Sequence[str], n: int = 5) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The shingles of `word_shingles` for every text, as spans of one buffer: (buffer, starts, lengths, offsets),
    shingle i being buffer[starts[i] : starts[i] + lengths[i]] and text t's shingles i in offsets[t]:offsets[t+1].

    The buffer holds each text's words, lower case, separated by one space (the text's own separators collapsed),
    the texts separated by a NUL byte. An ASCII text is lowered and split by a byte table and numpy (its word
    characters are [A-Za-z0-9_], as for `\\w`); any other text is normalised by `words` first (measured: the
    regex costs 3x the byte table)."""
    parts = [t if t.isascii() else " ".join(words(t)) for t in texts]
    joined = " \x00 ".join(parts)
    if joined.count("\x00") != max(len(parts) - 1, 0):  # a text's own NUL is a separator like any non-word byte
        joined = " \x00 ".join(p.replace("\x00", " ") for p in parts)
    raw = np.frombuffer(joined.encode().translate(_ASCII_WORD_BYTES), np.uint8)
    is_word = raw > 0x20
    keep = is_word | (raw == 0)
    keep[1:] |= is_word[:-1]  # of a run of spaces, the first after a word
    data = raw[keep]
    edges = np.diff(np.concatenate([[0], data > 0x20, [0]]).astype(np.int8))
    word_start, word_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    n_words = np.bincount(np.searchsorted(np.flatnonzero(data == 0), word_start), minlength=len(texts))
    per_text = np.where(n_words >= n, n_words - n + 1, n_words > 0)
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(per_text, out=offsets[1:])
    first_word = np.repeat(np.cumsum(n_words) - n_words, per_text)  # each shingle's text's first word
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1], per_text)  # each shingle's place in its text
    last = first_word + np.minimum(index + (n - 1), np.repeat(n_words, per_text) - 1)
    starts = word_start[first_word + index]
    return data.tobytes(), starts, word_end[last] - starts, offsets


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def xxh32_spans(buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`xxhash.xxh32_intdigest(buffer[s : s + l])` (seed 0) of every span, as uint32, without a Python call per span."""
    padded = buffer + bytes(19)  # reads of up to 16 bytes past a span's end fall in the padding, then are masked
    words32 = np.ndarray((len(buffer) + 16,), dtype="<u4", buffer=padded, strides=(1,))  # unaligned, every offset
    octets = np.frombuffer(padded, np.uint8)
    out = np.empty(len(starts), np.uint32)
    for i in range(0, len(starts), _CHUNK_SPANS):
        out[i : i + _CHUNK_SPANS] = _xxh32_chunk(words32, octets, starts[i : i + _CHUNK_SPANS],
                                                 lengths[i : i + _CHUNK_SPANS])
    return out


def _xxh32_chunk(words32: np.ndarray, octets: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    # XXH32 with seed 0 (github.com/Cyan4973/xxHash, doc/xxhash_spec.md): each step is computed for every span and
    # kept only where the span is long enough, so all spans move through the same numpy operations.
    p1, p2, p3, p4, p5 = _XXH_P1, _XXH_P2, _XXH_P3, _XXH_P4, _XXH_P5
    stripes = lengths >> 4
    h = lengths.astype(np.uint32)
    h += p5
    if len(stripes) and (max_stripes := int(stripes.max())):
        accs = [np.full(len(starts), initial) for initial in _XXH_LANES]  # four accumulators over 16-byte stripes
        for k in range(max_stripes):
            active = np.flatnonzero(stripes > k) if k else None  # the first stripe: all spans, kept where one is
            at = starts[active] if k else starts
            for lane, acc in enumerate(accs):
                x = words32[at + (16 * k + 4 * lane)]
                x *= p2
                x += acc[active] if k else acc
                x = _rotl(x, 13)
                x *= p1
                if k:
                    acc[active] = x
                else:
                    accs[lane] = x
        merged = lengths.astype(np.uint32)
        for acc, r in zip(accs, (1, 7, 12, 18)):
            merged += _rotl(acc, r)
        np.copyto(h, merged, where=stripes > 0)
    position = starts + (lengths & ~15)
    remaining = lengths & 15
    for j in range(3):  # then up to three 4-byte words
        x = words32[position + 4 * j]
        x *= p3
        x += h
        x = _rotl(x, 17)
        x *= p4
        np.copyto(h, x, where=remaining >= 4 * (j + 1))
    position += remaining & ~3
    for j in range(3):  # then up to three single bytes
        x = octets[position + j].astype(np.uint32)
        x *= p5
        x += h
        x = _rotl(x, 11)
        x *= p1
        np.copyto(h, x, where=(remaining & 3) > j)
    h ^= h >> np.uint32(15)
    h *= p2
    h ^= h >> np.uint32(13)
    h *= p3
    h ^= h >> np.uint32(16)
    return h


def sha1_spans(buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """datasketch's `sha1_hash32` (the first 4 bytes of the SHA-1 digest, little endian) of every span."""
    sha1 = _sha1
    # slicing bytes beats memoryview slices (measured 1.6x): a short copy is cheaper than a buffer export
    digests = b"".join([sha1(buffer[s:e]).digest() for s, e in zip(starts.tolist(), (starts + lengths).tolist())])
    return np.frombuffer(digests, "<u4").reshape(-1, 5)[:, 0].copy()


def sha1_hash32(data: bytes) -> int:
    """datasketch's default shingle hash (its `hashfunc.sha1_hash32`)."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


HASH_FUNCTIONS: dict[str, Callable[[bytes], int]] = {"xxh32": xxhash.xxh32_intdigest, "sha1": sha1_hash32}
SPAN_HASHES: dict[str, Callable[[bytes, np.ndarray, np.ndarray], np.ndarray]] = {"xxh32": xxh32_spans,
                                                                                 "sha1": sha1_spans}


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv *= m1
    hv ^= hv >> s2
    hv *= m2
    hv ^= hv >> s3
    return hv


def _groups(texts: Sequence[str], max_chars: int) -> Iterator[Sequence[str]]:
    start = size = 0
    for i, text in enumerate(texts):
        if size and size + len(text) > max_chars:
            yield texts[start:i]
            start, size = i, 0
        size += len(text)
    if start < len(texts) or not texts:
        yield texts[start:]


class MinHasher:
    """Signatures of many documents at once, equal to datasketch's MinHash with the same parameters."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: Scheme = "affine32", shingle_hash: ShingleHash = "xxh32"):
        self.num_perm, self.seed, self.scheme = num_perm, seed, scheme
        self.hashfunc = HASH_FUNCTIONS[shingle_hash]
        self.span_hash = SPAN_HASHES[shingle_hash]
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        self.dtype = np.uint32 if scheme == "affine32" else np.uint64
        self.a = np.asarray(a, dtype=self.dtype)[:, None]  # (num_perm, 1): permutations x shingles
        self.b = np.asarray(b, dtype=self.dtype)[:, None]
        self.empty = np.iinfo(np.uint32).max  # datasketch's value for a MinHash that saw nothing

    def hash_shingles(self, shingles: Sequence[bytes]) -> np.ndarray:
        hashfunc = self.hashfunc
        return np.fromiter((hashfunc(s) for s in shingles), dtype=np.uint32, count=len(shingles))

    def text_hashes(self, texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The 32-bit hashes of every text's word n-grams (`word_shingles`), flat, and each text's offsets in them.

        Texts go through `shingle_spans` in groups of about `_GROUP_CHARS` characters: its index arrays take some
        60 bytes per shingle, so a group bounds them (a batch of long documents would otherwise hold hundreds of MB).
        """
        hashes, counts = [], [np.zeros(1, np.int64)]
        for group in _groups(texts, _GROUP_CHARS):
            buffer, starts, lengths, offsets = shingle_spans(group, ngram)
            hashes.append(self.span_hash(buffer, starts, lengths))
            counts.append(np.diff(offsets))
        flat = np.concatenate(hashes) if hashes else np.zeros(0, np.uint32)
        return flat, np.cumsum(np.concatenate(counts))

    def shingle_hashes(self, texts: Sequence[str], ngram: int = 5) -> list[np.ndarray]:
        """Per text, `hash_shingles(word_shingles(text, ngram))`."""
        hashes, offsets = self.text_hashes(texts, ngram)
        return np.split(hashes, offsets[1:-1]) if len(texts) else []

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm, len(hashes)) permuted values of 32-bit shingle hashes."""
        if self.scheme == "affine32":
            permuted = self.a * _fmix32(hashes.astype(np.uint32))
            permuted += self.b
            return permuted
        hv = hashes.astype(np.uint64)
        return ((self.a * hv + self.b) % _MERSENNE) & _MAX_HASH32

    def signatures(self, shingle_hashes: Sequence[np.ndarray]) -> np.ndarray:
        """(n_docs, num_perm) uint32 signatures of documents given as arrays of 32-bit shingle hashes."""
        offsets = np.zeros(len(shingle_hashes) + 1, np.int64)
        np.cumsum([len(h) for h in shingle_hashes], out=offsets[1:])
        flat = np.concatenate(shingle_hashes) if len(shingle_hashes) else np.zeros(0, np.uint32)
        return self.signatures_flat(flat, offsets)

    def signatures_flat(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures of documents whose shingle hashes are hashes[offsets[d]:offsets[d+1]]."""
        nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
        starts, ends = offsets[nonempty], offsets[nonempty + 1]
        signatures = np.full((len(nonempty), self.num_perm), self.empty, dtype=np.uint32)
        for c0 in range(0, len(hashes), _CHUNK_SHINGLES):  # a chunk may cut a document: its minima combine
            c1 = min(c0 + _CHUNK_SHINGLES, len(hashes))
            first, last = np.searchsorted(ends, c0, "right"), np.searchsorted(starts, c1, "left")
            segments = np.maximum(starts[first:last], c0) - c0
            minima = np.minimum.reduceat(self._permuted(hashes[c0:c1]), segments, axis=1)
            np.minimum(signatures[first:last], minima.T, out=signatures[first:last], casting="unsafe")
        out = np.full((len(offsets) - 1, self.num_perm), self.empty, dtype=np.uint32)
        out[nonempty] = signatures
        return out

    def signatures_of_texts(self, texts: Sequence[str], ngram: int = 5) -> np.ndarray:
        return self.signatures_flat(*self.text_hashes(texts, ngram))


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
