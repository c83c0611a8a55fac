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


# The other fields of a Pushshift record, so generated lines have a real dump's size: 2005 records carry about 56
# keys (1.3 kB a line), 2020s records about 110 (2.5-10 kB, most of Reddit's volume).
_FILLER_2005 = {
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
_FILLER_2020S = {
    **_FILLER_2005,
    "_meta": {"retrieved_2nd_on": 1706875209}, "all_awardings": [], "allow_live_comments": False,
    "approved_at_utc": None, "approved_by": None, "author_flair_template_id": None, "author_fullname": "t2_6e2k1y0k",
    "author_is_blocked": False, "author_patreon_flair": False, "author_premium": False, "awarders": [],
    "banned_at_utc": None, "banned_by": None, "can_mod_post": False, "category": None, "clicked": False,
    "content_categories": None, "created": 1706745600.0, "discussion_type": None, "downs": 0, "gildings": {},
    "is_created_from_ads_ui": False, "is_meta": False, "is_original_content": False, "is_robot_indexable": True,
    "likes": None, "link_flair_background_color": "#d3d6da", "link_flair_template_id":
    "1fb4f62c-40d8-11ee-90d3-0ebaca49d01a", "media_only": False, "mod_note": None, "mod_reason_by": None,
    "mod_reason_title": None, "mod_reports": [], "name": "t3_1afwvv8", "num_reports": 0, "pinned": False,
    "preview": {"enabled": False, "images": [{"id": "sY0KabKBfGX1bB1IJMqbQ2uVGR8YGeFaRCkpwuSQc80", "resolutions": [
        {"height": h, "url": f"https://preview.redd.it/3AaqtMW3S2tWA6KTKe2XhM1WHVEdVap3ZH7vvc6l0aA.jpg?width={w}"
         "&crop=smart&auto=webp&s=3e2fdc8f6741028a5bf278d18cfd187e", "width": w}
        for w, h in ((108, 60), (216, 121), (320, 180))],
        "source": {"height": 720, "url": "https://external-preview.redd.it/3AaqtMW3S2tWA6KTKe2XhM1WHVE.jpg?"
                   "auto=webp&s=42ede1f6317643a1eeef675eef594d35", "width": 1280}, "variants": {}}]},
    "pwls": 6, "quarantine": False, "removal_reason": None, "removed_by": None, "removed_by_category": None,
    "report_reasons": [], "retrieved_on": 1706745615, "saved": False, "subreddit_name_prefixed": "r/news",
    "subreddit_subscribers": 5940, "top_awarded_type": None, "total_awards_received": 0, "treatment_tags": [],
    "updated_on": 1706745630, "ups": 1, "upvote_ratio": 1.0, "user_reports": [], "view_count": None,
    "visited": False, "wls": 6,
}
FILLERS = {"2005": _FILLER_2005, "2020s": _FILLER_2020S}


def write_large_zst(path: Path, n: int, seed: int = 0, era: str = "2020s", chunk: int = 20000) -> Path:
    """A Pushshift-like .zst dump of `n` full-size records of an era, written in chunks (memory flat in `n`)."""
    filler = json.dumps(FILLERS[era])[1:-1].encode()
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        for start in range(0, n, chunk):
            records = synthetic_records(min(chunk, n - start), seed=seed * 1_000_003 + start, id_prefix=f"{start}_")
            out.write(b"".join(b"{" + json.dumps(r)[1:-1].encode() + b", " + filler + b"}\n" for r in records))
    return path


def submissions_for_web(urls: list[str], seed: int = 0, min_karma: int = 3) -> tuple[list[dict], set[str]]:
    """A dump that links to `urls`, with the traps a real one has, and the URLs the urls stage must keep.

    Each URL is posted one to three times, some of them as variants of it (`www.`, tracking parameters,
    fragment, trailing slash), with scores spread around `min_karma`; around them: self posts, NSFW
    links, media links and posts with a bad scheme. Returns (records, URLs whose best score reaches min_karma).
    """
    rng = random.Random(seed)
    records, kept, n = [], set(), 0

    def post(url: str, score: int, **kw) -> None:
        nonlocal n
        records.append(submission(f"d{n:x}", url, score=score, created_utc=1_560_000_000 + n * 7,
                                  subreddit=rng.choice(["news", "science", "books", "history"]), **kw))
        n += 1

    for url in urls:
        scores = [max(0, int(rng.paretovariate(1.0)) - 1 + rng.choice([0, 0, 1, 3])) for _ in range(rng.randint(1, 3))]
        for i, score in enumerate(scores):
            variant = url if i == 0 else rng.choice([
                url.replace("http://", "http://www.", 1), url + "?utm_source=reddit&utm_medium=social",
                url + "#comments", url + "/"])
            post(variant, score)
        if max(scores) >= min_karma:
            kept.add(url)
        if rng.random() < 0.1:
            post(url, 50, over_18=True)  # the same page posted as NSFW elsewhere still counts once, as SFW
    for i in range(len(urls) // 2):
        post(f"https://www.reddit.com/r/news/comments/{i:x}/a_self_post/", 10, is_self=True)
        post(f"https://i.redd.it/{i:x}.jpg", 25)
        post(f"https://example-images.com/pic{i}.png", 15)
        post(f"http://nsfw-site{i % 5}.example/p/{i}", 30, over_18=True)
    post("ftp://files.example/archive", 40)
    rng.shuffle(records)
    return records, kept
