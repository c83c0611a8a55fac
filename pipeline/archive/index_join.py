"""Common Crawl's columnar URL index joined with the URL table on the SURT key: index scans, not per-URL lookups.

Common Crawl publishes, per crawl, a Parquet table of every capture (`cc-index/table/cc-main/warc/crawl=…/
subset=warc/part-*.parquet`, schema `CC_INDEX_SCHEMA`), each file sorted by `url_surtkey`. A SURT key starts with
the reversed host (`com,example)/path`), so sorting by it groups a host's captures together, and every row group's
footer statistics (min, max `url_surtkey`) say which hosts it can hold. The join:

1. plan (footers only): every index file's row groups with their key ranges (`index_files`);
2. the URL table's SURT keys (the `surt` package: the same canonicalisation the Wayback Machine and Common Crawl
   index with), sorted; each index file gets the URL keys within its range (`assign`): a prefilter by host;
3. one task per index file that has URL keys (`join_file`, on Ray or here): it reads only the row groups whose key
   range holds one of its URL keys, and only the columns the choice needs, and keeps the rows whose key is one of
   its URLs' (a hash join on `url_surtkey`); no task reads the whole index, and a task's memory is its row groups;
4. the choice (`choose_captures`), vectorised: per URL, among status 200 HTML captures (`content_mime_detected`)
   within the window, the one closest to `first_utc` (ties: the earlier, then by crawl name), over all crawls.

The result (`CAPTURES_SCHEMA`) points at each page's WARC record (file, offset, length); `records.py` fetches them
by range request. Archived redirects are not followed here (the crawl's CDX path follows them).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.archive.config import ArchiveConfig
from pipeline.storage import filesystem

# The flat schema of Common Crawl's columnar index (cc-index-table, `cc-index-create-table-flat.sql`, plus the
# columns added since: fetch_redirect, content_charset, content_languages, content_truncated). `crawl` and `subset`
# are Hive partitions (directory names), not columns of the files.
CC_INDEX_SCHEMA = pa.schema([
    ("url_surtkey", pa.string()), ("url", pa.string()), ("url_host_name", pa.string()),
    ("url_host_tld", pa.string()), ("url_host_2nd_last_part", pa.string()), ("url_host_3rd_last_part", pa.string()),
    ("url_host_4th_last_part", pa.string()), ("url_host_5th_last_part", pa.string()),
    ("url_host_registry_suffix", pa.string()), ("url_host_registered_domain", pa.string()),
    ("url_host_private_suffix", pa.string()), ("url_host_private_domain", pa.string()),
    ("url_protocol", pa.string()), ("url_port", pa.int32()), ("url_path", pa.string()), ("url_query", pa.string()),
    ("fetch_time", pa.timestamp("ms", tz="UTC")), ("fetch_status", pa.int16()), ("fetch_redirect", pa.string()),
    ("content_digest", pa.string()), ("content_mime_type", pa.string()), ("content_mime_detected", pa.string()),
    ("content_charset", pa.string()), ("content_languages", pa.string()), ("content_truncated", pa.string()),
    ("warc_filename", pa.string()), ("warc_record_offset", pa.int32()), ("warc_record_length", pa.int32()),
    ("warc_segment", pa.string()),
])
READ_COLUMNS = ["url_surtkey", "url", "fetch_time", "fetch_status", "content_mime_detected", "warc_filename",
                "warc_record_offset", "warc_record_length"]
CAPTURES_SCHEMA = pa.schema([
    ("url", pa.string()), ("url_surtkey", pa.string()), ("first_utc", pa.int64()), ("crawl", pa.string()),
    ("capture_url", pa.string()), ("fetch_time", pa.timestamp("ms", tz="UTC")), ("fetch_status", pa.int16()),
    ("content_mime_detected", pa.string()), ("warc_filename", pa.string()), ("warc_record_offset", pa.int64()),
    ("warc_record_length", pa.int64()),
])


def surt_key(url: str) -> str | None:
    """The SURT key Common Crawl indexes `url` under; None for a URL it cannot canonicalise."""
    import surt

    try:
        return surt.surt(url)
    except Exception:  # surt raises what urllib and idna raise on a malformed URL
        return None


@dataclass(frozen=True)
class IndexFile:
    """One Parquet file of the index: its crawl and its row groups' (min key, max key)."""

    uri: str
    crawl: str
    row_groups: tuple[tuple[str, str], ...]

    @property
    def low(self) -> str:
        return min(lo for lo, _ in self.row_groups)

    @property
    def high(self) -> str:
        return max(hi for _, hi in self.row_groups)


