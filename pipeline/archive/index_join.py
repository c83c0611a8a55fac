"""Common Crawl's columnar URL index joined with the URL table on the SURT key: index scans, not per-URL lookups.

Common Crawl publishes, per crawl, a Parquet table of every capture (`cc-index/table/cc-main/warc/crawl=…/
subset=…/part-*.parquet`, schema `CC_INDEX_SCHEMA`): `subset=warc` holds the successful captures,
`subset=crawldiagnostics` the redirects, 404s and other failures (`robotstxt` is not read). Each file is sorted by
`url_surtkey`. A SURT key starts with the reversed host (`com,example)/path`), so sorting by it groups a host's
captures together, and every row group's footer statistics (min, max `url_surtkey`) say which hosts it can hold.
The join:

1. plan (footers only): every index file's row groups with their key ranges (`index_files`);
2. the URL table's SURT keys (the `surt` package: the same canonicalisation the Wayback Machine and Common Crawl
   index with), sorted; each index file gets the URL keys within its range (`assign`): a prefilter by host;
3. one task per index file that has URL keys (`join_file`, on Ray or here): it reads only the row groups whose key
   range holds one of its URL keys, and only the columns the choice needs, and keeps the rows whose key is one of
   its URLs' (a hash join on `url_surtkey`); no task reads the whole index, and a task's memory is its row groups;
   the `warc` files are joined with every URL, the `crawldiagnostics` files only with the URLs that found no page;
4. the choice (`choose_captures`), vectorised, the CDX path's (`cdx.choose`): per URL, among status 200 HTML
   captures (`content_mime_detected`) within the window, the one closest to `first_utc` (ties: the earlier, then by
   crawl name), over all crawls; with none, the closest redirect (3xx) within the window;
5. archived redirects: the URLs whose choice is a redirect are looked up again at its target (`fetch_redirect`
   resolved against the capture's URL, with the URL's `first_utc`: `redirect_lookups`), all together in one more
   join round (steps 2-4), at most `max_redirects` rounds; a target already looked up (a loop, a target shared by
   several URLs) is not looked up again.

The result (`CAPTURES_SCHEMA`): the chosen capture of every (url, first_utc) looked up that the index has, the URL
table's and the redirect targets'. `recover.py` walks the redirect chains through it as it walks the CDX path's
(each hop's record fetched, its `Location` followed), and `records.py` fetches the records by range request.
Crawls before CC-MAIN-2019-47 have no `fetch_redirect`: their redirects' targets are known only from the record,
and `recover.py` asks the archive's CDX API about them (`captures_of`: the keys the join did not answer).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.archive.config import ArchiveConfig
from pipeline.fetch import REDIRECT_STATUSES, redirect_target
from pipeline.storage import filesystem


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


# Common Crawl's flat index schema as published: commoncrawl/cc-index-table, src/main/resources/schema/
# cc-index-schema-flat.json (and src/sql/athena/cc-index-create-table-flat.sql): names, order, nullability; its
# Spark types as Arrow's (string; integer: int32; short: int16; timestamp: microseconds, an instant in UTC). Its last
# two fields, `crawl` and `subset`, are Hive partitions (directory names), not columns of the files. Spark writes
# timestamps as INT96 by default, which pyarrow reads as timestamp[ns]: the join casts whatever unit it finds.
CC_INDEX_SCHEMA = pa.schema([
    _field("url_surtkey", pa.string(), False), _field("url", pa.string(), False),
    _field("url_host_name", pa.string(), False), _field("url_host_tld", pa.string()),
    _field("url_host_2nd_last_part", pa.string()), _field("url_host_3rd_last_part", pa.string()),
    _field("url_host_4th_last_part", pa.string()), _field("url_host_5th_last_part", pa.string()),
    _field("url_host_registry_suffix", pa.string()), _field("url_host_registered_domain", pa.string()),
    _field("url_host_private_suffix", pa.string()), _field("url_host_private_domain", pa.string()),
    _field("url_host_name_reversed", pa.string()), _field("url_protocol", pa.string(), False),
    _field("url_port", pa.int32()), _field("url_path", pa.string(), False), _field("url_query", pa.string()),
    _field("fetch_time", pa.timestamp("us", tz="UTC"), False), _field("fetch_status", pa.int16(), False),
    _field("fetch_redirect", pa.string()), _field("content_digest", pa.string()),
    _field("content_mime_type", pa.string()), _field("content_mime_detected", pa.string()),
    _field("content_charset", pa.string()), _field("content_languages", pa.string()),
    _field("content_truncated", pa.string()), _field("warc_filename", pa.string(), False),
    _field("warc_record_offset", pa.int32(), False), _field("warc_record_length", pa.int32(), False),
    _field("warc_segment", pa.string(), False),
])
# Columns older crawls' files lack, with the first crawl that has them (the schema's "since"; it gives none for
# url_host_name_reversed, which came to the table writer in December 2021: cc-index-table commit 722cafb).
LATER_COLUMNS = {"content_charset": "CC-MAIN-2018-39", "content_languages": "CC-MAIN-2018-39",
                 "fetch_redirect": "CC-MAIN-2019-47", "content_truncated": "CC-MAIN-2019-47",
                 "url_host_name_reversed": None}
READ_COLUMNS = ["url_surtkey", "url", "fetch_time", "fetch_status", "fetch_redirect", "content_mime_detected",
                "warc_filename", "warc_record_offset", "warc_record_length"]
SUBSETS = ("warc", "crawldiagnostics")
CAPTURES_SCHEMA = pa.schema([
    ("url", pa.string()), ("url_surtkey", pa.string()), ("first_utc", pa.int64()), ("crawl", pa.string()),
    ("capture_url", pa.string()), ("fetch_time", pa.timestamp("us", tz="UTC")), ("fetch_status", pa.int16()),
    ("fetch_redirect", pa.string()), ("content_mime_detected", pa.string()), ("warc_filename", pa.string()),
    ("warc_record_offset", pa.int64()), ("warc_record_length", pa.int64()),
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
    """One Parquet file of the index: its crawl, its subset and its row groups' (min key, max key)."""

    uri: str
    crawl: str
    row_groups: tuple[tuple[str, str], ...]
    subset: str = "warc"

    @property
    def low(self) -> str:
        return min(lo for lo, _ in self.row_groups)

    @property
    def high(self) -> str:
        return max(hi for _, hi in self.row_groups)


