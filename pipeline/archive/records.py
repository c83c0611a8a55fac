"""A chosen capture's bytes, as the `Exchange` the crawl archives, with its provenance in WARC headers.

- Wayback (the Wayback Machine, pywb): raw replay, `…/{timestamp}id_/{url}`: the archived status, headers and
  body, unrewritten, through the crawler's fetcher. The replay's own headers (Memento-Datetime, Link,
  Content-Location) are dropped from the archived response.
- Common Crawl: the record is one gzip member at `warc_record_offset` of `warc_filename`, `warc_record_length`
  bytes long: a range request through the fetcher (`https://data.commoncrawl.org/…`, or any S3 endpoint spoken
  to over HTTP, such as a bucket that allows reads), or a ranged read through pyarrow's S3 filesystem for
  `s3://` prefixes (signed requests, as Common Crawl's bucket wants from inside AWS; the endpoint is the
  operator's, not a URL from the data, and the fetcher's slot for the bucket still paces it). The member is
  inflated with a cap (`max_decoded_bytes`) and read with warcio.

Provenance headers on the archived response record: `WARC-Date` is the capture's time (when the page was
captured, as the WARC standard defines it); `WARC-Source-URI` the replay URL or the original WARC file;
`Webtext-Archive`, `Webtext-Collection`, `Webtext-Capture-Time`, `Webtext-Source-WARC`, `Webtext-Source-Offset`.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time
import zlib

from pipeline.archive.cdx import Capture
from pipeline.archive.config import ArchiveSource
from pipeline.fetch import FetchError, Fetcher
from pipeline.warc import Exchange, read_exchanges

REPLAY_HEADERS = {"memento-datetime", "link", "content-location"}


def warc_date(timestamp: str) -> str:
    t = time.strptime(timestamp, "%Y%m%d%H%M%S")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def with_provenance(exchange: Exchange, capture: Capture, source_uri: str) -> Exchange:
    exchange.url = capture.url
    exchange.date = warc_date(capture.timestamp)
    exchange.extra = {"WARC-Source-URI": source_uri, "Webtext-Archive": capture.archive,
                      "Webtext-Collection": capture.collection, "Webtext-Capture-Time": exchange.date}
    if capture.filename is not None and capture.offset is not None:
        exchange.extra["Webtext-Source-WARC"] = capture.filename
        exchange.extra["Webtext-Source-Offset"] = str(capture.offset)
    return exchange


async def fetch_capture(fetcher: Fetcher, archive: ArchiveSource, capture: Capture) -> Exchange:
    """The archived response of `capture`; FetchError (`archive_error`, or the fetcher's own outcomes) if none."""
    if archive.kind == "wayback":
        return await _replay(fetcher, archive, capture)
    return await _warc_record(fetcher, archive, capture)


async def _replay(fetcher: Fetcher, archive: ArchiveSource, capture: Capture) -> Exchange:
    source = archive.replay.format(collection=capture.collection, timestamp=capture.timestamp, url=capture.url)
    config = fetcher.config
    exchange, _ = await fetcher.request(fetcher._check_url(source), config.max_body_bytes, config.max_decoded_bytes)
    if exchange.status != capture.status:  # another capture, or the archive's own error page
        raise FetchError("archive_error", f"{archive.name} replay {source}: HTTP {exchange.status}, the index said "
                                          f"{capture.status}", status=exchange.status)
    exchange.headers = [(k, v) for k, v in exchange.headers if k.lower() not in REPLAY_HEADERS]
    return with_provenance(exchange, capture, source)


async def _warc_record(fetcher: Fetcher, archive: ArchiveSource, capture: Capture) -> Exchange:
    if capture.filename is None or capture.offset is None or not capture.length:
        raise FetchError("archive_error", f"{archive.name}: the index gives no WARC record for {capture.url}")
    config = fetcher.config
    if capture.length > config.max_body_bytes:
        raise FetchError("too_large", f"{archive.name} record of {capture.length} bytes over {config.max_body_bytes}")
    prefix, sep, options = archive.warc_prefix.partition("?")  # s3://bucket/dir/?endpoint_override=…
    source = prefix.rstrip("/") + "/" + capture.filename.lstrip("/") + sep + options
    if source.startswith("s3://"):
        data = await read_range_s3(fetcher, source, capture.offset, capture.length)
    else:
        last = capture.offset + capture.length - 1
        exchange, _ = await fetcher.request(fetcher._check_url(source), config.max_body_bytes,
                                            config.max_body_bytes, send={"Range": f"bytes={capture.offset}-{last}"})
        if exchange.status != 206 or len(exchange.body) != capture.length:
            raise FetchError("archive_error", f"{archive.name} {source} bytes {capture.offset}-{last}: HTTP "
                                              f"{exchange.status} with {len(exchange.body)} bytes")
        data = exchange.body
    record = parse_record(data, config.max_decoded_bytes, f"{source} at {capture.offset}")
    return with_provenance(record, capture, source)


async def read_range_s3(fetcher: Fetcher, uri: str, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of an s3:// object through pyarrow, in a slot of the bucket's pace."""
    async with fetcher.slot(fetcher.host(f"{s3_host(uri)}:0")):
        try:
            async with asyncio.timeout(fetcher.config.total_timeout_s):
                return await asyncio.to_thread(_read_at, uri, offset, length)
        except TimeoutError:
            raise FetchError("timeout", f"{uri}: no range read in {fetcher.config.total_timeout_s}s") from None
        except OSError as err:
            raise FetchError("archive_error", f"{uri}: {err}") from None


def s3_host(uri: str) -> str:
    """The name an S3 bucket is paced under (its requests share one slot and delay, like a web host's)."""
    return uri.removeprefix("s3://").split("/", 1)[0].split("?", 1)[0] + ".s3"


def archive_hosts(archive: ArchiveSource) -> set[str]:
    """The host names an archive's requests go to: its CDX API, its replay, its WARC files."""
    from yarl import URL

    hosts = set()
    for template in (archive.cdx_api, archive.replay, archive.warc_prefix):
        if template and template.startswith("s3://"):
            hosts.add(s3_host(template))
        elif template:
            hosts.add(URL(template.replace("{", "").replace("}", "")).host)
    return hosts


def _read_at(uri: str, offset: int, length: int) -> bytes:
    return _opened(uri).read_at(length, offset)


@functools.lru_cache(maxsize=64)
def _opened(uri: str):
    """An S3 object opened once (opening costs a HEAD request) for all its records; read_at is thread-safe."""
    from pipeline.storage import filesystem

    fs, path = filesystem(uri)
    return fs.open_input_file(path)


def parse_record(data: bytes, decoded_limit: int, where: str) -> Exchange:
    """The response record of one gzip member (a Common Crawl record), inflated to at most `decoded_limit` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(data, decoded_limit + 1)
    except zlib.error as err:
        raise FetchError("archive_error", f"{where}: not a gzip member ({err})") from None
    if len(raw) > decoded_limit:
        raise FetchError("decoded_too_large", f"{where}: record over {decoded_limit} bytes inflated")
    try:
        exchange = next((e for _, e in read_exchanges(io.BytesIO(raw))), None)
    except Exception as err:  # warcio raises many types on a damaged record
        raise FetchError("archive_error", f"{where}: not a WARC record ({type(err).__name__}: {err})") from None
    if exchange is None:
        raise FetchError("archive_error", f"{where}: no response record")
    return exchange
