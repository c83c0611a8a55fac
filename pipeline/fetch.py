"""Fetching one URL politely and safely, with one outcome: the crawl's core, independent of Ray and of storage.

`Fetcher.fetch(url)` follows redirects by hand (each hop re-checked: scheme, SSRF guard, robots.txt, politeness
of the hop's host), retries timeouts, connection errors and 5xx with exponential backoff and full jitter, waits
out `Retry-After` on 429 / 503 (pausing the whole host), and spends retries from a budget shared by the task.
Politeness per host name (its http and https, on any port, are one server): at most `per_host_concurrency`
requests in flight, and no request starts sooner than `min_delay_s` (or robots.txt's `Crawl-delay`, capped) after
the start or the end of another request to the host; globally at most `global_concurrency` requests in flight.

Where responses come from is a `Transport`: `HttpTransport` (aiohttp, through the SSRF-guarded resolver, with
timeouts and caps on wire and decoded size) for a live crawl, `ReplayTransport` (records of existing WARC files)
for `--from-warc`. Everything else (redirects, robots, content checks, outcomes) is the same code for both, so
a replay gives the outcomes the live crawl gave for whatever the WARCs hold.

Every request sent is one attempt: aiohttp's own silent resend after a dropped connection is turned off, so
`attempt` counts what the server saw and the delays apply between all of them.

Outcomes: ok, http_status, robots_disallowed (the site's rules), robots_unreachable (robots.txt answered 5xx or
could not be fetched: connect error, timeout, DNS; RFC 9309 says assume complete disallow; the cause is in
`error`), timeout, connect_error, read_error, dns_error, tls_error (certificate not valid for the host, handshake
failed), blocked_address, bad_scheme, bad_url (one of these four met fetching robots.txt, or its redirects, is
recorded as itself), too_large, decoded_too_large, decode_error, bad_content_type, binary_content, too_many_redirects,
bad_response, not_in_warc (replay only).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import math
import random
import ssl
import time
import zlib
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import brotli
from pydantic import Field, ValidationInfo, field_validator
from yarl import URL

from pipeline.config import Config
from pipeline.robots import RobotsRules, robots_url, user_agent_token
from pipeline.ssrf import ALLOWED_SCHEMES, AddressGuard, BlockedAddress, DNSFailure, GuardedResolver, parse_resolve
from pipeline.warc import Exchange

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x1f\x8b", b"\x7fELF", b"RIFF")


def redirect_target(base: str, location: str) -> str:
    """Where a redirect from `base` with this `Location` leads (relative locations resolve against `base`, the
    fragment dropped); ValueError if the location is not a URL."""
    return str(URL(base).join(URL(location.strip())).with_fragment(None))


class FetchConfig(Config):
    """How the crawler behaves on the network; every limit has a default suited to crawling strangers' sites."""

    user_agent: str = "webtext-crawler/0.1 (+https://github.com/webtext/webtext#crawler)"
    obey_robots: bool = True
    robots_max_bytes: int = Field(512 << 10, ge=500 << 10, description="RFC 9309: parse at least 500 KiB")
    per_host_concurrency: int = Field(1, ge=1)
    min_delay_s: float = Field(1.0, ge=0, description="between the starts of two requests to one host")
    max_crawl_delay_s: float = Field(30.0, ge=0, description="cap on robots.txt Crawl-delay")
    global_concurrency: int = Field(64, ge=1)
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(20.0, gt=0, description="longest silence while reading")
    total_timeout_s: float = Field(60.0, gt=0, description="one request, body included")
    max_body_bytes: int = Field(5 << 20, ge=1, description="bytes on the wire; beyond: too_large")
    max_decoded_bytes: int = Field(20 << 20, ge=1, description="after gzip/deflate/br; beyond: decoded_too_large")
    content_types: list[str] = ["text/html", "application/xhtml+xml"]
    max_redirects: int = Field(5, ge=0)
    max_attempts: int = Field(3, ge=1, description="tries per request (timeouts, connection errors, 5xx, 429)")
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0, description="a longer Retry-After ends the URL instead")
    retry_budget: float = Field(0.2, ge=0, description="retries a task may spend, as a share of its URLs")
    retry_budget_min: int = Field(10, ge=0)
    ssrf_guard: bool = True
    allow_networks: list[str] = Field([], description="addresses / CIDR networks the SSRF guard lets through, "
                                                      "whatever name leads there")
    allow_hosts: list[str] = Field([], description="host patterns that may resolve to loopback, private or shared "
                                                   "addresses (never link-local / metadata)")
    resolve: dict[str, str] = Field({}, description='curl --resolve: {"*.example": "127.0.0.1:8080"}')
    tls_verify: bool = Field(True, description="verify certificates and host names of https servers")
    tls_ca_file: str | None = Field(None, description="PEM file of CA certificates trusted besides the system's")

    @field_validator("allow_networks", "allow_hosts")
    @classmethod
    def _allowlist(cls, items: list[str], info: ValidationInfo) -> list[str]:
        for item in items:
            try:
                is_network = bool(ipaddress.ip_network(item, strict=False))
            except ValueError:
                is_network = False
            if is_network and info.field_name == "allow_hosts":
                raise ValueError(f"{item!r} is an address: addresses and networks go in allow_networks")
            if not is_network and info.field_name == "allow_networks":
                raise ValueError(f"{item!r} is not an address or network (host patterns go in allow_hosts)")
        return items

    @field_validator("resolve")
    @classmethod
    def _resolve(cls, mapping: dict[str, str]) -> dict[str, str]:
        parse_resolve(mapping)
        return mapping

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file(cls, path: str | None) -> str | None:
        if path is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as err:
                raise ValueError(f"{path}: not a readable PEM file of CA certificates ({err})") from None
        return path

    def guard(self) -> AddressGuard:
        return AddressGuard(self.ssrf_guard, self.allow_networks, self.allow_hosts)


