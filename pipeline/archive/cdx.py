"""CDX queries (the Wayback Machine's CDX API, pywb's, Common Crawl's index server) and the choice of a capture.

A thin client of our own rather than cdx-toolkit: cdx-toolkit fetches with `requests`, synchronously, with its own
retries and pacing, so its requests would bypass the crawler's fetcher (SSRF guard on every address connected to,
politeness per host shared with the crawl's other requests to that host, Retry-After pausing the host, retry
budget, timeouts, size caps) and block the crawl's event loop. What we need of the API is small: one GET per URL
and collection with `url`, `output=json`, `from`/`to` (the window) and `limit`, and two answer shapes (NDJSON
objects from pywb and Common Crawl; a JSON array of rows under a header row from the Wayback Machine), both read
here.

The capture chosen for a URL (`choose`): among its captures with status 200 and an HTML MIME type within
`window_days` of the URL's `first_utc`, the one closest in time to `first_utc` (the page as Reddit saw it; ties:
the earlier one); with no such capture, the closest redirect (3xx) in the window, which the caller follows; with no
`first_utc` (a URL table that is not Reddit's), the earliest capture, same rules.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

from yarl import URL

from pipeline.archive.config import ArchiveConfig, ArchiveSource
from pipeline.fetch import REDIRECT_STATUSES, FetchError, Fetcher, mime_of

CC_CRAWL = re.compile(r"CC-MAIN-(\d{4})-(\d{2})$")
# A crawl runs for about a month after the start of its week: its captures may lie that far from its date.
CRAWL_SPAN_S = 31 * 86400
# Field names of the Wayback Machine's CDX API, and ours (pywb's and Common Crawl's).
IA_FIELDS = {"original": "url", "mimetype": "mime", "statuscode": "status"}


class CdxError(FetchError):
    def __init__(self, detail: str):
        super().__init__("archive_error", detail)


@dataclass(frozen=True)
class Capture:
    """One archived capture of a URL, as an index lists it."""

    archive: str
    collection: str
    timestamp: str  # 14 digits, UTC
    url: str
    status: int | None
    mime: str
    filename: str | None = None  # the WARC file holding it (Common Crawl: path under the bucket)
    offset: int | None = None
    length: int | None = None

    @property
    def time(self) -> int:
        return time_of(self.timestamp)


def time_of(timestamp: str) -> int:
    """A CDX timestamp (1 to 14 digits, UTC; missing digits are the start of the period) as epoch seconds."""
    if not (timestamp.isdigit() and 4 <= len(timestamp) <= 14):
        raise ValueError(f"not a CDX timestamp: {timestamp!r}")
    return calendar.timegm(time.strptime(timestamp + "0101000000"[len(timestamp) - 4:], "%Y%m%d%H%M%S"))


def timestamp_of(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch))


def crawl_time(collection: str) -> int | None:
    """The start of a Common Crawl crawl named CC-MAIN-YYYY-WW (its ISO week), or None for another name."""
    match = CC_CRAWL.match(collection)
    if not match:
        return None
    start = date.fromisocalendar(int(match[1]), int(match[2]), 1)
    return calendar.timegm(start.timetuple())


def parse_cdx(body: bytes, archive: str, collection: str, where: str) -> list[Capture]:
    """The captures of a CDX answer with `output=json`, either shape; CdxError naming `where` if unreadable."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return []
    try:
        if text.startswith("["):
            rows = json.loads(text)
            if not rows:
                return []
            header = [IA_FIELDS.get(name, name) for name in rows[0]]
            records = [dict(zip(header, row)) for row in rows[1:]]
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [_capture(r, archive, collection) for r in records]
    except (ValueError, KeyError, TypeError) as err:
        raise CdxError(f"{where}: not a CDX answer in JSON ({type(err).__name__}: {err})") from None