def index_files(root: str, crawls: list[str] | None = None) -> list[IndexFile]:
    """The index's files under `root` (…/warc/, holding crawl=*/subset=*/*.parquet) of the subsets the join reads,
    footers only."""
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    files = []
    infos = fs.get_file_info(pafs.FileSelector(base.rstrip("/"), recursive=True))
    for info in sorted((i for i in infos if i.path.endswith(".parquet")), key=lambda i: i.path):
        parts = dict(p.split("=", 1) for p in info.path.split("/") if "=" in p)
        if parts.get("subset", "warc") not in SUBSETS or (crawls and parts.get("crawl") not in crawls):
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
        files.append(IndexFile(uri, parts.get("crawl", ""), tuple(groups), parts.get("subset", "warc")))
    return files


def url_keys(urls: pa.Table) -> pa.Table:
    """`url`, `url_surtkey`, `first_utc` of a URL table, sorted by key; URLs with no key are left out."""
    keys = [surt_key(u) if u else None for u in urls["url"].to_pylist()]
    table = pa.table({"url": urls["url"].cast(pa.string()), "url_surtkey": pa.array(keys, pa.string()),
                      "first_utc": first_utc_of(urls)})
    return table.filter(pc.is_valid(table["url_surtkey"])).sort_by("url_surtkey")


