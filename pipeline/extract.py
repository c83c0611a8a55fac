"""The `extract` stage: WARC response records -> Parquet documents (main text, title, date, language, lineage).

One task per WARC file (the crawl stage's `part-XXXXX.warc.gz`, or any WARC such as Common Crawl's):
- inputs: `*.warc`, `*.warc.gz`, `*.arc`, `*.arc.gz` files and the crawl's fetch-log Parquet; other files found
  with them (Common Crawl's `.cdx.gz`, `warc.paths`, WAT/WET files) are skipped with a printed note, and inputs
  with no WARC at all, or a file named like a WARC that does not start as one (gzip, `WARC/`, an ARC header),
  are an error naming them, raised when the stage plans;
- records are read with warcio from a seekable stream; a record that cannot be parsed (a cut gzip member, a block
  shorter than its Content-Length, invalid WARC or HTTP headers, a file that ends inside a record, an empty
  file) is rejected as `malformed_record` with its offset, and reading resumes at the next gzip member (or
  `WARC/` line in an uncompressed file), so one bad record costs only itself; a WARC gzipped as one stream
  (`gzip x.warc`) is read sequentially, its offsets then counting decompressed bytes;
- each `response` record is judged in order: an HTTP record (a `dns:` or other non-HTTP record is
  `not_http_record`), HTTP status 200, an HTML content type, a size cap; then its body (transfer and content
  encodings undone by warcio) is decoded as browsers do (pipeline/charset.py: byte-order mark, HTTP charset,
  `<meta>` charset, per the WHATWG Encoding Standard; a guess only for a page without any label); then
  trafilatura extracts the main text, title and date, with comments excluded (0.960 vs 0.953 F1 on the
  scrapinghub pages, FACTS.md), under a per-page limit of CPU time (not wall-clock time, so the result does not
  depend on the machine's load; trafilatura's one-time setup is done before the first page); an empty result
  is rejected;
- lineage: `url`, `warc_file`, `warc_offset`, and the URL table's karma (`score_max` -> `score`) and `subreddits`
  and where the page came from (`source`: live or archive, an archive's `capture_time`) joined from the crawl's
  fetch-log Parquet when it is among the inputs (by WARC file name and offset, else by the record's target URI
  against `final_url` / `url`).

Every record that does not become a document is kept in `_rejected/` with its reason, file, offset and URL.

Memory is flat in the input: a task holds one record, `batch_rows` documents and rejects (then written as a row
group), and the lineage columns of its own fetch log, at most the crawl's `urls_per_bucket` rows (the crawl's
task size); a WARC is read as a stream.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pydantic import Field
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.limitreader import LimitReader

from pipeline.charset import decode_html
from pipeline.config import Config
from pipeline.documents import DOC_SCHEMA, parquet_schema, read_parquet
from pipeline.langid import detect_language
from pipeline.records import Reject, Rows
from pipeline.runner import Phase, Stage, StageError, TaskContext
from pipeline.storage import InputFile, filesystem

REJECTED_SCHEMA = pa.schema([
    ("reason", pa.string()), ("detail", pa.string()), ("warc_file", pa.string()), ("warc_offset", pa.int64()),
    ("url", pa.string()), ("status", pa.int64()), ("content_type", pa.string()),
])
HTML_TYPES = ("text/html", "application/xhtml+xml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
FETCH_LOG_SUFFIX = ".parquet"


class ExtractConfig(Config):
    """Settings of the extract stage."""

    timeout_s: float = Field(10.0, gt=0, description="CPU seconds one page's extraction may use (timeout)")
    max_bytes: int = Field(5 << 20, ge=1, description="larger bodies are rejected (too_large)")
    min_chars: int = Field(1, ge=1, description="extracted texts shorter than this are rejected (empty_text)")
    status_ok: list[int] = Field([200], description="HTTP statuses whose bodies are extracted")
    favor_precision: bool = Field(False, description="trafilatura's favor_precision: less text, fewer mistakes")
    fast: bool = Field(False, description="trafilatura's fast mode: about 1.4x faster, F1 0.955 vs 0.960")
    include_comments: bool = Field(False, description="False: 0.960 F1 on scrapinghub, True: 0.953 (FACTS.md)")
    include_tables: bool = True
    with_metadata: bool = Field(True, description="extract title and date (costs about 15 %)")
    detect_language: bool = Field(True, description="fill lang and lang_score (pycld2, about 1.4 % of a page)")
    batch_rows: int = Field(2048, ge=1, description="documents per Parquet row group / reject flush")


# ---------------------------------------------------------------------------------------------------------------
# Reading WARC files


@dataclass
class Response:
    """A WARC response record, read into memory (bodies are capped by `max_bytes`)."""

    offset: int
    url: str
    status: int | None
    content_type: str
    body: bytes
    truncated: bool  # the body is longer than the cap


@dataclass
class Malformed:
    """A stretch of the file that could not be parsed, from `offset` to the next record boundary found."""

    offset: int
    detail: str


def _next_boundary(stream, start: int, gzipped: bool) -> int | None:
    """The offset of the next gzip member header (or `WARC/1.` version line) at or after `start`, or None.

    A match inside a record's body is possible; parsing from it then fails and the search goes on from there.
    """
    magic = b"\x1f\x8b\x08" if gzipped else b"WARC/1."
    carry, position = b"", start
    try:
        stream.seek(start)
        while chunk := stream.read(1 << 20):
            data = carry + chunk
            found = data.find(magic)
            if found >= 0:
                return position - len(carry) + found
            carry = data[-(len(magic) - 1) :]
            position += len(chunk)
    except (OSError, EOFError, ValueError, zlib.error):  # a cut gzip stream read as a whole: nothing more to find
        return None
    return None


def _is_gzipped(stream) -> bool:
    stream.seek(0)
    head = stream.read(2)
    stream.seek(0)
    return head == b"\x1f\x8b"


class _LengthMismatch(Exception):
    def __str__(self) -> str:
        return "the record does not end where its Content-Length says"


class TruncatedRecord(Exception):
    """The stream ended before the record's block did (a cut gzip member or file)."""