class FetchError(Exception):
    """A request that produced no usable response: `outcome` names the kind."""

    def __init__(self, outcome: str, detail: str, retryable: bool = False, status: int | None = None,
                 content_type: str | None = None):
        super().__init__(detail)
        self.outcome, self.detail, self.retryable, self.status = outcome, detail, retryable, status
        self.content_type = content_type


@dataclass
class FetchResult:
    """The final outcome of one input URL, and the exchanges to archive (redirect hops, then the page)."""

    url: str
    outcome: str
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    bytes: int = 0
    elapsed: float = 0.0
    attempt: int = 0
    error: str | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    final_archived: bool = False  # the last exchange is the final response (its offset goes in the fetch log)


# ---------------------------------------------------------------------------------------------------------------
# Decoding with a cap


class BoundedDecoder:
    """Undoes a Content-Encoding chunk by chunk and stops as soon as the output would pass `limit` bytes."""

    def __init__(self, encoding: str | None, limit: int):
        self.encoding = (encoding or "identity").strip().lower()
        self.limit, self.size = limit, 0
        if self.encoding in ("gzip", "x-gzip"):
            self.state = zlib.decompressobj(wbits=31)
        elif self.encoding == "deflate":
            self.state, self.raw_deflate_tried = zlib.decompressobj(wbits=15), False
        elif self.encoding == "br":
            self.state = brotli.Decompressor()
        elif self.encoding == "identity":
            self.state = None
        else:
            raise FetchError("decode_error", f"unsupported Content-Encoding {self.encoding!r}")

    def feed(self, data: bytes) -> bytes:
        try:
            return self._check(self._decode(data))
        except (zlib.error, brotli.error) as err:
            raise FetchError("decode_error", f"{self.encoding}: {err}") from None

    def _decode(self, data: bytes) -> bytes:
        room = self.limit - self.size + 1
        if self.state is None:
            return data
        if isinstance(self.state, brotli.Decompressor):
            out = [self.state.process(data, output_buffer_limit=room)]
            while not self.state.can_accept_more_data() and sum(map(len, out)) < room:
                out.append(self.state.process(b"", output_buffer_limit=room))
            return b"".join(out)
        try:
            out = self.state.decompress(data, room)
        except zlib.error:
            if self.encoding != "deflate" or self.raw_deflate_tried or self.size:
                raise
            # "deflate" is often sent as a raw deflate stream without the zlib header.
            self.raw_deflate_tried, self.state = True, zlib.decompressobj(wbits=-15)
            out = self.state.decompress(data, room)
        return out

    def _check(self, out: bytes) -> bytes:
        self.size += len(out)
        if self.size > self.limit or (self.state is not None and getattr(self.state, "unconsumed_tail", b"")):
            raise FetchError("decoded_too_large", f"decoded body over {self.limit} bytes ({self.encoding})")
        return out


# ---------------------------------------------------------------------------------------------------------------
# Transports


