"""The `urls` stage: Pushshift submission dumps -> one Parquet row per normalised outbound URL with its karma.

Two phases, so memory stays bounded whatever the size of a dump:
- `map`, one task per dump file: stream the file (zst / xz / gz / bz2 / plain NDJSON), parse each line, apply the
  record rules (link posts only, NSFW, http(s), domain and extension blocklists) and write the surviving
  submissions into B shuffle files by a hash of `url_norm`. Memory is flat in the file's size: one decompressed
  step (16 KiB of compressed input, ~2 MB), `batch_rows` kept submissions and as many rejects, flushed at that
  fixed count.
- `reduce`, one task per bucket: gather that bucket from every map task, group by `url_norm`, apply the karma rule
  (WebText: the best submission's score; OpenWebText2: the sum over submissions) and write `part-<bucket>.parquet`
  sorted by `url_norm`. Memory: one bucket. B grows with the input (one bucket per `bucket_raw_bytes`, 128 MB of
  decompressed dumps by default, estimated from each file's first MiB when the stage plans), so a bucket, and a
  reduce task's memory, stops growing once the input passes 128 MB (about 40k records of the 2020s, 20k shuffled
  submissions, some 60 MB of Arrow tables and their sorts) and is flat beyond. The price of small buckets is files:
  the shuffle is (dumps x B) files and a map task holds B writers open, about 11k for WebText's ~1.5 TB of dumps
  (raise `bucket_raw_bytes` where tasks have the memory for bigger buckets).

Every line that is not kept lands in `_rejected/` with its file, line number and reason. The kept fields of a
rejected submission are stored, not its whole JSON (file and line point back to it); an unparsable line is
stored raw. Output depends only on the inputs and config, never on the number of workers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import math
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import zstandard
from pydantic import Field

from pipeline.config import Config
from pipeline.records import Reject, Rows
from pipeline.runner import Phase, Stage, StageError, TaskContext
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
    num_buckets: int | None = Field(None, ge=1, description="shuffle buckets = output parts; None: by input size")
    bucket_raw_bytes: int = Field(128 << 20, ge=1, description="decompressed dump bytes per automatic bucket")
    strict: bool = Field(True, description="a dump that cannot be read at all is an error (false: skip, report)")
    batch_rows: int = Field(8192, ge=1, description="rows buffered before a shuffle write (a map task's memory)")


# ---------------------------------------------------------------------------------------------------------------
# Reading dumps

READ_CHUNK = 1 << 20  # decompressed bytes per step (zstd: see ZstdFrames.RAW_CHUNK)


UNREADABLE_DUMP = ("replace that dump with a whole copy (or leave it out of --dumps), or skip unreadable dumps with "
                   "--set strict=false (urls.strict=false for build-corpus), each kept as a rejected record")


class DumpUnreadable(Exception):
    """The file could not be opened or decompressed before its first line."""


class ZstdFrames:
    """Decompresses a sequence of zstd frames and, unlike zstandard's stream_reader, raises on a cut-off frame."""

    def __init__(self, raw):
        # Pushshift's monthly dumps are compressed with a 2 GiB window.
        self.decompressor = zstandard.ZstdDecompressor(max_window_size=2**31)
        self.raw, self.frame, self.pending = raw, self.decompressor.decompressobj(), b""
        self._started = False  # the current frame has consumed input

    # Compressed bytes per step: bounds the output of one step by 16 KiB x the ratio, ~2 MB for 2020s records. 64 KiB
    # steps (8 MB out) left the map task 40 MiB higher once glibc's heap had taken a few of them (bench/scale.py).
    RAW_CHUNK = 1 << 14

    def read(self, size: int) -> bytes:
        while True:
            data = self.pending or self.raw.read(self.RAW_CHUNK)
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


SAMPLE_BYTES = 1 << 20
COMPRESSED_SUFFIXES = (".zst", ".zstd", ".xz", ".lzma", ".gz", ".bz2")


def _decompressor(name: str):
    """A one-shot decompressor for the dump's codec (by extension), or None for plain NDJSON."""
    codecs = {".zst": lambda: zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj(),
              ".zstd": lambda: zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj(),
              ".xz": lzma.LZMADecompressor, ".lzma": lzma.LZMADecompressor,
              ".gz": lambda: zlib.decompressobj(wbits=31), ".bz2": bz2.BZ2Decompressor}
    return next((codec() for ext, codec in codecs.items() if name.lower().endswith(ext)), None)