def _response(record, offset: int, max_bytes: int) -> Response | None:
    """The record as a Response (None for other record types), after reading the record to its end: a record
    whose block is shorter than its Content-Length raises TruncatedRecord instead of passing as a shorter page."""
    if record.rec_type is None or record.length is None:  # headers cut short: no WARC-Type or Content-Length
        raise TruncatedRecord("the record has no WARC-Type or no Content-Length (its headers are cut or invalid)")
    response = None
    if record.rec_type == "response":
        http = record.http_headers
        url = record.rec_headers.get_header("WARC-Target-URI") or ""
        status = int(http.get_statuscode()) if http and (http.get_statuscode() or "").isdigit() else None
        content_type = (http.get_header("Content-Type") if http else None) or ""
        body = record.content_stream().read(max_bytes + 1)
        response = Response(offset, url, status, content_type, body[:max_bytes], len(body) > max_bytes)
    raw = record.raw_stream
    while raw.read(1 << 16):
        pass
    if isinstance(raw, LimitReader) and raw.limit > 0:
        raise TruncatedRecord(f"the record ends {raw.limit} bytes before its Content-Length "
                              f"({record.length} bytes): the file or gzip member is cut")
    return response


def _non_chunked_gzip(err: Exception) -> bool:
    return isinstance(err, ArchiveLoadFailed) and "non-chunked gzip" in str(err)


def iter_responses(stream, max_bytes: int) -> Iterator[Response | Malformed]:
    """Response records of a seekable WARC stream, and one `Malformed` per unreadable stretch, in file order.

    A WARC gzipped as one whole stream (`gzip x.warc`, not a member per record) is read sequentially through its
    decompressed bytes; its offsets are then offsets in the decompressed WARC.
    """
    stream.seek(0)
    if not stream.read(1):  # never read as "no records"
        yield Malformed(0, "the file is empty (0 bytes): not a WARC")
        return
    gzipped = _is_gzipped(stream)
    items = _iter_records(stream, max_bytes, gzipped)
    for item in items:
        if isinstance(item, _WholeGzip):
            items.close()
            stream.seek(0)
            yield from _iter_records(Gunzipped(stream), max_bytes, gzipped=False, whole_file=False)
            return
        yield item


