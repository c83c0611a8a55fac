"""The `crawl` stage: the urls stage's table -> WARC files of the pages plus a fetch log with one outcome per URL.

Two phases:
- `partition`, one task per URL part: each row goes to a bucket by a hash of its host, so every URL of a host is
  in one bucket, fetched by one task: per-host concurrency and delay then hold across a whole cluster (a redirect
  to a host of another bucket is the one exception: that hop is polite within its own task only).
- `fetch`, one task per bucket, with its own asyncio loop (`pipeline.fetch`): the bucket's URLs are taken in
  round-robin order over hosts (each host's first URL, then each host's second, …), at most `window` URLs in
  flight, so memory stays flat in the number of URLs and every host is busy from the start. A task also holds its
  bucket's URL list and the per-host state of its hosts (queue, robots.txt rules, politeness clock), bounded by
  `urls_per_bucket` (the plan picks one bucket per that many URLs): flat in the input and in the number of hosts.
  Output: `part-XXXXX.warc.gz` (response and request records of every complete response: pages, redirect hops,
  robots.txt files, and final responses that are not pages such as 404s; a 2xx body of a type outside the
  allowlist is not downloaded at all) and `part-XXXXX.parquet`, the fetch
  log, sorted by `url_norm`; `warc_file` / `warc_offset` point at the URL's final response when it was archived
  (always for `ok`).

The funnel: every input URL is one fetch-log row (`in` = `out`), whatever happened to it; failures are outcomes
(`outcome` column, counted as `outcome:<name>`), not rejects, because a failed fetch is a fact about the web that
later runs and audits need (what was disallowed, what timed out), and because one model is simpler to check:
the fetch log holds every URL exactly once.

Resume within a task: outcomes are checkpointed every `checkpoint_every` URLs (or `checkpoint_seconds`) as a
segment, a WARC file, the robots.txt decisions made since the last segment (`seg-N.robots.json`; their responses
are in the segment's WARC), then its log rows, under the runner's `_resume/<plan>/<task>/`; the log file is
written last, so a segment whose log exists is complete. A task killed and rerun reads the finished segments,
takes their robots.txt decisions (no host's robots.txt is fetched or archived twice), fetches only the URLs with
no outcome, and at the end joins the segments into the part (offsets shifted). A rerun therefore writes the same
fetch log and the same WARC records as an uninterrupted crawl, up to timing (`elapsed`, record order and dates).

Sources (`source`): `live` fetches every URL from the web; `archive` looks every URL up in the archives
(pipeline/archive: the capture closest to the URL's `first_utc`); `live+archive` asks the archives for the URLs
whose live fetch ended dead. Either way one outcome per URL: the log's `source` says live, archive or lost, and an
archive's page carries its provenance (`archive`, `collection`, `capture_time`, `archive_warc`, `archive_offset`;
the same in the WARC record's headers). Archive requests go through the same fetcher, so they are resumed,
guarded and paced like pages.

Replay: WARC files among the inputs (`webtext crawl --from-warc`) replace the network: responses come from their
records (robots.txt included, when the WARCs hold it), through the same redirect, robots and content rules;
a URL with no record gets `not_in_warc`.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import Field
from yarl import URL

from pipeline.archive.config import ArchiveConfig
from pipeline.archive.recover import Recoverer
from pipeline.fetch import FetchConfig, Fetcher, FetchResult, HttpTransport, ReplayTransport
from pipeline.robots import RobotsRules
from pipeline.records import Rows
from pipeline.runner import RESUME_DIR, Phase, Stage, StageError, TaskContext, subdirs
from pipeline.storage import InputFile, filesystem
from pipeline.warc import WarcSink, index_responses

URL_COLUMNS = ("url", "url_norm", "host", "score_max", "subreddits", "first_utc")
WARC_SUFFIXES = (".warc", ".warc.gz")

FETCH_LOG_SCHEMA = pa.schema([
    ("url", pa.string()), ("url_norm", pa.string()), ("host", pa.string()), ("score_max", pa.int64()),
    ("subreddits", pa.list_(pa.string())), ("outcome", pa.string()), ("final_url", pa.string()),
    ("status", pa.int32()), ("content_type", pa.string()), ("bytes", pa.int64()), ("elapsed", pa.float64()),
    ("attempt", pa.int32()), ("error", pa.string()), ("warc_file", pa.string()), ("warc_offset", pa.int64()),
    ("first_utc", pa.int64()),
    # where the page came from: live, archive, or lost (neither); an archive's capture and its provenance
    ("source", pa.string()), ("archive", pa.string()), ("collection", pa.string()),
    ("capture_time", pa.timestamp("ms", tz="UTC")), ("archive_warc", pa.string()), ("archive_offset", pa.int64()),
])
PROVENANCE = ("archive", "collection", "capture_time", "archive_warc", "archive_offset")
BUCKET_SCHEMA = pa.schema([f for f in FETCH_LOG_SCHEMA if f.name in URL_COLUMNS])


class CrawlConfig(FetchConfig):
    """The fetcher's settings (see `pipeline.fetch.FetchConfig`) plus how the stage splits and checkpoints."""

    num_buckets: int | None = Field(None, ge=1, description="fetch tasks; None: one per urls_per_bucket URLs")
    urls_per_bucket: int = Field(20_000, ge=1)
    window: int = Field(2_000, ge=1, description="URLs of one task in flight at once (memory bound)")
    checkpoint_every: int = Field(500, ge=1, description="URLs per checkpoint segment")
    checkpoint_seconds: float = Field(30.0, gt=0)
    seed: int = Field(0, description="seeds backoff jitter")
    source: Literal["live", "archive", "live+archive"] = Field(
        "live", description="live: the web as it is; archive: every URL from the archives; live+archive: the "
                            "archives for URLs whose live fetch ended dead (archive.dead_outcomes, dead_statuses)")
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)