def first_utc_of(urls: pa.Table) -> pa.ChunkedArray:
    """A URL table's `first_utc` as int64 (all null when it has none: a URL table that is not Reddit's)."""
    if "first_utc" not in urls.column_names:
        return pa.chunked_array([pa.nulls(urls.num_rows, pa.int64())])
    return urls["first_utc"].cast(pa.int64())


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
    them; and what was read (row groups, rows). A column the file lacks (an older crawl's) is read as nulls."""
    file, keys = task
    wanted = keys["url_surtkey"].to_pylist()
    groups = [i for i, (lo, hi) in enumerate(file.row_groups)
              if bisect.bisect_right(wanted, hi) > bisect.bisect_left(wanted, lo)]
    if not groups:
        return CAPTURES_SCHEMA.empty_table(), {"row_groups": 0, "rows_scanned": 0}
    fs, path = filesystem(file.uri)
    with fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        present = [c for c in READ_COLUMNS if c in parquet.schema_arrow.names]
        rows = parquet.read_row_groups(groups, columns=present)
    for column in READ_COLUMNS:
        if column not in present:
            rows = rows.append_column(column, pa.nulls(rows.num_rows, CC_INDEX_SCHEMA.field(column).type))
    scanned = rows.num_rows
    rows = rows.select(READ_COLUMNS).rename_columns(["url_surtkey", "capture_url", *READ_COLUMNS[2:]])
    rows = rows.filter(pc.is_in(rows["url_surtkey"], value_set=keys["url_surtkey"]))
    rows = rows.set_column(2, "fetch_time", rows["fetch_time"].cast(CAPTURES_SCHEMA.field("fetch_time").type))
    joined = keys.join(rows, "url_surtkey", join_type="inner")
    joined = joined.append_column("crawl", pa.array([file.crawl] * joined.num_rows, pa.string()))
    return joined.select(CAPTURES_SCHEMA.names).cast(CAPTURES_SCHEMA), {"row_groups": len(groups),
                                                                         "rows_scanned": scanned}


def is_page(captures: pa.Table, config: ArchiveConfig) -> pa.ChunkedArray:
    """Which captures are pages: status 200 with an HTML type."""
    page = pc.and_kleene(pc.equal(captures["fetch_status"], 200),
                         pc.is_in(captures["content_mime_detected"], value_set=pa.array(config.html_types)))
    return pc.fill_null(page, False)


def is_redirect(captures: pa.Table) -> pa.ChunkedArray:
    return pc.is_in(captures["fetch_status"], value_set=pa.array(REDIRECT_STATUSES, pa.int16()))


def choose_captures(candidates: pa.Table, config: ArchiveConfig) -> pa.Table:
    """Per (url, first_utc), the status 200 HTML capture within the window closest to first_utc (ties: the earlier);
    with none, the closest redirect within the window (`cdx.choose`'s rule)."""
    page = is_page(candidates, config).to_numpy(zero_copy_only=False)
    rank = np.where(page, 0, np.where(is_redirect(candidates).to_numpy(zero_copy_only=False), 1, 2))
    table = candidates.append_column("rank", pa.array(rank, pa.int8())).filter(pa.array(rank < 2))
    if table.num_rows == 0:
        return CAPTURES_SCHEMA.empty_table()
    seconds = pc.cast(table["fetch_time"], pa.timestamp("s", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
    first = table["first_utc"].to_numpy(zero_copy_only=False)
    known = ~np.isnan(first.astype(float))
    distance = np.where(known, np.abs(seconds - np.nan_to_num(first.astype(float)).astype(np.int64)), seconds)
    keep = ~known | (distance <= config.window_days * 86400)
    table = table.filter(pa.array(keep)).append_column("distance", pa.array(distance[keep], pa.int64()))
    # ties broken by everything else, so that the choice does not depend on the order the tasks finished in
    table = table.sort_by([("url", "ascending"), ("first_utc", "ascending"), ("rank", "ascending"),
                           ("distance", "ascending"), ("fetch_time", "ascending"), ("crawl", "ascending"),
                           ("warc_filename", "ascending"), ("warc_record_offset", "ascending")])
    urls = table["url"].to_numpy(zero_copy_only=False)
    firsts = table["first_utc"].fill_null(np.iinfo(np.int64).min).to_numpy()
    first_of_key = np.ones(len(urls), dtype=bool)
    first_of_key[1:] = (urls[1:] != urls[:-1]) | (firsts[1:] != firsts[:-1])
    return table.filter(pa.array(first_of_key)).drop_columns(["rank", "distance"])


def redirect_lookups(chosen: pa.Table) -> pa.Table:
    """`url`, `first_utc`: where the chosen redirects lead (`fetch_redirect` resolved against the capture's URL, as
    `recover.py` resolves the record's `Location`), each with the first_utc of the URL it was chosen for; a redirect
    with no `fetch_redirect` (crawls before CC-MAIN-2019-47) or one that is not a URL has none."""
    redirects = chosen.filter(pc.and_(is_redirect(chosen), pc.is_valid(chosen["fetch_redirect"])))
    targets, firsts = [], []
    for base, location, first in zip(redirects["capture_url"].to_pylist(), redirects["fetch_redirect"].to_pylist(),
                                     redirects["first_utc"].to_pylist()):
        try:
            targets.append(redirect_target(base, location))
        except ValueError:
            continue  # recover.py gives such a redirect its outcome (bad_url) when it reads the record
        firsts.append(first)
    return pa.table({"url": pa.array(targets, pa.string()), "first_utc": pa.array(firsts, pa.int64())})


def join_round(files: list[IndexFile], keys: pa.Table, config: ArchiveConfig, executor: str,
               read: dict) -> pa.Table:
    """One join of `keys` with the index: the `warc` files, then the `crawldiagnostics` files for the keys that
    found no page; the choice of each key's capture. Adds what was read to `read`."""
    from pipeline.executor import run_tasks

    def scan(subset_files: list[IndexFile], subset_keys: pa.Table) -> list[pa.Table]:
        tasks = assign(subset_files, subset_keys)
        read["tasks"] += len(tasks)
        pieces = []
        for table, stats in run_tasks(join_file, tasks, executor):
            pieces.append(table)
            read["row_groups"] += stats["row_groups"]
            read["rows_scanned"] += stats["rows_scanned"]
            read["most_row_groups_one_task"] = max(read["most_row_groups_one_task"], stats["row_groups"])
        return pieces

    found = choose_captures(pa.concat_tables([CAPTURES_SCHEMA.empty_table(),
                                              *scan([f for f in files if f.subset == "warc"], keys)]), config)
    failures = [f for f in files if f.subset != "warc"]
    if not failures:
        return found
    with_page = found.filter(is_page(found, config))
    has_page = set(zip(with_page["url"].to_pylist(), with_page["first_utc"].to_pylist()))
    no_page = [key not in has_page for key in zip(keys["url"].to_pylist(), keys["first_utc"].to_pylist())]
    # the best of all captures is the best of the warc files' best and the others
    return choose_captures(pa.concat_tables([found, *scan(failures, keys.filter(pa.array(no_page, pa.bool_())))]),
                           config)


def join_index(urls: pa.Table, root: str, config: ArchiveConfig, crawls: list[str] | None = None,
               executor: str = "local", max_redirects: int = 0) -> tuple[pa.Table, dict]:
    """The chosen capture of every URL of `urls` that the index at `root` has, and of every redirect target met
    within `max_redirects` hops; and the cost (files, row groups and rows read, of how many; join rounds)."""
    files = index_files(root, crawls)
    read = {"files": len(files), "row_groups_total": sum(len(f.row_groups) for f in files), "tasks": 0,
            "row_groups": 0, "rows_scanned": 0, "most_row_groups_one_task": 0, "rounds": 0, "redirect_lookups": 0}
    keys = url_keys(urls)
    looked_up = set(zip(keys["url"].to_pylist(), keys["first_utc"].to_pylist()))
    chosen = []
    for hop in range(max_redirects + 1):
        chosen.append(join_round(files, keys, config, executor, read))
        read["rounds"] += 1
        if hop == max_redirects:
            break
        targets = redirect_lookups(chosen[-1]).to_pylist()
        fresh = list({(t["url"], t["first_utc"]) for t in targets} - looked_up)
        if not fresh:
            break
        looked_up.update(fresh)
        read["redirect_lookups"] += len(fresh)
        keys = url_keys(pa.table({"url": pa.array([u for u, _ in fresh], pa.string()),
                                  "first_utc": pa.array([f for _, f in fresh], pa.int64())}))
    return pa.concat_tables(chosen), read


def captures_of(urls: pa.Table, chosen: pa.Table, archive: str) -> dict[tuple[str, int | None], list]:
    """The join's answers as `Capture`s by (url, first_utc), for the crawl's recovery: for every URL of `urls` and
    every redirect target of the join, its chosen capture or none. A key missing is one the join could not look up
    (a redirect target only its record names)."""
    from pipeline.archive.cdx import Capture, timestamp_of

    answers: dict[tuple[str, int | None], list] = {}
    for table in (urls, redirect_lookups(chosen)):
        answers.update((key, []) for key in zip(table["url"].to_pylist(), first_utc_of(table).to_pylist()))
    for row in chosen.to_pylist():
        answers[(row["url"], row["first_utc"])] = [Capture(
            archive=archive, collection=row["crawl"], timestamp=timestamp_of(row["fetch_time"].timestamp()),
            url=row["capture_url"], status=row["fetch_status"], mime=row["content_mime_detected"] or "",
            filename=row["warc_filename"], offset=row["warc_record_offset"], length=row["warc_record_length"])]
    return answers
