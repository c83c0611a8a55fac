"""The `urls` stage: Pushshift submission dumps -> one Parquet row per normalised outbound URL with its karma.

Two phases, so memory stays bounded whatever the size of a dump:
- `map`, one task per dump file: stream the file (zst / xz / gz / bz2 / plain NDJSON), parse each line, apply the
  record rules (link posts only, NSFW, http(s), domain and extension blocklists) and write the surviving
  submissions into `num_buckets` shuffle files by a hash of `url_norm`. Memory: one batch of rows.
- `reduce`, one task per bucket: gather that bucket from every map task, group by `url_norm`, apply the karma rule
  (WebText: the best submission's score; OpenWebText2: the sum over submissions) and write `part-<bucket>.parquet`
  sorted by `url_norm`. Memory: one bucket, about (link submissions kept) / num_buckets rows.

Every line that is not kept lands in `_rejected/` with its file, line number and reason. The kept fields of a
rejected submission are stored, not its whole JSON (file and line point back to it); an unparsable line is
stored raw. Output depends only on the inputs and config, never on the number of workers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import zstandard
from pydantic import Field

from pipeline.config import Config
from pipeline.runner import Stage, StageError, TaskContext
from pipeline.storage import InputFile
from pipeline.urlnorm import DEFAULT_TRACKING_PARAMS, BadURL, TrackingParams, normalize

# Hosts whose pages are media or reddit itself, not prose; a rule matches the host and its subdomains.
# wikipedia.org: GPT-2 removed Wikipedia from WebText to keep it apart from common evaluation data.
DEFAULT_BLOCKED_DOMAINS = (
    "reddit.com", "redd.it", "redditmedia.com", "redditstatic.com", "reddituploads.com",
    "imgur.com", "gfycat.com", "redgifs.com", "giphy.com", "tenor.com", "gyazo.com", "imgflip.com",
    "flickr.com", "instagram.com", "pinterest.com", "500px.com", "deviantart.com", "photobucket.com",
    "youtube.com", "youtu.be", "vimeo.com", "dailymotion.com", "twitch.tv", "streamable.com", "liveleak.com",
    "tiktok.com", "vine.co", "soundcloud.com", "spotify.com", "bandcamp.com",
    "twitter.com", "x.com", "facebook.com", "fb.com",
    "dropbox.com", "drive.google.com", "docs.google.com", "mega.nz",
    "wikipedia.org",
)
DEFAULT_BLOCKED_EXTENSIONS = (
    # images, video, audio
    "jpg", "jpeg", "png", "gif", "gifv", "webp", "bmp", "svg", "tif", "tiff", "ico", "heic",
    "mp4", "webm", "mov", "avi", "mkv", "flv", "wmv", "m4v", "mpg", "mpeg", "3gp",
    "mp3", "wav", "ogg", "oga", "flac", "m4a", "aac", "wma", "opus",
    # archives, executables, disk images
    "zip", "rar", "7z", "tar", "gz", "tgz", "bz2", "xz", "zst",
    "exe", "msi", "dmg", "apk", "deb", "rpm", "iso", "bin", "jar",
    # documents that are not HTML (extraction reads HTML only)
    "pdf", "doc", "docx", "ppt", "pptx", "xls", "xlsx", "odt", "epub",
)

SHUFFLE_SCHEMA = pa.schema([
    ("url_norm", pa.string()), ("url", pa.string()), ("host", pa.string()), ("subreddit", pa.string()),
    ("score", pa.int64()), ("created_utc", pa.int64()), ("id", pa.string()),
    ("file", pa.string()), ("line", pa.int64()),
])
REJECTED_SCHEMA = pa.schema([
    ("reason", pa.string()), ("detail", pa.string()), ("file", pa.string()), ("line", pa.int64()),
    ("id", pa.string()), ("url", pa.string()), ("score", pa.int64()), ("raw", pa.binary()),
])
OUTPUT_SCHEMA = pa.schema([
    ("url", pa.string()), ("url_norm", pa.string()), ("host", pa.string()),
    ("subreddits", pa.list_(pa.string())), ("score_max", pa.int64()), ("score_sum", pa.int64()),
    ("n_submissions", pa.int64()), ("first_utc", pa.int64()), ("ids", pa.list_(pa.string())),
])


class UrlsConfig(Config):
    """Rules of the urls stage; every rule that drops a record names itself in the reject reason."""

    karma_rule: Literal["max", "sum"] = Field("max", description="max: WebText; sum: OpenWebText2")
    min_karma: int = 3
    link_posts_only: bool = True
    drop_nsfw: bool = True
    blocked_domains: list[str] = list(DEFAULT_BLOCKED_DOMAINS)
    extra_blocked_domains: list[str] = []
    blocked_extensions: list[str] = list(DEFAULT_BLOCKED_EXTENSIONS)
    extra_blocked_extensions: list[str] = []
    tracking_params: list[str] = list(DEFAULT_TRACKING_PARAMS)
    strip_www: bool = True
    num_buckets: int = Field(8, ge=1, description="shuffle buckets = output parts; raise for big inputs")
    strict: bool = Field(True, description="a dump that cannot be read at all is an error (false: skip, report)")
    batch_rows: int = Field(65536, ge=1, description="rows buffered before a shuffle write")


class Reject(Exception):
    """A record breaks a rule: `reason` is machine-readable, `detail` says what was seen."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------------------------------------------------------