def index_files(root: str, crawls: list[str] | None = None) -> list[IndexFile]:
    """The index's files under `root` (…/warc/, holding crawl=*/subset=warc/*.parquet), footers only."""
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    files = []
    infos = fs.get_file_info(pafs.FileSelector(base.rstrip("/"), recursive=True))
    for info in sorted((i for i in infos if i.path.endswith(".parquet")), key=lambda i: i.path):
        parts = dict(p.split("=", 1) for p in info.path.split("/") if "=" in p)
        if parts.get("subset", "warc") != "warc" or (crawls and parts.get("crawl") not in crawls):
            continue
        uri = root.split("?", 1)[0].rstrip("/") + info.path[len(base.rstrip("/")):]
        uri += "?" + root.split("?", 1)[1] if "?" in root else ""
        with fs.open_input_file(info.path) as f:
            meta = pq.ParquetFile(f).metadata
        column = meta.schema.names.index("url_surtkey")
        groups = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(column).statistics
            if stats is None or not stats.has_min_max:
                groups.append(("", "\U0010ffff"))  # no statistics: the group may hold any key
            else:
                groups.append((stats.min, stats.max))
        files.append(IndexFile(uri, parts.get("crawl", ""), tuple(groups)))
    return files


def url_keys(urls: pa.Table) -> pa.Table:
    """`url`, `url_surtkey`, `first_utc` of a URL table, sorted by key; URLs with no key are left out."""
    keys = [surt_key(u) if u else None for u in urls["url"].to_pylist()]
    first = urls["first_utc"] if "first_utc" in urls.column_names else pa.nulls(urls.num_rows, pa.int64())
    table = pa.table({"url": urls["url"], "url_surtkey": pa.array(keys, pa.string()),
                      "first_utc": first.cast(pa.int64())})
    return table.filter(pc.is_valid(table["url_surtkey"])).sort_by("url_surtkey")


def assign(files: list[IndexFile], keys: pa.Table) -> list[tuple[IndexFile, pa.Table]]:
    """Each index file with the URL rows whose key falls in its range (keys sorted); files with none are left out."""
    sorted_keys = keys["url_surtkey"].to_pylist()
    tasks = []
    for file in files:
        start, end = bisect.bisect_left(sorted_keys, file.low), bisect.bisect_right(sorted_keys, file.high)
        if end > start:
            tasks.append((file, keys.slice(start, end - start)))
    return tasks


def join_file(task: tuple[IndexFile, pa.Table]) -> tuple[pa.Table, dict]:
    """The index rows of one file whose key is one of the task's URLs', reading only the row groups that can hold
    them; and what was read (row groups, rows)."""
    file, keys = task
    wanted = keys["url_surtkey"].to_pylist()
    groups = [i for i, (lo, hi) in enumerate(file.row_groups)
              if bisect.bisect_right(wanted, hi) > bisect.bisect_left(wanted, lo)]
    fs, path = filesystem(file.uri)
    with fs.open_input_file(path) as f:
        rows = pq.ParquetFile(f).read_row_groups(groups, columns=READ_COLUMNS) if groups else None
    if rows is None:
        return CAPTURES_SCHEMA.empty_table(), {"row_groups": 0, "rows_scanned": 0}
    scanned = rows.num_rows
    rows = rows.filter(pc.is_in(rows["url_surtkey"], value_set=keys["url_surtkey"]))
    joined = keys.join(rows.rename_columns(["url_surtkey", "capture_url", *READ_COLUMNS[2:]]), "url_surtkey",
                       join_type="inner")
    joined = joined.append_column("crawl", pa.array([file.crawl] * joined.num_rows, pa.string()))
    return joined.select(CAPTURES_SCHEMA.names).cast(CAPTURES_SCHEMA), {"row_groups": len(groups),
                                                                         "rows_scanned": scanned}


