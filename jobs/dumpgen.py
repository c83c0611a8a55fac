"""Pushshift-format submission dumps, deterministic from a seed: for tests, benchmarks and the demo."""

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


# The other fields of a 2005-era Pushshift record, so generated lines have a real dump's size (about 1.3 kB).
_FILLER = {
    "archived": True, "author_flair_background_color": None, "author_flair_css_class": None,
    "author_flair_richtext": [], "author_flair_text": None, "author_flair_text_color": None,
    "author_flair_type": "text", "brand_safe": True, "can_gild": True, "contest_mode": False,
    "distinguished": None, "edited": False, "gilded": 0, "hidden": False, "hide_score": False,
    "is_crosspostable": True, "is_reddit_media_domain": False, "is_video": False, "link_flair_css_class": None,
    "link_flair_richtext": [], "link_flair_text": None, "link_flair_text_color": "dark", "link_flair_type": "text",
    "locked": False, "media": None, "media_embed": {}, "no_follow": False, "num_crossposts": 0,
    "parent_whitelist_status": "all_ads", "rte_mode": "markdown", "secure_media": None, "secure_media_embed": {},
    "send_replies": True, "spoiler": False, "stickied": False, "subreddit_id": "t5_6",
    "subreddit_type": "archived", "suggested_sort": None, "thumbnail": "default", "thumbnail_height": None,
    "thumbnail_width": None, "whitelist_status": "all_ads",
}


def write_large_zst(path: Path, n: int, seed: int = 0, chunk: int = 20000) -> Path:
    """A Pushshift-like .zst dump of `n` full-size records, written in chunks (memory flat in `n`)."""
    filler = json.dumps(_FILLER)[1:-1]
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        for start in range(0, n, chunk):
            records = synthetic_records(min(chunk, n - start), seed=seed * 1_000_003 + start, id_prefix=f"{start}_")
            out.write(b"".join(
                b"{" + json.dumps(r)[1:-1].encode() + b", " + filler.encode() + b"}\n" for r in records))
    return path
