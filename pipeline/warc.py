"""WARC records for the crawl: writing request/response pairs with warcio, and reading them back for replay.

Each record is its own gzip member (warcio's default for `.warc.gz`), so files can be concatenated and a record's
offset is where its member starts. The payload stored is the body as decoded (gzip / deflate / brotli undone, the
way Common Crawl stores it since 2018); the original `Content-Encoding`, `Content-Length` and
`Transfer-Encoding` headers are kept renamed to `X-Crawler-…` so readers do not decode twice.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.utils import Digester
from warcio.warcwriter import WARCWriter

RENAMED_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}


@dataclass
class Exchange:
    """One HTTP request and the response to it, as the crawler saw them."""

    url: str
    request_headers: list[tuple[str, str]]
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    ip: str | None = None
    date: str | None = None  # WARC-Date; None: now
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Sha1(Digester):
    """warcio's digester through `hashlib.new`, which costs more than the hashing of a typical page."""

    def __init__(self, type_: str = "sha1"):
        self.type_, self.digester = "sha1", hashlib.sha1()


class _Writer(WARCWriter):
    @staticmethod
    def _create_digester() -> Digester:
        return _Sha1()


class WarcSink:
    """Appends exchanges to a seekable binary stream as response + request records; returns the response's offset.

    warcio builds and serialises each record (digests included); each is then compressed as its own gzip member
    at level 6 (warcio's level 9 costs twice the time for a file about 3 % smaller).
    """

    def __init__(self, stream):
        self.stream = stream
        self.scratch = io.BytesIO()
        self.writer = _Writer(self.scratch, gzip=False)

    def _write_member(self, record) -> None:
        self.scratch.seek(0)
        self.scratch.truncate()
        self.writer.write_record(record)
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.stream.write(compressor.compress(self.scratch.getbuffer()) + compressor.flush())

    def write(self, exchange: Exchange) -> int:
        from yarl import URL

        target = URL(exchange.url)
        path = target.raw_path_qs or "/"
        request = StatusAndHeaders(f"GET {path} HTTP/1.1", list(exchange.request_headers), is_http_request=True)
        headers = [(f"X-Crawler-{k}" if k.lower() in RENAMED_HEADERS else k, v) for k, v in exchange.headers]
        response = StatusAndHeaders(f"{exchange.status} {exchange.reason}".strip(), headers, protocol="HTTP/1.1")
        warc_headers = {}
        if exchange.ip:
            warc_headers["WARC-IP-Address"] = exchange.ip
        if exchange.date:
            warc_headers["WARC-Date"] = exchange.date
        response_record = self.writer.create_warc_record(
            exchange.url, "response", payload=io.BytesIO(exchange.body), length=len(exchange.body),
            http_headers=response, warc_headers_dict=dict(warc_headers),
        )
        request_record = self.writer.create_warc_record(
            exchange.url, "request", payload=None, http_headers=request, warc_headers_dict=dict(warc_headers),
        )
        request_record.rec_headers.replace_header("WARC-Concurrent-To", response_record.rec_headers.get_header("WARC-Record-ID"))
        offset = self.stream.tell()
        self._write_member(response_record)
        self._write_member(request_record)
        return offset


def read_exchanges(stream) -> Iterator[tuple[int, Exchange]]:
    """(offset, exchange) for every response record of a WARC stream (gzipped or not), decoded bodies included.

    warcio undoes a `Content-Encoding` the headers still declare (a WARC from another crawler), so the body is
    always the decoded payload.
    """
    records = ArchiveIterator(stream)
    for record in records:
        if record.rec_type != "response" or record.http_headers is None:
            continue
        offset = records.offset
        url = record.rec_headers.get_header("WARC-Target-URI")
        status_line = record.http_headers.get_statuscode() or "0"
        body = record.content_stream().read()
        reason = record.http_headers.statusline.partition(" ")[2]
        yield offset, Exchange(
            url=url, request_headers=[], status=int(status_line), reason=reason,
            headers=[(k, v) for k, v in record.http_headers.headers if _kept(k)],
            body=body, ip=record.rec_headers.get_header("WARC-IP-Address"),
            date=record.rec_headers.get_header("WARC-Date"),
        )


def _kept(header: str) -> bool:
    """The body read back is decoded, so the wire-encoding headers (original or renamed) no longer apply."""
    name = header.lower()
    return name not in RENAMED_HEADERS and name.removeprefix("x-crawler-") not in RENAMED_HEADERS


def index_responses(stream) -> Iterator[tuple[int, str]]:
    """(offset, target URI) of every response record, without reading the bodies."""
    records = ArchiveIterator(stream)
    for record in records:
        if record.rec_type == "response":
            yield records.offset, record.rec_headers.get_header("WARC-Target-URI")