def probe_dump(file: InputFile) -> int:
    """Check that a dump's first MiB decompresses, and estimate its decompressed size from that sample's ratio.

    Raises DumpUnreadable for a compressed file that is empty or whose first bytes are not its codec's: such a file
    is never read as "no records".
    """
    decompressor = _decompressor(file.name)
    try:
        with file.open() as raw:
            sample = raw.read(SAMPLE_BYTES)
    except OSError as err:
        raise DumpUnreadable(f"{file.uri}: cannot open: {err}") from None
    if decompressor is None:
        return file.size
    if not sample:
        raise DumpUnreadable(f"{file.uri}: cannot decompress: the file is empty (0 bytes)")
    try:
        ratio = _decompressed_bytes(decompressor, sample) / len(sample)
    except (OSError, EOFError, ValueError, zstandard.ZstdError, lzma.LZMAError, zlib.error) as err:
        raise DumpUnreadable(f"{file.uri}: cannot decompress: {err}") from None
    return int(file.size * max(ratio, 1.0))


def _decompressed_bytes(decompressor, data: bytes) -> int:
    """How many bytes `data` decompresses to (up to the end of its first stream or frame), decompressed a step at a
    time: Pushshift's dumps decompress ~100x, so a MiB at once would hold ~100 MiB."""
    total = 0
    for start in range(0, len(data), ZstdFrames.RAW_CHUNK):
        total += len(decompressor.decompress(data[start : start + ZstdFrames.RAW_CHUNK]))
        if decompressor.eof:
            break
    return total


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


def _is_empty(file: InputFile) -> bool:
    with file.open() as raw:
        return not raw.read(1)


class DumpTruncated(Exception):
    """The file stopped decompressing after some lines: `lineno` is the first line not read."""

    def __init__(self, lineno: int, message: str):
        super().__init__(message)
        self.lineno = lineno


def iter_line_batches(file: InputFile) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, counting from 1; the lines without newlines) per decompressed chunk.

    Memory is one chunk plus one line. Raises DumpUnreadable if nothing can be decompressed, DumpTruncated after
    the lines that could.
    """
    try:
        stream = open_dump(file)
    except OSError as err:
        raise DumpUnreadable(f"{file.uri}: cannot open: {err}") from None
    next_line, tail, produced = 1, b"", False
    compressed = file.name.lower().endswith(COMPRESSED_SUFFIXES)
    with stream:
        while True:
            try:
                chunk = stream.read(READ_CHUNK)
            except (OSError, EOFError, zstandard.ZstdError, lzma.LZMAError) as err:
                if not produced:
                    raise DumpUnreadable(f"{file.uri}: cannot decompress: {err}") from None
                if tail:
                    yield next_line, [tail]
                    next_line += 1
                raise DumpTruncated(next_line, f"{file.uri}: decompression stopped: {err}") from None
            if not chunk:
                if compressed and not produced and _is_empty(file):
                    raise DumpUnreadable(f"{file.uri}: cannot decompress: the file is empty (0 bytes)")
                break
            produced = True
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            yield next_line, lines
            next_line += len(lines)
    if tail:
        yield next_line, [tail]


# ---------------------------------------------------------------------------------------------------------------
# One submission


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def in_int64(value: int, field: str) -> int:
    """`value` if the int64 columns of the stage can hold it; Reject `bad_field` otherwise (JSON integers and
    floats have no bound, and one such value must not fail the whole dump)."""
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise Reject("bad_field", f"{field}={value!r}: out of range")


def parse_int(value: Any, field: str) -> int:
    """An int from an int, an integral float or a numeric string (created_utc comes as all three)."""
    kind = type(value)
    if kind is int:
        return in_int64(value, field)
    if kind is float and value.is_integer():
        return in_int64(int(value), field)
    if kind is str:
        try:
            number = float(value.strip())
        except ValueError:
            raise Reject("bad_field", f"{field}={value!r}") from None
        if number.is_integer():
            return in_int64(int(number), field)
    raise Reject("bad_field", f"{field}={value!r}")


def parse_timestamp(value: Any) -> int:
    """Seconds since the epoch, floored: Reddit's API serves `created_utc` as an int, a float with a fraction
    (1500000000.5) or a string of either, and Pushshift's dumps keep what it served."""
    kind = type(value)
    if kind is int:
        return in_int64(value, "created_utc")
    if kind is str:
        try:
            value = float(value.strip())
        except ValueError:
            raise Reject("bad_field", f"created_utc={value!r}") from None
    elif kind is not float:
        raise Reject("bad_field", f"created_utc={value!r}")
    if not math.isfinite(value):
        raise Reject("bad_field", f"created_utc={value!r}")
    return in_int64(math.floor(value), "created_utc")