def host_of(url: str) -> str:
    try:
        return (URL(url).host or "").lower()
    except (ValueError, TypeError):  # TypeError: a null url
        return ""


def bucket_of(hosts: pa.ChunkedArray, n_buckets: int) -> np.ndarray:
    """The bucket of each row's host (hashed once per distinct host)."""
    encoded = pc.dictionary_encode(pc.fill_null(hosts, "").combine_chunks())
    buckets = np.fromiter((xxhash.xxh64_intdigest(h.encode()) % n_buckets for h in encoded.dictionary.to_pylist()),
                          np.int64, len(encoded.dictionary))
    return buckets[encoded.indices.to_numpy(zero_copy_only=False)]


def read_url_table(file: InputFile) -> pa.Table:
    """The columns the crawl needs from a urls-stage part; `url` alone is enough (the rest is derived or null)."""
    fs, path = filesystem(file.uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as err:
        raise StageError(f"{file.uri}: not a readable Parquet URL table: {err}") from None
    if "url" not in table.column_names:
        raise StageError(f"{file.uri}: no 'url' column (columns: {', '.join(table.column_names)})")
    if not (pa.types.is_string(table["url"].type) or pa.types.is_large_string(table["url"].type)):
        raise StageError(f"{file.uri}: column url has type {table['url'].type}, not text")
    columns = {}
    for f in BUCKET_SCHEMA:
        if f.name in table.column_names:
            try:
                columns[f.name] = table[f.name].cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise StageError(f"{file.uri}: column {f.name} of type {table[f.name].type} does not read as "
                                 f"{f.type}: {err}") from None
        elif f.name == "url_norm":
            columns[f.name] = table["url"].cast(pa.string())
        elif f.name == "host":
            columns[f.name] = pa.array([host_of(u) for u in table["url"].to_pylist()], pa.string())
        else:
            columns[f.name] = pa.nulls(table.num_rows, f.type)
    return pa.table(columns, schema=BUCKET_SCHEMA)


def round_robin(table: pa.Table) -> pa.Table:
    """Rows ordered by their rank within their host, then host: every host's first URL, then every second, …

    Hosts are dictionary-encoded, so the work is on integer arrays, not on one Python string per URL.
    """
    if table.num_rows == 0:
        return table
    table = table.sort_by([("host", "ascending"), ("url_norm", "ascending")])
    encoded = pc.dictionary_encode(pc.fill_null(table["host"], "").combine_chunks())
    host_index = encoded.indices.to_numpy(zero_copy_only=False)
    host_hashes = np.fromiter((xxhash.xxh64_intdigest((h or "").encode()) for h in encoded.dictionary.to_pylist()),
                              np.uint64, len(encoded.dictionary))
    index = np.arange(len(host_index))
    first = np.ones(len(host_index), dtype=bool)
    first[1:] = host_index[1:] != host_index[:-1]
    rank = index - np.maximum.accumulate(np.where(first, index, 0))
    return table.take(np.lexsort((host_hashes[host_index], rank)))


class Segment:
    """The checkpoint being filled: a WARC in memory, the robots.txt decisions it archives, its log rows."""

    def __init__(self, number: int):
        self.number = number
        self.buffer = io.BytesIO()
        self.warc = WarcSink(self.buffer)
        self.robots: dict[str, dict] = {}
        self.rows = Rows(FETCH_LOG_SCHEMA)
        self.started = time.monotonic()


PARTITION = "partition"  # the phase whose bucket files the fetch reads


@dataclass(frozen=True)
class PartitionTask:
    """Split one URL table into `buckets` by host."""

    table: InputFile
    buckets: int


@dataclass(frozen=True)
class FetchTask:
    """Fetch (or replay from `warcs`) the URLs of `bucket`, gathered from each of the `partitions` tasks."""

    bucket: int
    partitions: int
    warcs: tuple[InputFile, ...]


class CrawlStage(Stage):
    name = "crawl"
    version = 1

    config: CrawlConfig

    # -- planning -------------------------------------------------------------------------------------------

    def split_inputs(self, inputs: list[InputFile]) -> tuple[list[InputFile], list[InputFile]]:
        warcs = [f for f in inputs if f.name.lower().endswith(WARC_SUFFIXES)]
        tables = [f for f in inputs if f.name.lower().endswith(".parquet")]
        others = [f.uri for f in inputs if f not in warcs and f not in tables]
        if others:
            raise StageError(f"crawl reads URL tables (Parquet) and WARC files; not these: {', '.join(others[:3])}")
        if not tables:
            raise StageError("crawl: no URL table (*.parquet) among the inputs")
        return tables, warcs

    @staticmethod
    def count_urls(tables: list[InputFile]) -> int:
        rows = 0
        for file in tables:
            fs, path = filesystem(file.uri)
            try:
                with fs.open_input_file(path) as f:
                    rows += pq.ParquetFile(f).metadata.num_rows
            except (OSError, pa.ArrowInvalid) as err:
                raise StageError(f"{file.uri}: not a readable Parquet URL table: {err}") from None
        return rows

    def n_buckets(self, tables: list[InputFile]) -> int:
        if self.config.num_buckets:
            return self.config.num_buckets
        return max(1, math.ceil(self.count_urls(tables) / self.config.urls_per_bucket))

    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        tables, warcs = self.split_inputs(inputs)
        buckets = self.n_buckets(tables)
        return [Phase(PARTITION, self.partition, [PartitionTask(file, buckets) for file in tables]),
                Phase("fetch", self.fetch_bucket,
                      [FetchTask(bucket, len(tables), tuple(warcs)) for bucket in range(buckets)])]

    # -- partition ------------------------------------------------------------------------------------------

    def partition(self, task: PartitionTask, ctx: TaskContext) -> None:
        table = read_url_table(task.table)
        buckets = bucket_of(table["host"], task.buckets)
        for bucket in np.unique(buckets):
            part = table.filter(pa.array(buckets == bucket))
            ctx.write_table(ctx.work_name(bucket_name(int(bucket))), part)
        ctx.count("partitioned", table.num_rows)

    # -- fetch ----------------------------------------------------------------------------------------------

    def fetch_bucket(self, task: FetchTask, ctx: TaskContext) -> None:
        out, name = ctx.out, bucket_name(task.bucket)
        pieces = [ctx.read_work(PARTITION, i, name) for i in range(task.partitions)
                  if ctx.has_work(PARTITION, i, name)]  # a partition task writes the buckets it has rows for
        table = pa.concat_tables(pieces).cast(BUCKET_SCHEMA) if pieces else BUCKET_SCHEMA.empty_table()
        ctx.count("in", table.num_rows)

        resume_dir = ctx.resume_name("").rstrip("/")
        segments = self._finished_segments(ctx, resume_dir)
        done = pa.concat_tables([out.read_parquet(name) for _, name in segments]) if segments else None
        todo = round_robin(table)
        if done is not None and done.num_rows:
            todo = todo.filter(pc.invert(pc.is_in(todo["url_norm"], value_set=done["url_norm"])))
        progress = {"urls": table.num_rows, "pages": 0, "bytes": 0, "errors": 0, "done": 0}
        if done is not None:
            for outcome, n_bytes in zip(done["outcome"].to_pylist(), done["bytes"].to_pylist()):
                self._tally(progress, outcome, n_bytes or 0)
        next_number = max((n for n, _ in segments), default=-1) + 1
        robots = {}
        for _, name in segments:
            robots_name = name[: -len(".parquet")] + ".robots.json"
            if out.exists(robots_name):
                robots.update(out.read_json(robots_name))
        asyncio.run(self._crawl(todo, list(task.warcs), ctx, resume_dir, next_number, progress, robots))
        self._assemble(ctx, resume_dir)

    def _finished_segments(self, ctx: TaskContext, resume_dir: str) -> list[tuple[int, str]]:
        """Segments whose log was written; a WARC or robots file without its log (killed in between) is removed."""
        logs = ctx.out.list(resume_dir, "seg-*.parquet")
        numbers = {int(name.rsplit("seg-", 1)[1].split(".")[0]) for name in logs}
        for name in ctx.out.list(resume_dir, "seg-*.warc.gz") + ctx.out.list(resume_dir, "seg-*.robots.json"):
            if int(name.rsplit("seg-", 1)[1].split(".")[0]) not in numbers:
                ctx.out.delete(name)
        return sorted((int(name.rsplit("seg-", 1)[1].split(".")[0]), name) for name in logs)

    @staticmethod
    def _tally(progress: dict, outcome: str, n_bytes: int) -> None:
        progress["done"] += 1
        if outcome == "ok":
            progress["pages"] += 1
            progress["bytes"] += n_bytes
        else:
            progress["errors"] += 1

    def _transport(self, warcs: list[InputFile]):
        if not warcs:
            return HttpTransport(self.config), True
        index: dict[str, tuple[str, int]] = {}
        for file in warcs:
            fs, path = filesystem(file.uri)
            try:
                with fs.open_input_file(path) as stream:
                    for offset, url in index_responses(stream):
                        index[url] = (file.uri, offset)
            except Exception as err:  # warcio raises many types on a damaged file
                raise StageError(f"{file.uri}: cannot read WARC: {type(err).__name__}: {err}") from None

        def open_file(uri: str):
            fs, path = filesystem(uri)
            return fs.open_input_file(path)

        return ReplayTransport(index, open_file), False

    async def _crawl(self, todo: pa.Table, warcs: list[InputFile], ctx: TaskContext, resume_dir: str,
                     number: int, progress: dict, robots: dict[str, dict]) -> None:
        transport, live = self._transport(warcs)
        fetcher = Fetcher(self.config, transport, todo.num_rows, polite=live,
                          rng=random.Random(f"{self.config.seed}:{ctx.index}"))
        # a columnar index is joined with this task's URLs only: its hosts' row groups, not the whole index
        recoverer = Recoverer(fetcher, self.config.archive, todo) if self.config.source != "live" else None
        for key, decision in robots.items():
            fetcher.restore_robots(key, RobotsRules.from_json(decision))
        window = asyncio.Semaphore(self.config.window)
        segment = Segment(number)
        last_progress = 0.0
        out = ctx.out

        def flush(force: bool = False) -> None:
            nonlocal segment
            if not (segment.rows or segment.buffer.tell()) and not force:
                return
            base = f"{resume_dir}/seg-{segment.number:06d}"
            # fenced like every file a task commits: a task of a dead run must not write checkpoints that a resumed
            # run of the same plan reads (or that overwrite the resumed run's own segments)
            out.write_bytes(f"{base}.warc.gz", segment.buffer.getvalue(), before_commit=ctx.check_fence)
            if segment.robots:
                out.write_json(f"{base}.robots.json", segment.robots, before_commit=ctx.check_fence)
            out.write_parquet(f"{base}.parquet", segment.rows.take(), before_commit=ctx.check_fence)
            segment = Segment(segment.number + 1)

        def archive_robots() -> None:
            for key, rules, exchanges in fetcher.robots_done:
                for exchange in exchanges:
                    segment.warc.write(exchange)
                segment.robots[key] = rules.to_json()
            fetcher.robots_done.clear()

        def record(row: dict, result: FetchResult) -> None:
            nonlocal last_progress
            archive_robots()
            offset = None
            for exchange in result.exchanges:
                offset = segment.warc.write(exchange)
            ok = result.outcome == "ok"
            archived = result.final_archived
            values = {
                **row, "outcome": result.outcome, "final_url": result.final_url, "status": result.status,
                "content_type": result.content_type, "bytes": result.bytes, "elapsed": result.elapsed,
                "attempt": result.attempt, "error": result.error,
                "warc_file": f"seg-{segment.number:06d}.warc.gz" if archived else None,
                "warc_offset": offset if archived else None,
                "source": getattr(result, "source", "live" if ok else "lost"),
                **{name: getattr(result, name, None) for name in PROVENANCE},
            }
            segment.rows.add(*(values.get(name) for name in FETCH_LOG_SCHEMA.names))
            self._tally(progress, result.outcome, result.bytes if ok else 0)
            now = time.monotonic()
            if len(segment.rows) >= self.config.checkpoint_every or now - segment.started >= self.config.checkpoint_seconds:
                flush()
            if now - last_progress >= 1.0:
                last_progress = now
                out.write_json(f"{resume_dir}/progress.json", progress, before_commit=ctx.check_fence)

        async def one(row: dict) -> None:
            try:
                result = await self._one(row, fetcher, recoverer)
            except Exception as err:  # a crawler bug must not lose the other URLs: recorded, named
                result = FetchResult(row["url"], "crawler_error", error=f"{type(err).__name__}: {err}"[:500])
            finally:
                window.release()
            record(row, result)

        try:
            running: set[asyncio.Task] = set()
            for batch in todo.to_batches(max_chunksize=1024):
                for row in batch.to_pylist():
                    await window.acquire()
                    task = asyncio.create_task(one(row))
                    running.add(task)
                    task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*list(running))
            archive_robots()
            flush()
        finally:
            await transport.close()
        out.write_json(f"{resume_dir}/progress.json", progress, before_commit=ctx.check_fence)

    async def _one(self, row: dict, fetcher: Fetcher, recoverer: Recoverer | None) -> FetchResult:
        """One URL's one outcome: live, or from the archives (`source`); a dead live URL the archives do not have
        keeps its live outcome, with what the archives said in `error`."""
        if recoverer is None:
            return await fetcher.fetch(row["url"])
        if self.config.source == "archive":
            return await recoverer.recover(row["url"], row.get("first_utc"))
        result = await fetcher.fetch(row["url"])
        if not recoverer.is_dead(result):
            return result
        recovered = await recoverer.recover(row["url"], row.get("first_utc"))
        if recovered.outcome == "ok":
            return recovered
        result.error = f"{result.error}; archives: {recovered.error}"[:500]
        return result

    def _assemble(self, ctx: TaskContext, resume_dir: str) -> None:
        """Join the segments into the part's WARC and fetch log; offsets shift by the bytes before each segment."""
        out = ctx.out
        segments = self._finished_segments(ctx, resume_dir)
        warc_name = ctx.part_name(".warc.gz")
        tables, shift = [], 0
        with ctx.open_output(warc_name) as stream:
            for _, log_name in segments:
                data = out.read_bytes(log_name[: -len(".parquet")] + ".warc.gz")
                stream.write(data)
                log = out.read_parquet(log_name)
                offsets = pc.add(log["warc_offset"], pa.scalar(shift, pa.int64()))
                names = pc.if_else(pc.is_null(log["warc_file"]), pa.scalar(None, pa.string()), warc_name)
                log = log.set_column(log.schema.get_field_index("warc_offset"), "warc_offset", offsets)
                log = log.set_column(log.schema.get_field_index("warc_file"), "warc_file", names)
                tables.append(log)
                shift += len(data)
        log = pa.concat_tables(tables) if tables else FETCH_LOG_SCHEMA.empty_table()
        log = log.sort_by([("url_norm", "ascending")])
        for outcome, n in Counter(log["outcome"].to_pylist()).items():
            ctx.count(f"outcome:{outcome}", n)
        for source, n in Counter(log["source"].to_pylist()).items():
            ctx.count(f"source:{source}", n)
        ctx.count("pages", int(pc.sum(pc.equal(log["outcome"], "ok")).as_py() or 0))
        ctx.write_part(log)


def bucket_name(bucket: int) -> str:
    return f"bucket-{bucket:05d}.parquet"


def progress_of(out_location: str) -> dict[str, int]:
    """Summed progress of the fetch tasks of a crawl under way (for the CLI's bar)."""
    from pipeline.storage import Dir

    stage = Dir(out_location).sub(CrawlStage.name)
    total: Counter = Counter()
    for plan in subdirs(stage, RESUME_DIR):
        for task in subdirs(stage, f"{RESUME_DIR}/{plan}"):
            try:
                total.update(json.loads(stage.read_bytes(f"{RESUME_DIR}/{plan}/{task}/progress.json")))
            except (OSError, ValueError):
                continue
    return dict(total)