# Reading dumps

READ_CHUNK = 1 << 22


class DumpUnreadable(Exception):
    """The file could not be opened or decompressed before its first line."""


class ZstdFrames:
    """Decompresses a sequence of zstd frames and, unlike zstandard's stream_reader, raises on a cut-off frame."""

    def __init__(self, raw):
        # Pushshift's monthly dumps are compressed with a 2 GiB window.
        self.decompressor = zstandard.ZstdDecompressor(max_window_size=2**31)
        self.raw, self.frame, self.pending = raw, self.decompressor.decompressobj(), b""
        self._started = False  # the current frame has consumed input

    def read(self, size: int) -> bytes:
        while True:
            data = self.pending or self.raw.read(size)
            self.pending = b""
            if not data:
                if not self.frame.eof and self._started:
                    raise EOFError("zstd stream ends inside a frame (the file is truncated)")
                return b""
            self._started = True
            out = self.frame.decompress(data)
            if self.frame.eof:
                self.pending = self.frame.unused_data
                self.frame, self._started = self.decompressor.decompressobj(), False
            if out:
                return out

    def close(self) -> None:
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dump(file: InputFile):
    """A stream of the decompressed bytes of a dump; the codec is chosen by extension."""
    raw = file.open()
    name = file.name.lower()
    if name.endswith((".zst", ".zstd")):
        return ZstdFrames(raw)
    if name.endswith((".xz", ".lzma")):
        return lzma.open(raw)
    if name.endswith(".gz"):
        return gzip.open(raw)
    if name.endswith(".bz2"):
        return bz2.open(raw)
    return raw


class DumpTruncated(Exception):
    """The file stopped decompressing after some lines: `lineno` is the first line not read."""

    def __init__(self, lineno: int, message: str):
        super().__init__(message)
        self.lineno = lineno


