"""MinHash: bit-identical to datasketch for the same seed and permutations; band keys; components; pair rules."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import xxhash
from datasketch import MinHash

from pipeline.dedup import connected_components, group_pairs
from pipeline import minhash
from pipeline.minhash import (MinHasher, band_keys, candidate_probability, jaccard, sha1_hash32, sha1_spans,
                              shingle_spans, word_shingles, xxh32_spans)


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 600))) for _ in range(n)]
    return texts + ["", "one two", "Punctuation, only! Words?"]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("shingle_hash", ["xxh32", "sha1"])
@pytest.mark.parametrize("seed,num_perm", [(1, 128), (7, 64)])
def test_signatures_equal_datasketch(scheme, shingle_hash, seed, num_perm):
    hashfunc = {"xxh32": xxhash.xxh32_intdigest, "sha1": sha1_hash32}[shingle_hash]
    texts = random_texts(40, seed)
    ours = MinHasher(num_perm, seed, scheme, shingle_hash).signatures_of_texts(texts)
    for text, signature in zip(texts, ours):
        reference = MinHash(num_perm=num_perm, seed=seed, scheme=scheme, hashfunc=hashfunc)
        for shingle in word_shingles(text):  # the per-shingle loop, datasketch's reference path
            reference.update(shingle)
        assert np.array_equal(reference.hashvalues.astype(np.uint64), signature.astype(np.uint64))


def pinned_texts() -> list[str]:
    rng = random.Random(17)
    vocab = [f"w{i}" for i in range(500)] + ["Straße", "ΟΔΟΣ", "naïve", "İstanbul", "日本語", "x_y", "A1"]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(0, 300))) + rng.choice(["", ".", " !?", "\n\t"])
             for _ in range(200)]
    return texts + ["", "one", "a b c d e", "a b c d e f", "Punctuation, only! Words?", "\x00 nul\x00inside", "— … —"]


# sha256 of the signatures of pinned_texts() as the per-document implementation before the batch one (347d9c3)
# computed them: the batch shingling and hashing must not move a single value, with either shingle hash
PINNED = {
    ("xxh32", "affine32"): "a3405d29f9b95c32656310b2be26b01405552aa846008d10dd8d1a97bac7a158",
    ("xxh32", "legacy"): "f36d99de0fafc1940c2d3cd15c48ad758c92a4b75dfae78eb0082150ff77bd48",
    ("sha1", "affine32"): "45e2dfe01f503b458a120d0b883bf853d138deb306e9e0fd7a1a7ddca0adf26d",
    ("sha1", "legacy"): "0b2381c73de1172e7ea88d3eb395af138c9e7df6ada7c20f0e0b9ae2fc7371dc",
}


@pytest.mark.parametrize("shingle_hash,scheme", list(PINNED))
def test_signatures_pinned(shingle_hash, scheme):
    signatures = MinHasher(128, 1, scheme, shingle_hash).signatures_of_texts(pinned_texts())
    assert hashlib.sha256(signatures.astype("<u4").tobytes()).hexdigest() == PINNED[(shingle_hash, scheme)]


ODD_TEXTS = ["", "a b", "ΟΔΟΣ Σ aΣ. Ünïcödé straße İstanbul x y z w", "", "_ __ ,,", "x\x00y z", "  lead trail  ",
             "\x00", "A\tB\x1c\x1fC-D\x7fE\x0bF g h", "Ab\x00\x00", "one two three four five", "İ" * 3, "a\u2028b c d e f"]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_shingle_spans_are_word_shingles(n):
    for texts in (ODD_TEXTS, ODD_TEXTS[::-1], random_texts(30, 4) + ODD_TEXTS, [""], [], ["a"]):
        buffer, starts, lengths, offsets = shingle_spans(texts, n)
        assert len(offsets) == len(texts) + 1
        for t, text in enumerate(texts):
            spans = [buffer[s : s + n] for s, n in zip(starts[offsets[t] : offsets[t + 1]], lengths[offsets[t] : offsets[t + 1]])]
            assert spans == word_shingles(text, n), text


def test_span_hashes_equal_the_per_shingle_functions():
    rng = random.Random(2)
    buffer = bytes(rng.randrange(256) for _ in range(6000))
    starts = np.array([rng.randrange(len(buffer)) for _ in range(3 * minhash._CHUNK_SPANS)])  # several chunks
    lengths = np.array([rng.choice([rng.randrange(60), rng.randrange(1000)]) for _ in starts])
    lengths = np.minimum(lengths, len(buffer) - starts)  # some end at the buffer's last byte
    expected = np.array([xxhash.xxh32_intdigest(buffer[s : s + n]) for s, n in zip(starts, lengths)], np.uint32)
    assert np.array_equal(xxh32_spans(buffer, starts, lengths), expected)
    few = slice(0, 2000)
    expected = np.array([sha1_hash32(buffer[s : s + n]) for s, n in zip(starts[few], lengths[few])], np.uint32)
    assert np.array_equal(sha1_spans(buffer, starts[few], lengths[few]), expected)
    assert len(xxh32_spans(b"", np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0


@pytest.mark.parametrize("group_chars", [1, 2000, 1 << 22])  # one text per group, a few, all in one
def test_shingle_hashes_per_text(monkeypatch, group_chars):
    monkeypatch.setattr(minhash, "_GROUP_CHARS", group_chars)
    texts = random_texts(20, 9) + ODD_TEXTS
    hasher = MinHasher()
    hashes = hasher.shingle_hashes(texts)
    assert len(hashes) == len(texts)
    for text, text_hashes in zip(texts, hashes):
        assert np.array_equal(text_hashes, hasher.hash_shingles(word_shingles(text)))
    assert hasher.shingle_hashes([]) == []


def test_sha1_default_is_datasketchs_own():
    text = random_texts(1, 3)[0]
    reference = MinHash()  # datasketch defaults: 128 permutations, seed 1, affine32, sha1_hash32
    reference.update_batch(word_shingles(text))
    assert np.array_equal(MinHasher(shingle_hash="sha1").signatures_of_texts([text])[0], reference.hashvalues)


def test_a_document_larger_than_one_chunk():
    text = " ".join(f"t{i}" for i in range(70_000))  # about 70k shingles: two permutation chunks
    reference = MinHash(hashfunc=xxhash.xxh32_intdigest)
    reference.update_batch(word_shingles(text))
    assert np.array_equal(MinHasher().signatures_of_texts([text, "a b c"])[0], reference.hashvalues)


def test_band_keys_match_iff_band_values_match():
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(50, 128), dtype=np.uint64).astype(np.uint32)
    signatures[1, :4] = signatures[0, :4]  # share band 0 only
    keys = band_keys(signatures, 32, 4)
    assert keys.shape == (50, 32)
    assert keys[0, 0] == keys[1, 0] and (keys[0, 1:] != keys[1, 1:]).all()
    assert len(np.unique(keys[:, 5])) == 50
    with pytest.raises(ValueError):
        band_keys(signatures, 33, 4)


def test_estimated_similarity_tracks_jaccard():
    hasher = MinHasher()
    base = [f"w{i}" for i in range(400)]
    edited = base[:360] + [f"x{i}" for i in range(40)]
    a, b = (np.unique(hasher.hash_shingles(word_shingles(" ".join(t)))) for t in (base, edited))
    true = jaccard(a, b)
    signatures = hasher.signatures([a, b])
    estimate = float((signatures[0] == signatures[1]).mean())
    assert abs(estimate - true) < 0.12
    assert candidate_probability(0.8, 32, 4) > 0.999 and candidate_probability(0.1, 32, 4) < 0.01


def test_group_pairs_all_or_chain():
    assert list(group_pairs([1, 2, 3], max_group=4, window=1)) == [(1, 2), (1, 3), (2, 3)]
    chain = list(group_pairs(list(range(10)), max_group=4, window=2))
    assert len(chain) == 17 and all(b - a in (1, 2) for a, b in chain)


def test_connected_components_against_a_graph_search():
    rng = random.Random(5)
    n = 500
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(350)]
    label = connected_components(np.array([e[0] for e in edges]), np.array([e[1] for e in edges]), n)
    neighbours = {i: set() for i in range(n)}
    for x, y in edges:
        neighbours[x].add(y), neighbours[y].add(x)
    for start in range(n):
        seen, todo = {start}, [start]
        while todo:
            for nxt in neighbours[todo.pop()] - seen:
                seen.add(nxt), todo.append(nxt)
        assert label[start] == min(seen)