class Gunzipped:
    """The decompressed bytes of a gzip file (every member), as a stream warcio can read and tell, and seek
    (forward by reading, backward by starting over). A cut stream gives all the bytes it holds and then raises
    OSError, where GzipFile raises EOFError (which warcio takes for the end of the file) and loses the last block.
    """

    def __init__(self, raw):
        self.raw = raw
        self._restart()

    def _restart(self) -> None:
        self.raw.seek(0)
        self.inflate, self.position, self.buffer, self.ended, self.fed = zlib.decompressobj(31), 0, b"", False, False

    def _fill(self, size: int) -> None:
        while (size < 0 or len(self.buffer) < size) and not self.ended:
            chunk = self.raw.read(1 << 16)
            if not chunk:
                if self.fed and not self.inflate.eof:
                    if self.buffer:
                        return  # hand out what there is; the next read raises
                    raise OSError("the gzip stream is cut: it ends before its end-of-stream marker")
                self.ended = True
                return
            self.fed = True
            while chunk:
                if self.inflate.eof:  # the next gzip member
                    self.inflate = zlib.decompressobj(31)
                self.buffer += self.inflate.decompress(chunk)
                chunk = self.inflate.unused_data if self.inflate.eof else b""

    def read(self, size: int = -1) -> bytes:
        self._fill(size)
        data, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        self.position += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self.buffer and not self.ended:
            before = len(self.buffer)
            self._fill(len(self.buffer) + (1 << 16))
            if len(self.buffer) == before:
                break
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        return self.read(end if size < 0 else min(end, size))

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise ValueError("a gzip stream seeks from its start or its position only")
        if target < self.position:
            self._restart()
        while self.position < target and self.read(min(target - self.position, 1 << 20)):
            pass
        return self.position


class _WholeGzip:
    """The first gzip member holds more than one record: the file is one gzip stream."""


def _iter_records(stream, max_bytes: int, gzipped: bool, whole_file: bool = True):
    """The records of `stream` from offset 0 (see iter_responses), or one _WholeGzip if the file is a single
    gzip stream. `whole_file`: the stream is the file itself, so bytes after the last whole record can be seen.

    A record is passed on only once the next one has been parsed: a record whose Content-Length overruns its
    end (a truncated record in an uncompressed file) shows only then, and is reported instead of the records it
    swallowed, which are read again from the next boundary.
    """
    start, in_bad_stretch = 0, False
    while start is not None:
        stream.seek(start)
        records = ArchiveIterator(stream, check_digests=False)
        pending: tuple[int, Response | None] | None = None
        try:
            for record in records:
                if records.err_count:  # something other than blank lines after the previous record
                    raise _LengthMismatch()
                if pending is not None:
                    in_bad_stretch = False
                    if pending[1] is not None:
                        yield pending[1]
                pending = (records.offset, None)  # the offset of a record that fails while it is read
                pending = (records.offset, _response(record, records.offset, max_bytes))
                block_end = stream.tell() - records.reader.rem_length()  # uncompressed: where the block ended
            if records.err_count:  # something other than blank lines after the last record
                raise _LengthMismatch()
            if pending is not None and pending[1] is not None:
                yield pending[1]
            end = records.offset if gzipped else (block_end if pending is not None else start)
            if whole_file and (cut := _trailing_bytes(stream, end)):
                yield Malformed(cut[0], f"the file ends inside a record: {cut[1]} bytes after the last whole record")
            return
        except Exception as err:  # warcio raises many types on bad input: header parsers, zlib, brotli, EOF
            if _non_chunked_gzip(err) and start == 0 and pending is not None and pending[0] == 0:
                yield _WholeGzip()
                return
            offset = max(records.offset, start)  # warcio's offset is meaningless inside a broken gzip stream
            if pending is not None:
                # The pending record is the bad one if it failed itself, or if its Content-Length ran over the
                # start of another record; otherwise it was whole and the failure lies after it.
                swallowed = records.err_count and (_next_boundary(stream, pending[0] + 1, gzipped) or offset) < offset
                if pending[0] == offset or swallowed:
                    offset = pending[0]
                elif pending[1] is not None:
                    in_bad_stretch = False
                    yield pending[1]
            if not in_bad_stretch:  # not a false boundary inside the stretch just reported
                yield Malformed(offset, f"{type(err).__name__}: {err}".strip()[:500])
            in_bad_stretch = True
            start = _next_boundary(stream, offset + 1, gzipped)


