"""One URL -> one outcome from the archives: the capture closest to `first_utc`, archived redirects followed.

The archives are asked in the configured order; the first that gives a page wins. An archive with no capture in
the window, or whose request failed (its outcome and detail are kept), passes to the next. A chosen redirect
capture is fetched (its response is archived, as the live crawl archives its hops) and its `Location` looked up
in the same archive, at most `max_redirects` times. The final response goes through the same checks as a live
page (status, content type, binary bytes), so `ok` means the same thing whatever the source.

An archive with a columnar index (Common Crawl's `index`) is not asked per URL: the recoverer joins all the URLs
it may be asked about with the index when it is made (in `live+archive` that is before their live fetches: the
scan costs row groups, not URLs), and takes the captures from the join, redirect targets included (the join
follows the index's `fetch_redirect` in rounds of its own); a target the join could not look up (crawls before
CC-MAIN-2019-47 name none) is asked of the archive's CDX API, or ends as `archive_error` if it has none.

The outcome when no archive had the page: `not_archived` (every archive answered, none has a usable capture), or
the last archive's failure (e.g. `archive_error`, `timeout`); `error` names what each archive said.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from pipeline.archive.cdx import Capture, CdxClient, choose
from pipeline.archive.config import ArchiveConfig, ArchiveSource
from pipeline.archive.index_join import captures_of, join_index
from pipeline.archive.records import archive_hosts, fetch_capture
from pipeline.fetch import REDIRECT_STATUSES, FetchError, Fetcher, FetchResult, redirect_target


@dataclass
class RecoveredResult(FetchResult):
    """A FetchResult whose response came from an archive: which one, and which capture."""

    source: str = "archive"
    archive: str | None = None
    collection: str | None = None
    capture_time: datetime | None = None  # UTC
    archive_warc: str | None = None  # the original WARC file (Common Crawl) or the replay URL (Wayback)
    archive_offset: int | None = None


class Recoverer:
    """Looks URLs up in the archives through `fetcher` (its guard, pace, retries and caps apply to every request).

    Each archive's host is paced at its `requests_per_s`, whatever the crawl's `min_delay_s`."""

    def __init__(self, fetcher: Fetcher, config: ArchiveConfig, urls: pa.Table | None = None):
        """`urls` (url, first_utc): the URLs this recoverer will be asked about, joined up front with the columnar
        index of every archive that has one (`index`), so that those need no CDX query."""
        self.fetcher, self.config = fetcher, config
        self.clients = [CdxClient(fetcher, archive, config) for archive in config.archives]
        self.requests = 0
        self.indexed: dict[str, dict[tuple[str, int | None], list[Capture]]] = {}
        for archive in config.archives:
            if archive.index is not None and urls is not None:
                crawls = [c for c in archive.collections if c] or None
                chosen, _ = join_index(urls, archive.index, config, crawls,
                                       max_redirects=fetcher.config.max_redirects)
                self.indexed[archive.name] = captures_of(urls, chosen, archive.name)
        for archive in config.archives:
            for host in archive_hosts(archive):
                fetcher.host(f"{host}:0").pace.delay = 1.0 / archive.requests_per_s

    def is_dead(self, result: FetchResult) -> bool:
        """Whether a live outcome means the page is gone (then the archives are asked, in `live+archive`)."""
        if result.outcome == "http_status":
            return result.status in self.config.dead_statuses
        return result.outcome in self.config.dead_outcomes

    async def recover(self, url: str, first_utc: int | None) -> FetchResult:
        started = time.monotonic()
        said, fallback = [], None
        for client in self.clients:
            try:
                result = await self._from(client, url, first_utc)
            except FetchError as err:
                said.append(f"{client.archive.name}: {err.outcome}: {err.detail}")
                fallback = RecoveredResult(url, err.outcome, status=err.status, source="lost")
                continue
            if result is None:
                said.append(f"{client.archive.name}: no capture within {self.config.window_days:g} days")
                continue
            if result.outcome == "ok":
                result.elapsed = round(time.monotonic() - started, 4)
                return result
            said.append(f"{client.archive.name}: {result.outcome}: {result.error}")
            fallback = result
        result = fallback or RecoveredResult(url, "not_archived", source="lost")
        result.error, result.elapsed = "; ".join(said)[:500], round(time.monotonic() - started, 4)
        return result

    async def _from(self, client: CdxClient, url: str, first_utc: int | None) -> RecoveredResult | None:
        archive: ArchiveSource = client.archive
        current, seen, exchanges = url, {url}, []
        for _hop in range(self.fetcher.config.max_redirects + 1):
            if (current, first_utc) in self.indexed.get(archive.name, {}):
                captures = self.indexed[archive.name][(current, first_utc)]
            else:  # no index, or a redirect target the index does not name: the CDX API
                captures, requests = await client.captures(current, first_utc)
                self.requests += requests
            capture = choose(captures, first_utc, self.config)
            if capture is None and exchanges:
                raise FetchError("not_archived", f"archived redirect to {current}, which is not archived")
            if capture is None:
                return None
            exchange = await fetch_capture(self.fetcher, archive, capture)
            self.requests += 1
            location = exchange.header("Location")
            if capture.status in REDIRECT_STATUSES and location:
                exchanges.append(exchange)
                try:
                    target = redirect_target(capture.url, location)
                except ValueError as err:
                    raise FetchError("bad_url", f"archived redirect to {location!r}: {err}") from None
                if target in seen:
                    raise FetchError("too_many_redirects", f"{archive.name}: archived redirect loop")
                seen.add(target)
                current = target
                continue
            final = self.fetcher._final(url, capture.url, exchange, 1, exchanges)
            return self._result(url, final, capture)
        raise FetchError("too_many_redirects", f"{archive.name}: more than {self.fetcher.config.max_redirects} "
                                               f"archived redirects")

    @staticmethod
    def _result(url: str, result: FetchResult, capture: Capture) -> RecoveredResult:
        fields = {k: getattr(result, k) for k in FetchResult.__dataclass_fields__}
        provenance = result.exchanges[-1].extra
        return RecoveredResult(**fields, source="archive" if result.outcome == "ok" else "lost",
                               archive=capture.archive, collection=capture.collection, capture_time=datetime.fromtimestamp(capture.time, timezone.utc),
                               archive_warc=provenance.get("Webtext-Source-WARC") or provenance["WARC-Source-URI"],
                               archive_offset=capture.offset if capture.filename else None)
