"""Writes Pushshift-format submission dumps for tests and benchmarks (deterministic from a seed)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from pathlib import Path

import zstandard


def submission(id: str, url: str, score: int = 5, created_utc=1_500_000_000, is_self: bool = False,
               over_18: bool = False, subreddit: str = "news", **extra) -> dict:
    record = {"id": id, "url": url, "score": score, "created_utc": created_utc, "is_self": is_self,
              "over_18": over_18, "subreddit": subreddit, "title": f"title {id}", "author": "someone",
              "domain": url.split("/")[2] if isinstance(url, str) and "://" in url else "", "num_comments": 3, "selftext": ""}
    record.update(extra)
    return record


def encode(records) -> bytes:
    """NDJSON bytes; a bytes item is written as it is (to plant garbage lines)."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def write_dump(path: Path, records, compression: str | None = None) -> Path:
    data = encode(records)
    compress = {
        None: lambda d: d,
        "zst": lambda d: zstandard.ZstdCompressor(level=3).compress(d),
        "xz": lzma.compress,
        "gz": gzip.compress,
        "bz2": bz2.compress,
    }[compression]
    path.write_bytes(compress(data))
    return path


def synthetic_records(n: int, seed: int = 0, n_hosts: int = 500, id_prefix: str = "") -> list[dict]:
    """A realistic mix: a third self posts, some NSFW and media links, repeated URLs, skewed scores."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        kind = rng.random()
        host = f"site{rng.randrange(n_hosts)}.example.com"
        if kind < 0.33:
            url, is_self = f"https://www.reddit.com/r/test/comments/{i}/post/", True
        elif kind < 0.38:
            url, is_self = f"https://i.redd.it/{i}.jpg", False
        elif kind < 0.45:
            url, is_self = f"http://{host}/images/{i}.png", False
        else:
            url, is_self = f"http://www.{host}/article/{rng.randrange(n // 4 + 1)}?utm_source=reddit", False
        score = int(rng.paretovariate(1.2)) - 1
        records.append(submission(f"{id_prefix}{i:x}", url, score=score, created_utc=1_500_000_000 + i,
                                  is_self=is_self, over_18=rng.random() < 0.03,
                                  subreddit=rng.choice(["news", "science", "programming", "worldnews"])))
    return records