class HttpTransport:
    """GET over aiohttp: no automatic redirects or decompression, SSRF-guarded resolution, timeouts and caps."""

    def __init__(self, config: FetchConfig):
        import aiohttp

        self.config = config
        self.guard = config.guard()
        self.resolver = GuardedResolver(self.guard, config.resolve)
        tls: ssl.SSLContext | bool = False
        if config.tls_verify:
            tls = ssl.create_default_context()
            if config.tls_ca_file:
                tls.load_verify_locations(cafile=config.tls_ca_file)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self.resolver, limit=config.global_concurrency, limit_per_host=0,
                                           ttl_dns_cache=300, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout_s,
                                          sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s),
            auto_decompress=False,
            trust_env=False,  # no proxies from the environment: the guard must see the real destination
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": config.user_agent, "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                     "Accept-Encoding": "gzip, deflate, br"},
        )
        # aiohttp resends an idempotent request once, silently, when a connection drops before the response: off,
        # so that every request on the wire is an attempt the fetcher counts, spaced by its delays.
        self.session._retry_connection = False

    async def close(self) -> None:
        await self.session.close()

    async def get(self, url: str, body_limit: int, decoded_limit: int, truncate: bool = False,
                  content_types: list[str] | None = None, send: dict[str, str] | None = None) -> Exchange:
        """GET `url`. With `content_types`, a 2xx response of another type is refused before its body is read
        (a crawler has no business downloading the PDFs and videos it will discard). `send`: request headers besides
        the session's (an archive's `Range`)."""
        import aiohttp

        try:
            async with asyncio.timeout(self.config.total_timeout_s):
                async with self.session.get(url, allow_redirects=False, headers=send) as resp:
                    peer = self._peer(resp)
                    self._check_peer(resp.url.host or "", peer)
                    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                    if resp.status in REDIRECT_STATUSES:
                        body_limit = decoded_limit = min(body_limit, 64 << 10)
                        truncate = True
                    elif content_types is not None and 200 <= resp.status < 300:
                        content_type = resp.headers.get("Content-Type")
                        if mime_of(content_type) not in content_types:
                            raise FetchError("bad_content_type", f"Content-Type {content_type!r}", status=resp.status,
                                             content_type=content_type)
                    body = await self._read(resp, body_limit, decoded_limit, truncate)
                    return Exchange(url, list(resp.request_info.headers.items()), resp.status, resp.reason or "",
                                    headers, body, ip=peer)
        except TimeoutError:
            raise FetchError("timeout", f"no complete response in time (total {self.config.total_timeout_s}s, "
                                        f"read {self.config.read_timeout_s}s)", retryable=True) from None
        except aiohttp.ClientConnectorDNSError as err:
            cause = err.os_error
            if isinstance(cause, BlockedAddress):
                raise FetchError("blocked_address", str(cause)) from None
            raise FetchError("dns_error", str(cause) if isinstance(cause, DNSFailure) else str(err)) from None
        except aiohttp.ClientSSLError as err:  # before ClientConnectorError, its base class
            raise FetchError("tls_error", f"{type(err).__name__}: {err}") from None
        except aiohttp.ClientConnectorError as err:
            raise FetchError("connect_error", str(err), retryable=True) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
            raise FetchError("read_error", f"{type(err).__name__}: {err}", retryable=True) from None
        except aiohttp.ClientResponseError as err:  # unparsable status line or headers
            raise FetchError("bad_response", f"{type(err).__name__}: {err.message}") from None
        except (aiohttp.InvalidURL, ValueError) as err:
            raise FetchError("bad_url", f"{type(err).__name__}: {err}") from None

    def _peer(self, resp) -> str | None:
        """The address connected to: the socket's peer while the connection is held, else the (only) checked
        address of the host (aiohttp releases a connection as soon as a short body has arrived)."""
        transport = resp.connection.transport if resp.connection else None
        peer = transport.get_extra_info("peername") if transport else None
        if peer:
            return peer[0]
        host = resp.url.host or ""
        checked = self.resolver.addresses.get(host)
        return checked[0] if checked else host.strip("[]") or None

    def _check_peer(self, host: str, peer: str | None) -> None:
        """The address the connection went to passes the guard (the resolver only hands out checked ones: this
        holds it whatever the connector did, plain or TLS)."""
        try:
            ip = ipaddress.ip_address((peer or "").split("%", 1)[0])
        except ValueError:
            return  # no socket address known (a connection already released, of a name): the resolver checked it
        reason = self.guard.refusal(host, ip)
        if reason:
            raise FetchError("blocked_address", f"{host}: connected to {peer}, a {reason} address")

    async def _read(self, resp, body_limit: int, decoded_limit: int, truncate: bool) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > body_limit and not truncate:
            raise FetchError("too_large", f"Content-Length {declared} over {body_limit} bytes", status=resp.status)
        decoder = BoundedDecoder(resp.headers.get("Content-Encoding"), decoded_limit)
        chunks, wire = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            wire += len(chunk)
            if wire > body_limit:
                if truncate:
                    break
                raise FetchError("too_large", f"body over {body_limit} bytes", status=resp.status)
            try:
                chunks.append(decoder.feed(chunk))
            except FetchError as err:
                if truncate and err.outcome == "decoded_too_large":
                    break
                err.status = resp.status
                raise
        return b"".join(chunks)


