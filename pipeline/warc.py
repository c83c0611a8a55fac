"""WARC records for the crawl: writing response/request pairs, and reading them back with warcio for replay.

Each record is its own gzip member (as warcio and Common Crawl write `.warc.gz`), so files can be concatenated and a record's
offset is where its member starts. The payload stored is the body as decoded (gzip / deflate / brotli undone, the
way Common Crawl stores it since 2018); the original `Content-Encoding`, `Content-Length` and
`Transfer-Encoding` headers are kept renamed to `X-Crawler-…` so readers do not decode twice.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from warcio.archiveiterator import ArchiveIterator

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
    extra: dict = field(default_factory=dict)  # more WARC headers of the response record (an archive's provenance)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def _header_value(value: str) -> str:
    """A header value on one line (a server cannot smuggle a CR or LF into the record's framing)."""
    return value.replace("\r", " ").replace("\n", " ")


def _sha1_b32(*parts: bytes) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return "sha1:" + base64.b32encode(digest.digest()).decode()


def _warc_date() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"


class WarcSink:
    """Appends exchanges to a seekable binary stream as response + request records (WARC/1.1, block and payload
    digests); returns the response's offset. Each record is its own gzip member, compressed at level 6.

    The records are serialised here rather than by warcio's writer, which costs about 5x more per page (header
    objects, digesters looked up by name, a spooled temporary file per record); warcio reads them back, with
    digests checked, in the tests.
    """

    def __init__(self, stream):
        self.stream = stream

    def _record(self, rec_type: str, record_id: str, url: str, date: str, block: bytes, extra: list[tuple[str, str]],
                payload: bytes | None) -> None:
        headers = [("WARC-Type", rec_type), ("WARC-Record-ID", record_id), ("WARC-Date", date),
                   ("WARC-Target-URI", url), *extra]
        if payload is not None:
            headers.append(("WARC-Payload-Digest", _sha1_b32(payload)))
        headers += [("WARC-Block-Digest", _sha1_b32(block)),
                    ("Content-Type", f"application/http; msgtype={rec_type}"), ("Content-Length", str(len(block)))]
        head = "WARC/1.1\r\n" + "".join(f"{k}: {_header_value(v)}\r\n" for k, v in headers) + "\r\n"
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.stream.write(compressor.compress(head.encode("utf-8")) + compressor.compress(block)
                          + compressor.compress(b"\r\n\r\n") + compressor.flush())

    def write(self, exchange: Exchange) -> int:
        from yarl import URL

        path = URL(exchange.url).raw_path_qs or "/"
        date = exchange.date or _warc_date()
        extra = [("WARC-IP-Address", exchange.ip)] if exchange.ip else []
        response_id, request_id = f"<urn:uuid:{uuid.uuid4()}>", f"<urn:uuid:{uuid.uuid4()}>"
        response_head = f"HTTP/1.1 {exchange.status} {_header_value(exchange.reason)}".rstrip() + "\r\n" + "".join(
            f"{'X-Crawler-' + k if k.lower() in RENAMED_HEADERS else k}: {_header_value(v)}\r\n"
            for k, v in exchange.headers) + "\r\n"
        request_head = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {_header_value(v)}\r\n" for k, v in exchange.request_headers) + "\r\n"
        offset = self.stream.tell()
        self._record("response", response_id, exchange.url, date,
                     response_head.encode("latin-1", "replace") + exchange.body, [*extra, *exchange.extra.items()],
                     exchange.body)
        self._record("request", request_id, exchange.url, date, request_head.encode("latin-1", "replace"),
                     [*extra, ("WARC-Concurrent-To", response_id)], None)
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