def choose_captures(candidates: pa.Table, config: ArchiveConfig) -> pa.Table:
    """Per URL, the status 200 HTML capture within the window closest to its first_utc (ties: the earlier)."""
    ok = pc.and_(pc.equal(candidates["fetch_status"], 200),
                 pc.is_in(candidates["content_mime_detected"], value_set=pa.array(config.html_types)))
    table = candidates.filter(ok)
    if table.num_rows == 0:
        return CAPTURES_SCHEMA.empty_table()
    seconds = table["fetch_time"].cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()
    first = table["first_utc"].to_numpy(zero_copy_only=False)
    known = ~np.isnan(first.astype(float))
    distance = np.where(known, np.abs(seconds - np.nan_to_num(first.astype(float)).astype(np.int64)), seconds)
    keep = ~known | (distance <= config.window_days * 86400)
    table = table.filter(pa.array(keep)).append_column("distance", pa.array(distance[keep], pa.int64()))
    # ties broken by everything else, so that the choice does not depend on the order the tasks finished in
    table = table.sort_by([("url", "ascending"), ("distance", "ascending"), ("fetch_time", "ascending"),
                           ("crawl", "ascending"), ("warc_filename", "ascending"), ("warc_record_offset", "ascending")])
    urls = table["url"].to_numpy(zero_copy_only=False)
    first_of_url = np.ones(len(urls), dtype=bool)
    first_of_url[1:] = urls[1:] != urls[:-1]
    return table.filter(pa.array(first_of_url)).drop_columns(["distance"])


def join_index(urls: pa.Table, root: str, config: ArchiveConfig, crawls: list[str] | None = None,
               executor: str = "local") -> tuple[pa.Table, dict]:
    """The chosen capture of every URL of `urls` that the index at `root` has; and the cost (files, row groups and
    rows read, of how many)."""
    from pipeline.executor import run_tasks

    files = index_files(root, crawls)
    tasks = assign(files, url_keys(urls))
    pieces, read = [], {"files": len(files), "row_groups_total": sum(len(f.row_groups) for f in files),
                        "tasks": len(tasks), "row_groups": 0, "rows_scanned": 0, "most_row_groups_one_task": 0}
    for table, stats in run_tasks(join_file, tasks, executor):
        pieces.append(table)
        read["row_groups"] += stats["row_groups"]
        read["rows_scanned"] += stats["rows_scanned"]
        read["most_row_groups_one_task"] = max(read["most_row_groups_one_task"], stats["row_groups"])
    candidates = pa.concat_tables(pieces) if pieces else CAPTURES_SCHEMA.empty_table()
    return choose_captures(candidates, config), read


def captures_of(chosen: pa.Table, archive: str) -> dict[str, list]:
    """The join's rows as `Capture`s by URL, for the crawl's recovery."""
    from pipeline.archive.cdx import Capture, timestamp_of

    found: dict[str, list] = {}
    for row in chosen.to_pylist():
        found.setdefault(row["url"], []).append(Capture(
            archive=archive, collection=row["crawl"], timestamp=timestamp_of(row["fetch_time"].timestamp()),
            url=row["capture_url"], status=row["fetch_status"], mime=row["content_mime_detected"] or "",
            filename=row["warc_filename"], offset=row["warc_record_offset"], length=row["warc_record_length"]))
    return found