class ReplayTransport:
    """Responses from existing WARC files: `index` maps a URL to (file, offset) of its response record."""

    def __init__(self, index: dict[str, tuple[str, int]], open_file: Callable[[str], object]):
        from pipeline.warc import read_exchanges

        self.index, self.open_file, self.read_exchanges = index, open_file, read_exchanges
        self.files: dict[str, object] = {}

    async def get(self, url: str, body_limit: int, decoded_limit: int, truncate: bool = False,
                  content_types: list[str] | None = None, send: dict[str, str] | None = None) -> Exchange:
        where = self.index.get(url)
        if where is None:
            raise FetchError("not_in_warc", "no response record for this URL in the WARC files")
        name, offset = where
        stream = self.files.get(name) or self.files.setdefault(name, self.open_file(name))
        stream.seek(offset)
        _, exchange = next(self.read_exchanges(stream))
        if len(exchange.body) > decoded_limit:
            if not truncate:
                raise FetchError("decoded_too_large", f"decoded body over {decoded_limit} bytes", status=exchange.status)
            exchange.body = exchange.body[:decoded_limit]
        return exchange

    async def close(self) -> None:
        for stream in self.files.values():
            stream.close()


# ---------------------------------------------------------------------------------------------------------------
# The fetcher


class Pace:
    """Politeness bookkeeping for one host name, whatever the scheme or port (http and https of a site are one
    server to be polite to): in-flight requests, the earliest next start, the delay."""

    def __init__(self, concurrency: int, delay: float):
        self.slots = asyncio.Semaphore(concurrency)
        self.start_lock = asyncio.Lock()
        self.next_start = 0.0
        self.delay = delay


class HostState:
    """One origin (scheme, host, port): its robots.txt (RFC 9309: one per origin), and its host name's pace."""

    def __init__(self, pace: Pace):
        self.pace = pace
        self.robots: RobotsRules | None = None
        self.robots_lock = asyncio.Lock()