def _capture(record: dict, archive: str, collection: str) -> Capture:
    status = str(record.get("status", ""))
    number = lambda key: int(record[key]) if str(record.get(key, "")).isdigit() else None  # noqa: E731
    return Capture(archive=archive, collection=collection, timestamp=str(record["timestamp"]), url=record["url"],
                   status=int(status) if status.isdigit() else None,
                   mime=mime_of(record.get("mime-detected") or record.get("mime")),
                   filename=record.get("filename"), offset=number("offset"), length=number("length"))


def choose(captures: list[Capture], first_utc: int | None, config: ArchiveConfig) -> Capture | None:
    """The capture to fetch (see the module's docstring): a page, else a redirect to follow, else None."""
    window = config.window_days * 86400
    if first_utc is not None:
        captures = [c for c in captures if abs(c.time - first_utc) <= window]
    anchor = first_utc if first_utc is not None else 0

    def closest(candidates: list[Capture]) -> Capture | None:
        return min(candidates, key=lambda c: (abs(c.time - anchor), c.timestamp, c.url), default=None)

    pages = [c for c in captures if c.status == 200 and c.mime in config.html_types]
    return closest(pages) or closest([c for c in captures if c.status in REDIRECT_STATUSES])


class CdxClient:
    """Queries one archive's CDX API through the crawler's fetcher (guard, pace, retries, caps)."""

    def __init__(self, fetcher: Fetcher, archive: ArchiveSource, config: ArchiveConfig):
        self.fetcher, self.archive, self.config = fetcher, archive, config

    def query(self, collection: str, url: str, first_utc: int | None) -> str:
        params = {"url": url, "output": "json", "limit": str(self.config.max_captures)}
        if first_utc is not None:
            window = self.config.window_days * 86400
            params["from"] = timestamp_of(max(0, first_utc - window))
            params["to"] = timestamp_of(first_utc + window)
        return self.archive.cdx_api.format(collection=collection) + "?" + urlencode(params)

    def collections(self, first_utc: int | None) -> list[str]:
        """The collections worth asking: Common Crawl's crawls within the window, nearest first; others as given."""
        named = [(c, crawl_time(c)) for c in self.archive.collections]
        if first_utc is None or any(t is None for _, t in named):
            return self.archive.collections
        reach = self.config.window_days * 86400 + CRAWL_SPAN_S
        near = [(abs(t - first_utc), c) for c, t in named if -reach <= t - first_utc <= self.config.window_days * 86400]
        return [c for _, c in sorted(near)]

    async def captures(self, url: str, first_utc: int | None) -> tuple[list[Capture], int]:
        """Every capture of `url` in the collections worth asking, and the number of requests it took. Asking stops
        once the remaining crawls all started further from first_utc than the best page found is."""
        found: list[Capture] = []
        requests = 0
        for collection in self.collections(first_utc):
            start = crawl_time(collection)
            best = choose(found, first_utc, self.config)
            if (best is not None and best.status == 200 and first_utc is not None and start is not None
                    and abs(start - first_utc) - CRAWL_SPAN_S > abs(best.time - first_utc)):
                break
            found += await self.query_one(collection, url, first_utc)
            requests += 1
        return found, requests

    async def query_one(self, collection: str, url: str, first_utc: int | None) -> list[Capture]:
        if not self.archive.cdx_api:
            raise CdxError(f"{self.archive.name}: no cdx_api, and {url} was not in the index join")
        query = self.query(collection, url, first_utc)
        exchange, _ = await self.fetcher.request(self.fetcher._check_url(query), self.fetcher.config.max_body_bytes,
                                                 self.fetcher.config.max_decoded_bytes)
        if exchange.status == 404:  # Common Crawl's index server: "No Captures found for: …"
            return []
        if exchange.status != 200:
            raise CdxError(f"{self.archive.name} CDX {URL(query).host}: HTTP {exchange.status}")
        return parse_cdx(exchange.body, self.archive.name, collection, f"{self.archive.name} CDX {query}")
