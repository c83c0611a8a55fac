"""Settings of archive recovery: the archives asked (in order), their politeness, and which captures count."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import Config

SOURCES = ("live", "archive", "live+archive")
# Live outcomes that mean the page is gone rather than refused or slow (a timeout may pass; a robots.txt
# disallow is the site's wish, which an archive must not be used to get around).
DEAD_OUTCOMES = ["connect_error", "dns_error", "robots_unreachable"]


class ArchiveSource(Config):
    """One archive. `cdx_api` and `replay` are URL templates: `{collection}`, `{timestamp}` (14 digits), `{url}`.

    The Wayback Machine: cdx_api `https://web.archive.org/cdx/search/cdx`, replay
    `https://web.archive.org/web/{timestamp}id_/{url}`. A pywb collection: `http://HOST/{collection}/cdx` and
    `http://HOST/{collection}/{timestamp}id_/{url}`. Common Crawl's index server:
    `https://index.commoncrawl.org/{collection}-index` with `warc_prefix` `https://data.commoncrawl.org/` (or
    `s3://commoncrawl/` from inside AWS); its collections are crawls, `CC-MAIN-YYYY-WW`.
    """

    name: str = Field(description="names the archive in the fetch log's `archive` column and the WARC headers")
    kind: Literal["wayback", "commoncrawl"]
    cdx_api: str | None = Field(None, description="the CDX API URL template (a commoncrawl archive with an `index` "
                                                  "needs none)")
    replay: str | None = Field(None, description="wayback: the raw (id_) replay URL template")
    warc_prefix: str | None = Field(None, description="commoncrawl: where the index's warc_filename paths are "
                                                      "(https://… read by range requests, or s3://…)")
    index: str | None = Field(None, description="commoncrawl: the columnar index (…/cc-index/table/cc-main/warc/); "
                                                "when set, URLs are joined with it instead of asking cdx_api")
    collections: list[str] = Field([""], description="wayback: [''] for the Wayback Machine, or pywb collections; "
                                                     "commoncrawl: crawl names, each queried when near first_utc")
    requests_per_s: float = Field(1.0, gt=0, description="at most this many requests per second to the archive's "
                                                         "host (CDX queries and record fetches together)")

    @field_validator("collections")
    @classmethod
    def _some(cls, collections: list[str]) -> list[str]:
        if not collections:
            raise ValueError("at least one collection ('' when the API has none)")
        return collections

    @model_validator(mode="after")
    def _complete(self) -> ArchiveSource:
        if self.kind == "wayback" and not self.replay:
            raise ValueError(f"archive {self.name!r}: a wayback archive needs `replay` (the id_ URL template)")
        if self.kind == "commoncrawl" and not self.warc_prefix:
            raise ValueError(f"archive {self.name!r}: a commoncrawl archive needs `warc_prefix`")
        if not self.cdx_api and not (self.kind == "commoncrawl" and self.index):
            raise ValueError(f"archive {self.name!r}: needs `cdx_api`" + (" or `index`" if self.kind == "commoncrawl"
                                                                          else ""))
        return self


WAYBACK_MACHINE = ArchiveSource(name="wayback", kind="wayback", cdx_api="https://web.archive.org/cdx/search/cdx",
                                replay="https://web.archive.org/web/{timestamp}id_/{url}", requests_per_s=0.25)


class ArchiveConfig(Config):
    """Which archives a crawl with `source: archive | live+archive` asks, and which captures count."""

    archives: list[ArchiveSource] = Field(default_factory=lambda: [WAYBACK_MACHINE],
                                          description="asked in this order; the first with a capture wins")
    window_days: float = Field(730.0, gt=0, description="captures further than this from the URL's first_utc "
                                                        "do not count")
    dead_outcomes: list[str] = Field(DEAD_OUTCOMES, description="live outcomes looked up in the archives")
    dead_statuses: list[int] = Field([404, 410], description="HTTP statuses (outcome http_status) looked up")
    html_types: list[str] = Field(["text/html", "application/xhtml+xml"])
    max_captures: int = Field(2_000, ge=1, description="CDX rows read per query (the `limit` parameter)")