class Fetcher:
    """Fetches URLs through a transport with redirects, robots.txt, politeness, retries and content checks."""

    def __init__(self, config: FetchConfig, transport, n_urls: int, polite: bool = True, rng: random.Random | None = None):
        self.config, self.transport, self.polite = config, transport, polite
        self.guard = config.guard()
        self.hosts: dict[str, HostState] = {}
        self.paces: dict[str, Pace] = {}
        self.global_slots = asyncio.Semaphore(config.global_concurrency)
        self.retries_left = max(config.retry_budget_min, math.ceil(config.retry_budget * n_urls))
        self.agent = user_agent_token(config.user_agent)
        self.rng = rng or random.Random()
        # robots.txt decisions made, with the responses to archive: (host key, rules, exchanges), drained by the
        # caller, which checkpoints them so that a resumed crawl neither fetches nor archives them again.
        self.robots_done: list[tuple[str, RobotsRules, list[Exchange]]] = []

    @staticmethod
    def host_key(url: URL) -> str:
        return f"{url.host}:{url.port}"

    def host(self, url: URL | str) -> HostState:
        key = url if isinstance(url, str) else self.host_key(url)
        state = self.hosts.get(key)
        if state is None:
            name = key.rsplit(":", 1)[0].rstrip(".")  # `a.example.` is `a.example`
            pace = self.paces.get(name) or self.paces.setdefault(
                name, Pace(self.config.per_host_concurrency, self.config.min_delay_s))
            state = self.hosts[key] = HostState(pace)
        return state

    def restore_robots(self, key: str, rules: RobotsRules) -> None:
        """Take a decision made before (a checkpoint): the host's robots.txt is not fetched again."""
        self._set_robots(self.host(key), rules)

    @asynccontextmanager
    async def slot(self, host: HostState):
        """Hold a request slot of `host`'s name and of the crawl, started no sooner than the host's delay allows."""
        if not self.polite:
            yield
            return
        loop = asyncio.get_running_loop()
        pace = host.pace
        async with pace.slots:
            async with pace.start_lock:
                # Checked again after every wait: while this request slept, another one to the host may have ended
                # or met a Retry-After, and pushed next_start further.
                while True:
                    wait = pace.next_start - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                    await self.global_slots.acquire()
                    if pace.next_start <= loop.time():
                        break
                    self.global_slots.release()
                pace.next_start = loop.time() + pace.delay
            try:
                yield
            finally:
                # Counted from the end too: the server sees the gap even when one request took longer to arrive.
                pace.next_start = max(pace.next_start, loop.time() + pace.delay)
                self.global_slots.release()

    async def fetch(self, url: str) -> FetchResult:
        started = time.monotonic()
        result = await self._follow(url)
        result.elapsed = round(time.monotonic() - started, 4)
        return result

    async def _follow(self, url: str) -> FetchResult:
        current, seen, exchanges, attempt = url, {url}, [], 0
        for _hop in range(self.config.max_redirects + 1):
            try:
                parsed = self._check_url(current)
                if self.config.obey_robots:
                    rules = await self.robots(parsed)
                    if not rules.allowed(current, self.agent):
                        return FetchResult(url, rules.outcome(), final_url=current, error=rules.why_disallowed(),
                                           exchanges=exchanges)
                exchange, attempt = await self.request(parsed, self.config.max_body_bytes, self.config.max_decoded_bytes,
                                                       content_types=self.config.content_types)
            except FetchError as err:
                return FetchResult(url, err.outcome, final_url=current, status=err.status, error=err.detail[:500],
                                   content_type=err.content_type, attempt=max(attempt, getattr(err, "attempt", 0)),
                                   exchanges=exchanges)
            location = exchange.header("Location")
            if exchange.status in REDIRECT_STATUSES and location:
                exchanges.append(exchange)
                try:
                    target = redirect_target(current, location)
                except ValueError as err:
                    return FetchResult(url, "bad_url", final_url=current, status=exchange.status,
                                       error=f"bad Location {location!r}: {err}", attempt=attempt, exchanges=exchanges)
                if target in seen:
                    return FetchResult(url, "too_many_redirects", final_url=target, status=exchange.status,
                                       error="redirect loop", attempt=attempt, exchanges=exchanges)
                seen.add(target)
                current = target
                continue
            return self._final(url, current, exchange, attempt, exchanges)
        return FetchResult(url, "too_many_redirects", final_url=current, attempt=attempt,
                           error=f"more than {self.config.max_redirects} redirects", exchanges=exchanges)

    def _check_url(self, url: str) -> URL:
        if not isinstance(url, str):  # a null url in a URL table of the user's
            raise FetchError("bad_url", "no url")
        try:
            parsed = URL(url)
        except ValueError as err:
            raise FetchError("bad_url", f"{type(err).__name__}: {err}") from None
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise FetchError("bad_scheme", f"scheme {parsed.scheme!r} is not http or https")
        if not parsed.host:
            raise FetchError("bad_url", "no host")
        try:
            self.guard.check_literal(parsed.host)
        except BlockedAddress as err:
            raise FetchError("blocked_address", str(err)) from None
        except ValueError as err:
            raise FetchError("bad_url", str(err)) from None
        return parsed

    def _final(self, url: str, final_url: str, exchange: Exchange, attempt: int, exchanges: list) -> FetchResult:
        content_type = exchange.header("Content-Type")
        # Every complete final response is archived, as Common Crawl does for 404s: a replay then gives the
        # same outcome. Extract rejects the ones that are not pages, with their reason.
        exchanges.append(exchange)
        result = FetchResult(url, "ok", final_url=final_url, status=exchange.status, content_type=content_type,
                             bytes=len(exchange.body), attempt=attempt, exchanges=exchanges, final_archived=True)
        mime = mime_of(content_type)
        if not 200 <= exchange.status < 300:
            result.outcome, result.error = "http_status", f"HTTP {exchange.status}"
        elif mime not in self.config.content_types:
            result.outcome, result.error = "bad_content_type", f"Content-Type {content_type!r}"
        elif _textual(mime) and (exchange.body.startswith(BINARY_MAGIC) or b"\x00" in exchange.body[:2048]):
            result.outcome, result.error = "binary_content", f"binary bytes served as {mime}"
        return result

    async def request(self, url: URL, body_limit: int, decoded_limit: int, truncate: bool = False,
                      content_types: list[str] | None = None,
                      send: dict[str, str] | None = None) -> tuple[Exchange, int]:
        """One GET with retries; returns the response and the attempt that gave it."""
        host = self.host(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.slot(host):
                    exchange = await self.transport.get(str(url), body_limit, decoded_limit, truncate, content_types,
                                                        send)
            except FetchError as err:
                if err.retryable and attempt < self.config.max_attempts and self._take_retry():
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                err.attempt = attempt
                raise
            if exchange.status == 429 or exchange.status >= 500:
                retry_after = parse_retry_after(exchange.header("Retry-After"))
                if retry_after is not None and retry_after > self.config.max_retry_after_s:
                    return exchange, attempt
                if retry_after is not None and self.polite:
                    # The host asked everyone to wait: no request to it starts before then, whether or not this
                    # URL has an attempt left.
                    loop = asyncio.get_running_loop()
                    host.pace.next_start = max(host.pace.next_start, loop.time() + retry_after)
                if attempt < self.config.max_attempts and self._take_retry():
                    await asyncio.sleep(retry_after if retry_after is not None else self._backoff(attempt))
                    continue
            return exchange, attempt

    def _take_retry(self) -> bool:
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2^(attempt-1))]."""
        if not self.polite:
            return 0.0
        return self.rng.uniform(0, min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1)))

    async def robots(self, url: URL) -> RobotsRules:
        """The robots.txt rules of `url`'s host, fetched once (redirects followed) and cached."""
        host = self.host(url)
        if host.robots is not None:
            return host.robots
        async with host.robots_lock:
            if host.robots is None:
                rules, exchanges = await self._fetch_robots(url)
                self._set_robots(host, rules)
                self.robots_done.append((self.host_key(url), rules, exchanges))
                if self.polite:  # the robots.txt request itself counts: the next one waits a Crawl-delay
                    pace = host.pace
                    pace.next_start = max(pace.next_start, asyncio.get_running_loop().time() + pace.delay)
        return host.robots

    def _set_robots(self, host: HostState, rules: RobotsRules) -> None:
        host.robots = rules
        delay = rules.crawl_delay(self.agent)
        if delay is not None:
            # The host name's origins share one pace: the strictest Crawl-delay among them holds.
            host.pace.delay = max(host.pace.delay, min(delay, self.config.max_crawl_delay_s))

    async def _fetch_robots(self, url: URL) -> tuple[RobotsRules, list[Exchange]]:
        current, exchanges = robots_url(str(url)), []
        for _hop in range(self.config.max_redirects + 1):
            try:
                parsed = self._check_url(current)
                exchange, _ = await self.request(parsed, self.config.robots_max_bytes, self.config.robots_max_bytes,
                                                 truncate=True)
            except FetchError as err:
                if err.outcome == "not_in_warc":  # replay: the archive's crawler already obeyed robots.txt
                    return RobotsRules("unavailable", detail="no robots.txt in the WARC files"), exchanges
                return RobotsRules.from_error(err.outcome, err.detail), exchanges
            exchanges.append(exchange)
            location = exchange.header("Location")
            if exchange.status in REDIRECT_STATUSES and location:
                try:
                    current = redirect_target(current, location)
                except ValueError as err:
                    return RobotsRules.from_error("bad_url", f"bad Location {location!r}: {err}"), exchanges
                continue
            return RobotsRules.from_response(exchange.status, exchange.body), exchanges
        return RobotsRules.from_error("too_many_redirects", "robots.txt: too many redirects"), exchanges


def fetch_urls(config: FetchConfig, urls: list[str]) -> list[FetchResult]:
    """Fetch `urls` over the network with one fetcher (all at once, within its limits): one-off checks and tests."""

    async def go() -> list[FetchResult]:
        transport = HttpTransport(config)
        fetcher = Fetcher(config, transport, len(urls))
        try:
            return await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        finally:
            await transport.close()

    return asyncio.run(go())


def mime_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _textual(mime: str) -> bool:
    return mime.startswith("text/") or mime.endswith(("+xml", "/xml"))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