def iter_lines(file: InputFile) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line bytes without newline) of a dump; memory is one read chunk plus one line.

    Raises DumpUnreadable if nothing can be decompressed, DumpTruncated after the lines that could.
    """
    try:
        stream = open_dump(file)
    except OSError as err:
        raise DumpUnreadable(f"{file.uri}: cannot open: {err}") from None
    lineno, tail, produced = 0, b"", False
    with stream:
        while True:
            try:
                chunk = stream.read(READ_CHUNK)
            except (OSError, EOFError, zstandard.ZstdError, lzma.LZMAError) as err:
                if not produced:
                    raise DumpUnreadable(f"{file.uri}: cannot decompress: {err}") from None
                if tail:
                    lineno += 1
                    yield lineno, tail
                raise DumpTruncated(lineno + 1, f"{file.uri}: decompression stopped: {err}") from None
            if not chunk:
                break
            produced = True
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                lineno += 1
                yield lineno, line
    if tail:
        yield lineno + 1, tail


# ---------------------------------------------------------------------------------------------------------------
# One submission


def parse_int(value: Any, field: str) -> int:
    """An int from an int, an integral float or a numeric string (created_utc comes as all three)."""
    if isinstance(value, bool):
        raise Reject("bad_field", f"{field}={value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise Reject("bad_field", f"{field}={value!r}") from None
        if number.is_integer():
            return int(number)
    raise Reject("bad_field", f"{field}={value!r}")


def parse_flag(value: Any, field: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if value in (0, 1, "0", "1", "true", "false", "True", "False"):
        return str(value).lower() in ("1", "true")
    raise Reject("bad_field", f"{field}={value!r}")


def decode_line(line: bytes) -> dict:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise Reject("invalid_utf8", str(err)) from None
        try:  # orjson refuses lone surrogate escapes that the json module reads
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise Reject("bad_json", str(err)) from None
    if not isinstance(record, dict):
        raise Reject("not_an_object", type(record).__name__)
    return record


@dataclass(frozen=True)
class Submission:
    id: str
    url: str
    url_norm: str
    host: str
    subreddit: str
    score: int
    created_utc: int


class SubmissionRules:
    """The per-record rules of the stage, in the order they are applied."""

    def __init__(self, config: UrlsConfig):
        self.config = config
        self.tracking = TrackingParams(config.tracking_params)
        domains = [d.lower().lstrip(".") for d in (*config.blocked_domains, *config.extra_blocked_domains)]
        self.blocked_domains = frozenset(domains)
        exts = (*config.blocked_extensions, *config.extra_blocked_extensions)
        self.blocked_extensions = frozenset(e.lower().lstrip(".") for e in exts)

    def blocked_domain(self, host: str) -> str | None:
        labels = host.split(".")
        for i in range(len(labels) - 1):
            suffix = ".".join(labels[i:])
            if suffix in self.blocked_domains:
                return suffix
        return None

    def apply(self, record: dict) -> Submission:
        """The kept submission, or Reject naming the first rule it breaks."""
        for field in ("id", "url", "score", "created_utc"):
            if record.get(field) is None:
                raise Reject("missing_field", field)
        url = record["url"]
        if not isinstance(url, str) or not url.strip():
            raise Reject("bad_field", f"url={url!r}")
        score = parse_int(record["score"], "score")
        created_utc = parse_int(record["created_utc"], "created_utc")
        if self.config.link_posts_only and parse_flag(record.get("is_self"), "is_self"):
            raise Reject("self_post")
        if self.config.drop_nsfw and parse_flag(record.get("over_18"), "over_18"):
            raise Reject("nsfw")
        url = url.strip()
        scheme = url.partition(":")[0].lower()
        if scheme not in ("http", "https"):
            raise Reject("bad_scheme", scheme[:32])
        try:
            norm = normalize(url, self.tracking, self.config.strip_www)
        except BadURL as err:
            raise Reject("bad_url", str(err)) from None
        if domain := self.blocked_domain(norm.host):
            raise Reject("blocked_domain", domain)
        last_segment = norm.path.rsplit("/", 1)[-1]
        extension = last_segment.rsplit(".", 1)[1].lower() if "." in last_segment else ""
        if extension in self.blocked_extensions:
            raise Reject("blocked_extension", extension)
        subreddit = record.get("subreddit") or ""
        return Submission(str(record["id"]), url, norm.url, norm.host, str(subreddit), score, created_utc)


def bucket_of(url_norm: str, num_buckets: int) -> int:
    """Stable across processes and machines (unlike `hash`)."""
    return xxhash.xxh64_intdigest(url_norm.encode()) % num_buckets


# ---------------------------------------------------------------------------------------------------------------
# The stage


class _RejectBuffer:
    def __init__(self, ctx: TaskContext, batch_rows: int):
        self.ctx, self.batch_rows = ctx, batch_rows
        self.rows: list[tuple] = []

    def add(self, reason: str, detail: str, file: str, line: int, id=None, url=None, score=None, raw=None):
        self.rows.append((reason, detail, file, line, id, url, score, raw))
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            columns = list(zip(*self.rows))
            self.ctx.reject(pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, REJECTED_SCHEMA)], schema=REJECTED_SCHEMA))
            self.rows = []


class _ShuffleWriter:
    """Buffers kept submissions and appends them, by bucket, to one Parquet file per bucket under `_work/`."""

    def __init__(self, ctx: TaskContext, stack: ExitStack, num_buckets: int, batch_rows: int):
        self.num_buckets, self.batch_rows = num_buckets, batch_rows
        self.rows: list[tuple] = []
        self.buckets: list[int] = []
        self.writers = []
        for b in range(num_buckets):
            stream = stack.enter_context(ctx.open_output(ctx.work_name(f"bucket-{b:05d}.parquet")))
            writer = pq.ParquetWriter(stream, SHUFFLE_SCHEMA, compression="zstd")
            stack.callback(writer.close)  # before its stream closes: the stack unwinds last-in first-out
            self.writers.append(writer)
        stack.callback(self.flush)

    def add(self, sub: Submission, file: str, line: int) -> None:
        self.rows.append((sub.url_norm, sub.url, sub.host, sub.subreddit, sub.score, sub.created_utc, sub.id,
                          file, line))
        self.buckets.append(bucket_of(sub.url_norm, self.num_buckets))
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows))
        table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, SHUFFLE_SCHEMA)],
                                     schema=SHUFFLE_SCHEMA)
        buckets = pa.array(self.buckets, type=pa.int32())
        for b in sorted(set(self.buckets)):
            self.writers[b].write_table(table.filter(pc.equal(buckets, b)))
        self.rows, self.buckets = [], []


class UrlsStage(Stage):
    name = "urls"
    version = 1
    phases = ("map", "reduce")
    folded = ("merged",)  # submissions folded into the row of their URL

    config: UrlsConfig

    def tasks(self, phase: str, inputs: list[InputFile]) -> list[Any]:
        if phase == "map":
            return list(inputs)
        return [(b, len(inputs)) for b in range(self.config.num_buckets)]

    def run_task(self, phase: str, index: int, payload: Any, ctx: TaskContext) -> None:
        if phase == "map":
            self.map_dump(payload, ctx)
        else:
            bucket, n_maps = payload
            self.reduce_bucket(bucket, n_maps, ctx)

    def map_dump(self, file: InputFile, ctx: TaskContext) -> None:
        rules = SubmissionRules(self.config)
        rejects = _RejectBuffer(ctx, self.config.batch_rows)
        n_in = 0
        with ExitStack() as stack:
            shuffle = _ShuffleWriter(ctx, stack, self.config.num_buckets, self.config.batch_rows)
            try:
                for lineno, line in iter_lines(file):
                    if not line.strip():
                        continue
                    n_in += 1
                    try:
                        record = decode_line(line)
                    except Reject as r:
                        rejects.add(r.reason, r.detail, file.uri, lineno, raw=line)
                        continue
                    try:
                        shuffle.add(rules.apply(record), file.uri, lineno)
                    except Reject as r:
                        rejects.add(r.reason, r.detail, file.uri, lineno, _str(record.get("id")),
                                    _str(record.get("url")), _int_or_none(record.get("score")))
            except DumpTruncated as err:
                n_in += 1
                rejects.add("truncated_file", str(err), file.uri, err.lineno)
            except DumpUnreadable as err:
                if self.config.strict:
                    raise StageError(f"{err} (set strict: false to skip unreadable dumps)") from None
                n_in += 1
                rejects.add("unreadable_file", str(err), file.uri, 0)
        rejects.flush()
        ctx.count("in", n_in)

    def reduce_bucket(self, bucket: int, n_maps: int, ctx: TaskContext) -> None:
        tables = [ctx.out.read_parquet(f"_work/map-{m:05d}/bucket-{bucket:05d}.parquet") for m in range(n_maps)]
        subs = pa.concat_tables(tables) if tables else SHUFFLE_SCHEMA.empty_table()
        subs = subs.sort_by([("url_norm", "ascending"), ("created_utc", "ascending"), ("id", "ascending")])
        grouped = subs.group_by("url_norm", use_threads=False).aggregate([
            ("url", "first"), ("host", "first"), ("subreddit", "distinct"), ("score", "max"), ("score", "sum"),
            ("score", "count"), ("created_utc", "min"), ("id", "list"),
        ])
        rows = pa.table({
            "url": grouped["url_first"], "url_norm": grouped["url_norm"], "host": grouped["host_first"],
            "subreddits": grouped["subreddit_distinct"], "score_max": grouped["score_max"],
            "score_sum": grouped["score_sum"], "n_submissions": grouped["score_count"],
            "first_utc": grouped["created_utc_min"], "ids": grouped["id_list"],
        }).cast(OUTPUT_SCHEMA)
        karma = rows["score_max" if self.config.karma_rule == "max" else "score_sum"]
        enough = pc.greater_equal(karma, self.config.min_karma)
        kept = rows.filter(enough).sort_by("url_norm")
        low = rows.filter(pc.invert(enough))
        if low.num_rows:
            low_karma = dict(zip(low["url_norm"].to_pylist(), karma.filter(pc.invert(enough)).to_pylist()))
            dropped = subs.filter(pc.is_in(subs["url_norm"], value_set=low["url_norm"]))
            rule = f"score_{self.config.karma_rule}"
            ctx.reject(pa.table({
                "reason": pa.array(["low_karma"] * dropped.num_rows, pa.string()),
                "detail": [f"{rule}={low_karma[u]}<{self.config.min_karma}" for u in dropped["url_norm"].to_pylist()],
                "file": dropped["file"], "line": dropped["line"], "id": dropped["id"], "url": dropped["url"],
                "score": dropped["score"], "raw": pa.nulls(dropped.num_rows, pa.binary()),
            }, schema=REJECTED_SCHEMA))
        ctx.write_part(kept)
        ctx.count("merged", sum(kept["n_submissions"].to_pylist()) - kept.num_rows)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return parse_int(value, "score")
    except Reject:
        return None