def _trailing_bytes(stream, end: int) -> tuple[int, int] | None:
    """(offset, size) of what follows `end`, the end of the last record read, other than blank lines; or None."""
    stream.seek(end)
    rest = stream.read(1 << 16)
    if not rest.strip():
        return None
    offset = end + len(rest) - len(rest.lstrip())
    size = stream.seek(0, io.SEEK_END)
    return offset, (size if size is not None else stream.tell()) - offset


def open_seekable(file: InputFile):
    fs, path = filesystem(file.uri)
    return fs.open_input_file(path)


# ---------------------------------------------------------------------------------------------------------------
# Extraction

class ExtractTimeout(BaseException):
    """The page used up its CPU time. A BaseException, so that a library's `except Exception` cannot take it."""


RETRY_S = 0.05


def cpu_limited(seconds: float, fn, *args, **kwargs) -> tuple[Any, bool]:
    """(fn(*args, **kwargs), False), or (None, True) if the call used more than `seconds` of CPU time: a limit that
    is the same on an idle machine and a loaded one.

    In the main thread (where Ray tasks and the local executor run), ITIMER_PROF counts this process's CPU time
    and SIGPROF raises ExtractTimeout in the call; the timer then fires again every RETRY_S of CPU time, so an
    exception that lands where Python swallows it (a `__del__`, a weakref callback: "Exception ignored") is
    raised again; whether or not it got through, a call that reached the limit counts as over it. The signal is
    handled between bytecodes, so one long call inside lxml finishes first (the `max_bytes` cap, before parsing,
    bounds those). In another thread no signal can interrupt the call: its CPU time (time.thread_time) is
    checked when it returns.
    """
    state = {"armed": True, "exceeded": False}

    def on_signal(signum, frame) -> None:
        if state["armed"]:
            state["exceeded"] = True
            raise ExtractTimeout(f"extraction used more than {seconds}s of CPU time")

    in_main = threading.current_thread() is threading.main_thread()
    started, result, previous = time.thread_time(), None, None
    try:
        if in_main:
            previous = signal.signal(signal.SIGPROF, on_signal)
            signal.setitimer(signal.ITIMER_PROF, seconds, RETRY_S)
        try:
            result = fn(*args, **kwargs)
        finally:
            state["armed"] = False
    except ExtractTimeout:
        state["exceeded"] = True
    finally:
        state["armed"] = False
        if in_main:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
    exceeded = state["exceeded"] or time.thread_time() - started > seconds
    return (None, True) if exceeded else (result, False)


# A page whose date only dateparser reads makes it load every locale: about 2 CPU-seconds, once per process
# (FACTS.md). A string no locale parses loads them all.
_WARM_PAGE = ("<html><head><title>Warm-up</title></head><body><article><h1>Warm-up</h1><p class='date'>Opublikowano "
              "3 marca 2019</p><p>" + "The council met on Tuesday to discuss the library budget. " * 20 +
              "</p></article></body></html>")
_warmed: set[tuple] = set()


def warm_up(config: ExtractConfig) -> None:
    """Pay trafilatura's one-time setup (imports, stop lists, the date parser's locales) before any page's clock
    starts, once per process and settings, so the first page is judged like every other."""
    key = (config.fast, config.with_metadata)
    if key in _warmed:
        return
    import trafilatura

    trafilatura.bare_extraction(_WARM_PAGE, url="http://example.org/", fast=config.fast,
                                with_metadata=config.with_metadata, deduplicate=False)
    if config.with_metadata and not config.fast:
        try:
            from htmldate.extractors import get_external_parser, month_words
        except ImportError:  # another htmldate: the warm-up page above is the best there is
            pass
        else:
            month_words()
            get_external_parser().get_date_data("qqqq zzzz 2019")
    _warmed.add(key)


@dataclass
class Extracted:
    text: str
    title: str | None
    date: str | None