_FLAGS = {None: False, False: False, True: True, "0": False, "1": True, "false": False,
          "true": True, "False": False, "True": True}


def parse_flag(value: Any, field: str) -> bool:
    try:
        return _FLAGS[value]
    except (KeyError, TypeError):
        raise Reject("bad_field", f"{field}={value!r}") from None


class RawSubmission(msgspec.Struct, gc=False):
    """The fields of a dump record the stage reads; the others are skipped by the parser, unbuilt.

    Types are left open (`Any`): real dumps hold ints, floats and strings in the same field, and the rules
    below judge them one by one with a reason, instead of failing the whole record on a type. Decoded JSON holds
    no reference cycles, so the garbage collector need not track these (gc=False).
    """

    id: Any = None
    url: Any = None
    score: Any = None
    created_utc: Any = None
    is_self: Any = None
    over_18: Any = None
    subreddit: Any = None


_DECODER = msgspec.json.Decoder(RawSubmission)


def decode_line(line: bytes) -> RawSubmission:
    """Parse one NDJSON line; Reject with `invalid_utf8`, `bad_json` or `not_an_object`."""
    if not line.isascii():  # msgspec does not check the UTF-8 of fields it skips
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise Reject("invalid_utf8", str(err)) from None
    try:
        return _DECODER.decode(line)
    except msgspec.ValidationError as err:
        raise Reject("not_an_object", str(err)) from None
    except msgspec.DecodeError as err:
        try:  # msgspec refuses lone surrogate escapes (\ud83d) that are valid JSON
            record = json.loads(line)
        except json.JSONDecodeError:
            raise Reject("bad_json", str(err)) from None
        if not isinstance(record, dict):
            raise Reject("not_an_object", type(record).__name__) from None
        return msgspec.convert(record, RawSubmission)


class Submission(NamedTuple):
    """A kept submission, in the column order of the shuffle files (SHUFFLE_SCHEMA, without file and line)."""

    url_norm: str
    url: str
    host: str
    subreddit: str
    score: int
    created_utc: int
    id: str


class SubmissionRules:
    """The per-record rules of the stage, in the order they are applied.

    `apply` returns the Reject rather than raising it: two records in three are dropped here, and raising once per
    record would cost more than the rule itself.
    """

    def __init__(self, config: UrlsConfig):
        self.config = config
        self.link_posts_only, self.drop_nsfw, self.strip_www = config.link_posts_only, config.drop_nsfw, config.strip_www
        self.tracking = TrackingParams(config.tracking_params)
        domains = [d.lower().lstrip(".") for d in (*config.blocked_domains, *config.extra_blocked_domains)]
        self.blocked_domains = frozenset(domains)
        exts = (*config.blocked_extensions, *config.extra_blocked_extensions)
        self.blocked_extensions = frozenset(e.lower().lstrip(".") for e in exts)

    def blocked_domain(self, host: str) -> str | None:
        """The blocklist entry that `host` is, or is a subdomain of."""
        blocked = self.blocked_domains
        while True:
            if host in blocked:
                return host
            dot = host.find(".")
            if dot < 0:
                return None
            host = host[dot + 1 :]

    def apply(self, record: RawSubmission) -> Submission | Reject:
        """The kept submission, or the first rule it breaks."""
        id, url, score, created_utc = record.id, record.url, record.score, record.created_utc
        if id is None or url is None or score is None or created_utc is None:
            fields = ("id", "url", "score", "created_utc")
            return Reject("missing_field", ",".join(f for f in fields if getattr(record, f) is None))
        if type(url) is not str or not (url := url.strip()):
            return Reject("bad_field", f"url={record.url!r}")
        try:
            if type(score) is not int or not INT64_MIN <= score <= INT64_MAX:
                score = parse_int(score, "score")
            if type(created_utc) is not int or not INT64_MIN <= created_utc <= INT64_MAX:
                created_utc = parse_timestamp(created_utc)
            if self.link_posts_only and parse_flag(record.is_self, "is_self"):
                return Reject("self_post")
            if self.drop_nsfw and parse_flag(record.over_18, "over_18"):
                return Reject("nsfw")
            if not url.startswith(("http://", "https://")):
                scheme = url[:8].partition(":")[0].lower()
                if scheme != "http" and scheme != "https":
                    return Reject("bad_scheme", scheme)
            norm = normalize(url, self.tracking, self.strip_www)
        except Reject as r:
            return r
        except BadURL as err:
            return Reject("bad_url", str(err))
        if domain := self.blocked_domain(norm.host):
            return Reject("blocked_domain", domain)
        last_segment = norm.path.rsplit("/", 1)[-1]
        if "." in last_segment and (extension := last_segment.rsplit(".", 1)[1].lower()) in self.blocked_extensions:
            return Reject("blocked_extension", extension)
        return Submission(norm.url, url, norm.host, str(record.subreddit or ""), score, created_utc, str(id))


