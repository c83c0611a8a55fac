"""Recovering pages the live web lost from web archives: the Wayback Machine (CDX API + `id_` raw replay) and
Common Crawl (its CDX index server or its columnar Parquet index, then WARC records by range request).

    config.py     which archives, how politely, which captures count (`ArchiveConfig`)
    cdx.py        CDX API queries through the crawler's fetcher, and the choice of a capture
    records.py    a chosen capture's bytes: Wayback raw replay, Common Crawl range reads, as an `Exchange`
    recover.py    one URL -> one outcome from the archives (redirects followed), with its provenance
    index_join.py the columnar-index join on the SURT key, host-prefiltered, on Ray; redirect targets in more rounds
    local.py      a real Wayback-compatible archive (pywb, its own virtual environment) on loopback
"""