class Extractor:
    """trafilatura with the stage's settings, on one decoded page, under the per-page CPU-time limit."""

    def __init__(self, config: ExtractConfig):
        self.config = config
        warm_up(config)

    def __call__(self, html: str, url: str | None) -> Extracted:
        import trafilatura

        c = self.config
        doc, exceeded = cpu_limited(
            c.timeout_s, trafilatura.bare_extraction, html, url=url or None, fast=c.fast,
            favor_precision=c.favor_precision, include_comments=c.include_comments, include_tables=c.include_tables,
            with_metadata=c.with_metadata, deduplicate=False)
        if exceeded:
            raise Reject("timeout", f"over {c.timeout_s}s of CPU time")
        text = (doc.text if doc is not None else "") or ""
        if len(text.strip()) < c.min_chars:
            raise Reject("empty_text", "" if doc is not None else "trafilatura found no main text")
        return Extracted(text, doc.title or None, doc.date or None)


# ---------------------------------------------------------------------------------------------------------------
# Lineage from the crawl's fetch log


class Lineage:
    """Karma, subreddits, source and capture time per (WARC file name, offset) and per URL, from fetch-log Parquet
    files."""

    NONE = (None, None, None, None)

    def __init__(self, fetch_logs: list[InputFile], warc_name: str):
        self.by_offset: dict[int, tuple] = {}
        self.by_url: dict[str, tuple] = {}
        for log in fetch_logs:
            table = read_parquet(log)
            cols = set(table.column_names)
            if not cols & {"score_max", "subreddits", "source"}:
                continue
            n = table.num_rows
            get = lambda name, table=table, cols=cols, n=n: table[name].to_pylist() if name in cols else [None] * n  # noqa: E731
            for warc_file, offset, url, final_url, *value in zip(
                get("warc_file"), get("warc_offset"), get("url"), get("final_url"), get("score_max"), get("subreddits"),
                get("source"), get("capture_time")
            ):
                value = tuple(value)
                if warc_file is not None and offset is not None and _basename(warc_file) == warc_name:
                    self.by_offset[int(offset)] = value
                for u in (url, final_url):
                    if u:
                        self.by_url.setdefault(u, value)

    def lookup(self, offset: int, url: str) -> tuple:
        """(score, subreddits, source, capture_time) of the record at `offset` (or of its URL)."""
        return self.by_offset.get(offset) or self.by_url.get(url) or self.NONE