def bucket_of(url_norm: str, num_buckets: int) -> int:
    """Stable across processes and machines (unlike `hash`)."""
    return xxhash.xxh64_intdigest(url_norm.encode()) % num_buckets


# ---------------------------------------------------------------------------------------------------------------
# The stage


class _ShuffleWriter:
    """Gathers kept submissions and appends them, by bucket, to one Parquet file per bucket in the work area."""

    def __init__(self, ctx: TaskContext, stack: ExitStack, file: str, num_buckets: int, batch_rows: int):
        self.file, self.num_buckets, self.batch_rows = file, num_buckets, batch_rows
        self.rows = Rows(SHUFFLE_SCHEMA)
        self.buckets: list[int] = []
        self.writers = []
        for b in range(num_buckets):
            stream = stack.enter_context(ctx.open_output(ctx.work_name(_bucket_name(b))))
            writer = pq.ParquetWriter(stream, SHUFFLE_SCHEMA, compression="zstd")
            stack.callback(writer.close)  # before its stream closes: the stack unwinds last-in first-out
            self.writers.append(writer)
        stack.callback(self.flush)

    def add(self, sub: Submission, line: int) -> None:
        self.rows.add(*sub, self.file, line)
        self.buckets.append(bucket_of(sub.url_norm, self.num_buckets))
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """The gathered rows into their buckets' files, in their order within each bucket: one stable sort by
        bucket, not a pass over the rows per bucket (there are thousands of buckets at WebText scale)."""
        if not self.rows:
            return
        buckets = np.array(self.buckets, dtype=np.int64)
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(self.num_buckets + 1))
        table = self.rows.take().take(order)
        for b in np.flatnonzero(np.diff(bounds)).tolist():  # the buckets that got rows
            self.writers[b].write_table(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
        self.buckets = []


MAP = "map"  # the phase whose shuffle files the reduce reads


@dataclass(frozen=True)
class MapTask:
    """Read one dump; shuffle its kept submissions into `buckets` files."""

    dump: InputFile
    buckets: int


@dataclass(frozen=True)
class ReduceTask:
    """Gather `bucket` from each of the `maps` map tasks into one output part."""

    bucket: int
    maps: int


class UrlsStage(Stage):
    name = "urls"
    version = 3  # 2: created_utc with a fraction floored instead of rejected; 3: subreddits sorted
    folded = ("merged",)  # submissions folded into the row of their URL

    config: UrlsConfig

    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        buckets = self.num_buckets(self.probe(inputs))
        return [Phase(MAP, self.map_dump, [MapTask(file, buckets) for file in inputs]),
                Phase("reduce", self.reduce_bucket, [ReduceTask(b, len(inputs)) for b in range(buckets)])]

    def num_buckets(self, sizes: dict[InputFile, int]) -> int:
        """Configured, or one per `bucket_raw_bytes` of decompressed input: a reduce task's memory then stays
        about the same at any scale."""
        if self.config.num_buckets is not None:
            return self.config.num_buckets
        return max(1, -(-sum(sizes.values()) // self.config.bucket_raw_bytes))

    def probe(self, inputs: list[InputFile]) -> dict[InputFile, int]:
        """Each dump's estimated decompressed size. An unreadable dump fails the plan, before any output is touched
        (strict), or is planned anyway for its map task to report as `unreadable_file`."""
        sizes = {}
        for file in inputs:
            try:
                sizes[file] = probe_dump(file)
            except DumpUnreadable as err:
                if self.config.strict:
                    raise StageError(f"{err} (set strict: false to skip unreadable dumps)",
                                     hint=UNREADABLE_DUMP) from None
                sizes[file] = 0
        return sizes

    def map_dump(self, task: MapTask, ctx: TaskContext) -> None:
        file = task.dump
        rules = SubmissionRules(self.config)
        rejects = Rows(REJECTED_SCHEMA, ctx.reject, self.config.batch_rows)
        n_in = 0
        with ExitStack() as stack:
            shuffle = _ShuffleWriter(ctx, stack, file.uri, task.buckets, self.config.batch_rows)
            try:
                for first_line, lines in iter_line_batches(file):
                    for lineno, line in enumerate(lines, first_line):
                        if not line or line.isspace():
                            continue
                        n_in += 1
                        try:
                            record = decode_line(line)
                        except Reject as r:
                            rejects.add(r.reason, r.detail, file.uri, lineno, None, None, None, line)
                            continue
                        result = rules.apply(record)
                        if type(result) is Submission:
                            shuffle.add(result, lineno)
                        else:
                            rejects.add(result.reason, result.detail, file.uri, lineno, _str(record.id),
                                        _str(record.url), _int_or_none(record.score), None)
            except DumpTruncated as err:
                n_in += 1
                rejects.add("truncated_file", str(err), file.uri, err.lineno, None, None, None, None)
            except DumpUnreadable as err:
                if self.config.strict:
                    raise StageError(f"{err} (set strict: false to skip unreadable dumps)", hint=UNREADABLE_DUMP) from None
                n_in += 1
                rejects.add("unreadable_file", str(err), file.uri, 0, None, None, None, None)
        rejects.flush()
        ctx.count("in", n_in)

    def reduce_bucket(self, task: ReduceTask, ctx: TaskContext) -> None:
        tables = [ctx.read_work(MAP, m, _bucket_name(task.bucket)) for m in range(task.maps)]
        subs = pa.concat_tables(tables) if tables else SHUFFLE_SCHEMA.empty_table()
        # The karma rule first, on an unordered aggregate: most shuffled submissions fail it and need no sort.
        rule = f"score_{self.config.karma_rule}"
        karma = subs.group_by("url_norm").aggregate([("score", self.config.karma_rule)])  # columns url_norm, rule
        enough = pc.greater_equal(karma[rule], self.config.min_karma)
        is_kept = pc.is_in(subs["url_norm"], value_set=karma.filter(enough)["url_norm"])
        dropped = subs.filter(pc.invert(is_kept))
        dropped_karma = karma[rule].take(pc.index_in(dropped["url_norm"], value_set=karma["url_norm"]))
        ctx.reject(pa.table({
            "reason": pa.repeat("low_karma", dropped.num_rows).cast(pa.string()),
            "detail": pc.binary_join_element_wise(
                f"{rule}=", pc.cast(dropped_karma, pa.string()), f"<{self.config.min_karma}", ""),
            "file": dropped["file"], "line": dropped["line"], "id": dropped["id"], "url": dropped["url"],
            "score": dropped["score"], "raw": pa.nulls(dropped.num_rows, pa.binary()),
        }, schema=REJECTED_SCHEMA))
        kept_subs = subs.filter(is_kept).sort_by(
            [("url_norm", "ascending"), ("created_utc", "ascending"), ("id", "ascending")])
        grouped = kept_subs.group_by("url_norm", use_threads=False).aggregate([
            ("url", "first"), ("host", "first"), ("subreddit", "distinct"), ("score", "max"), ("score", "sum"),
            ("score", "count"), ("created_utc", "min"), ("id", "list"),
        ])
        kept = pa.table({
            "url": grouped["url_first"], "url_norm": grouped["url_norm"], "host": grouped["host_first"],
            "subreddits": _sorted_lists(grouped["subreddit_distinct"]), "score_max": grouped["score_max"],
            "score_sum": grouped["score_sum"], "n_submissions": grouped["score_count"],
            "first_utc": grouped["created_utc_min"], "ids": grouped["id_list"],
        }).cast(OUTPUT_SCHEMA).sort_by("url_norm")
        ctx.write_part(kept)
        ctx.count("merged", kept_subs.num_rows - kept.num_rows)


def _sorted_lists(lists: pa.ChunkedArray) -> pa.ListArray:
    """Each list's values in ascending order. Arrow's `distinct` aggregate gives no defined order (it moved with
    the bucket count: 10 of 16k URLs' subreddits at 2 vs 5 buckets); sorted, a URL's row depends on its own
    submissions only."""
    lists = lists.combine_chunks()
    offsets = pc.subtract(lists.offsets, lists.offsets[0])  # 0-based, as from_arrays reads them
    parents = pc.list_parent_indices(lists)
    values = pa.table({"parent": parents, "value": pc.list_flatten(lists)}).sort_by(
        [("parent", "ascending"), ("value", "ascending")])["value"].combine_chunks()
    return pa.ListArray.from_arrays(offsets, values, type=lists.type)


def _bucket_name(bucket: int) -> str:
    return f"bucket-{bucket:05d}.parquet"


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return parse_int(value, "score")
    except Reject:
        return None
