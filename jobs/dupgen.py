"""Document tables with planted duplicate families, deterministic from a seed: for dedup tests and bench/dedup.py.

A family is a base document and its variants: exact copies (with case, spacing and punctuation changed, which
normalisation removes), copies with 2 %, 5 %, 10 % or 30 % of their words replaced, and pages that share only a
boilerplate header and footer with each other. Ground truth is the brute-force Jaccard similarity of the word
5-gram sets, computed here independently of the stage.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.documents import DOC_SCHEMA

_VOCAB_SIZE = 20_000
EDIT_RATES = (0.02, 0.05, 0.10, 0.30)
BOILERPLATE = ("Home News Sport Weather Opinion Culture Subscribe to our newsletter for the latest updates "
               "Follow us on social media Share this article with your friends ") * 2


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    return ["".join(rng.choice(letters[: 8 + (i % 18)]) for _ in range(rng.randint(2, 9))) for i in range(_VOCAB_SIZE)]


def _text(rng: random.Random, vocab: list[str], n_words: int) -> list[str]:
    # Zipf-like word frequencies, so texts share common words as prose does
    return [vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] if rng.random() < 0.5 else rng.choice(vocab)
            for _ in range(n_words)]


def _edit(rng: random.Random, vocab: list[str], tokens: list[str], rate: float) -> list[str]:
    out = list(tokens)
    for i in rng.sample(range(len(out)), int(round(rate * len(out)))):
        out[i] = rng.choice(vocab)
    return out


def _sentences(tokens: list[str]) -> str:
    """Tokens as prose: sentences of 12 words, capitalised, ending in a full stop, a paragraph per 5 sentences."""
    sentences = [" ".join(tokens[i : i + 12]).capitalize() + "." for i in range(0, len(tokens), 12)]
    return "\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


def _noisy_copy(text: str, rng: random.Random) -> str:
    """The same words, with case, spacing and punctuation changed (an exact duplicate after normalisation)."""
    return re.sub(r"\.", rng.choice(["!", " .", ";"]), text.upper() if rng.random() < 0.5 else "  " + text)


def planted_corpus(n_families: int, n_singletons: int, seed: int = 0, words: tuple[int, int] = (150, 400)) -> list[dict]:
    """Document rows (DOC_SCHEMA) with a `family` key: each family has a base, an exact copy and one copy per
    edit rate; every fourth family also has two boilerplate-sharing pages. Rows are shuffled."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    texts: list[tuple[str, str]] = []
    for f in range(n_families):
        base = _text(rng, vocab, rng.randint(*words))
        base_text = _sentences(base)
        texts.append((f"f{f}", base_text))
        texts.append((f"f{f}", _noisy_copy(base_text, rng)))
        for rate in EDIT_RATES:
            texts.append((f"f{f}", _sentences(_edit(rng, vocab, base, rate))))
        if f % 4 == 0:
            for k in range(2):
                texts.append((f"b{f}.{k}", BOILERPLATE + _sentences(_text(rng, vocab, 120)) + " " + BOILERPLATE))
    for s in range(n_singletons):
        texts.append((f"s{s}", _sentences(_text(rng, vocab, rng.randint(*words)))))
    rng.shuffle(texts)
    rows = []
    for i, (family, text) in enumerate(texts):
        rows.append({
            "doc_id": f"doc{i:07d}", "url": f"http://site{i % 13}.example/{i}", "host": f"site{i % 13}.example",
            "title": None, "text": text, "date": f"20{10 + rng.randint(0, 9)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
            if rng.random() < 0.7 else None, "lang": "en", "lang_score": 0.99, "n_chars": len(text),
            "n_words": len(text.split()), "score": rng.choice([None, 3, 5, 8, 13, 40, 100]),
            "subreddits": ["news"], "warc_file": "part-00000.warc.gz", "warc_offset": i, "family": family,
        })
    return rows


def write_parts(rows: list[dict], directory: Path, n_parts: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(n_parts):
        chunk = [{k: v for k, v in r.items() if k != "family"} for r in rows[p::n_parts]]
        path = directory / f"part-{p:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=DOC_SCHEMA), path)
        paths.append(path)
    return paths


def shingle_set(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the normalised text, written independently of pipeline/minhash.py."""
    tokens = re.findall(r"\w+", text.lower())
    if len(tokens) <= n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def true_pairs(rows: list[dict], threshold: float, n: int = 5) -> dict[tuple[str, str], float]:
    """Every pair of documents with Jaccard >= threshold, as {(doc_id, doc_id): jaccard}, exactly: pairs that
    share no shingle have Jaccard 0, so an inverted index of shingles lists all pairs that can qualify."""
    sets = {r["doc_id"]: shingle_set(r["text"], n) for r in rows}
    postings: dict[str, list[str]] = {}
    for doc_id in sorted(sets):
        for shingle in sets[doc_id]:
            postings.setdefault(shingle, []).append(doc_id)
    shared: Counter = Counter()
    for docs in postings.values():
        if len(docs) > 1:
            shared.update(combinations(docs, 2))
    out = {}
    for (x, y), inter in shared.items():
        j = inter / (len(sets[x]) + len(sets[y]) - inter)
        if j >= threshold:
            out[(x, y)] = j
    return out