def _stem(name: str) -> str:
    name = name.split("?", 1)[0]
    for suffix in (*WARC_SUFFIXES, FETCH_LOG_SUFFIX):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _basename(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------------------------
# The stage


def doc_id_of(warc_name: str, offset: int, url: str) -> str:
    """Stable across runs and machines: the record's place (file name, offset) and URL."""
    return xxhash.xxh3_128_hexdigest(f"{warc_name}\0{offset}\0{url}".encode())[:24]


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


WARC_HEADS = (b"\x1f\x8b", b"WARC/", b"filedesc://")  # gzip (a member per record, or one stream), WARC, ARC


def _check_warc_head(file: InputFile) -> None:
    """Plan-time: a file named like a WARC starts as one (an empty file is left to its task, a malformed_record);
    a text or HTML file given that name is an error naming it, never read as a file of no records."""
    try:
        with file.open() as stream:
            head = stream.read(64)
    except OSError as err:
        raise StageError(f"{file.uri}: cannot open: {err}") from None
    head = head if head.startswith(WARC_HEADS[0]) else head.lstrip(b"\r\n")  # blank lines before a first record
    if head and not any(head.startswith(magic[: len(head)]) for magic in WARC_HEADS):
        raise StageError(f"{file.uri}: not a WARC file: it starts with {head[:12]!r}, not gzip, WARC/ or an ARC "
                         "header")


@dataclass(frozen=True)
class ExtractTask:
    """One WARC file, with the fetch logs its lineage comes from."""

    warc: InputFile
    logs: tuple[InputFile, ...]


class ExtractStage(Stage):
    name = "extract"
    version = 2  # 2: WHATWG decoding, CPU-time limit, cut records rejected

    config: ExtractConfig

    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        warcs = [f for f in inputs if f.name.lower().endswith(WARC_SUFFIXES)]
        logs = [f for f in inputs if f.name.lower().endswith(FETCH_LOG_SUFFIX)]
        others = [f.uri for f in inputs if f not in warcs and f not in logs]
        if not warcs:
            named = f": not a WARC file: {', '.join(others[:3])}" if others else ""
            raise StageError(f"extract: no WARC files (*.warc, *.warc.gz, *.arc, *.arc.gz) among the inputs{named}")
        if others:  # e.g. Common Crawl's layout: .cdx.gz indexes, warc.paths, WAT/WET files beside the WARCs
            shown = ", ".join(o.rsplit("/", 1)[-1] for o in others[:5]) + (", ..." if len(others) > 5 else "")
            print(f"extract: skipped {len(others)} file(s) that are not WARC files or fetch logs: {shown}",
                  file=sys.stderr)
        for warc in warcs:
            _check_warc_head(warc)
        for log in logs:  # each fetch log opens as Parquet (its columns are optional: lineage uses what is there)
            parquet_schema(log)
        # the crawl writes part-XXXXX.warc.gz next to its log part-XXXXX.parquet: a task reads its own log only
        # (in the same directory: two crawls given together both have a part-00000)
        stems = {_stem(log.uri): log for log in logs}
        own_log = lambda warc: (stems[_stem(warc.uri)],) if _stem(warc.uri) in stems else tuple(logs)  # noqa: E731
        return [Phase("parts", self.extract_warc, [ExtractTask(warc, own_log(warc)) for warc in warcs])]

    def extract_warc(self, task: ExtractTask, ctx: TaskContext) -> None:
        warc, logs = task.warc, task.logs
        warc_name = _basename(warc.uri)
        lineage = Lineage(logs, warc_name)
        extract = Extractor(self.config)
        rejects = Rows(REJECTED_SCHEMA, ctx.reject, self.config.batch_rows)
        n_in = 0
        # The crawl writes an empty WARC beside its fetch log when it archived nothing (every URL of the part
        # failed): that one holds no records; any other empty WARC is a malformed_record, never "nothing".
        archived_nothing = warc.size == 0 and [_stem(log.uri) for log in logs] == [_stem(warc.uri)]
        with ctx.open_output(ctx.part_name()) as sink, pq.ParquetWriter(sink, DOC_SCHEMA, compression="zstd") as out:

            def write(table: pa.Table) -> None:
                out.write_table(table)
                ctx.count("out", table.num_rows)

            docs = Rows(DOC_SCHEMA, write, self.config.batch_rows)
            with open_seekable(warc) as stream:
                for item in () if archived_nothing else iter_responses(stream, self.config.max_bytes):
                    n_in += 1
                    if isinstance(item, Malformed):
                        rejects.add("malformed_record", item.detail, warc.uri, item.offset, None, None, None)
                    else:
                        try:
                            docs.add(*self.document(item, warc, warc_name, extract, lineage))
                        except Reject as r:
                            rejects.add(r.reason, r.detail, warc.uri, item.offset, item.url, item.status,
                                        item.content_type)
            docs.flush()
        rejects.flush()
        ctx.count("in", n_in)

    def document(self, item: Response, warc: InputFile, warc_name: str, extract: Extractor, lineage: Lineage) -> tuple:
        c = self.config
        scheme = item.url.partition(":")[0].lower() if ":" in item.url else ""
        if scheme not in ("http", "https"):  # Heritrix's dns: records, whois:, ftp: ...
            raise Reject("not_http_record", f"{scheme}: record" if scheme else "no target URI scheme")
        if item.status is None:
            raise Reject("bad_http_headers", "no HTTP status line")
        if item.status not in c.status_ok:
            raise Reject("http_status", str(item.status))
        mime = item.content_type.split(";", 1)[0].strip().lower()
        if mime not in HTML_TYPES and not (not mime and _looks_like_html(item.body)):
            raise Reject("not_html", mime or "no content type")
        if item.truncated:
            raise Reject("too_large", f"over {c.max_bytes} bytes")
        if not item.body.strip():
            raise Reject("empty_body")
        page = extract(decode_html(item.body, item.content_type), item.url)
        lang, lang_score = detect_language(page.text) if c.detect_language else (None, None)
        score, subreddits, source, capture_time = lineage.lookup(item.offset, item.url)
        return (doc_id_of(warc_name, item.offset, item.url), item.url, host_of(item.url), page.title, page.text,
                page.date, lang, lang_score, len(page.text), len(page.text.split()), score, subreddits, warc.uri,
                item.offset, source, capture_time)
