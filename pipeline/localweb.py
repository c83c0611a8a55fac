"""A local faulty web: one aiohttp server on 127.0.0.1 that is many websites, chosen by the Host header.

Everything is generated from a seed, so a crawl of it has a known right answer. Each host `siteNNN.web.test` has
article pages (navigation, sidebar, footer, comment section, cookie banner around the text of the article), a
robots.txt (with a disallowed `/private/` path and an optional Crawl-delay), and every fault a crawler meets:

    /article/K          an article (ok)                  /private/K     disallowed by robots.txt
    /redirect/K         301 to /article/K                /xredirect/K   302 to an article on the next host
    /loop/a             /loop/b -> /loop/a -> ...        /chain/N       N redirects in a row
    /to-private         302 to http://10.0.0.1/          /to-metadata   302 to http://169.254.169.254/...
    /to-loopback        302 to http://127.0.0.1:PORT/... /ftp           302 to ftp://...
    /missing/K 404      /gone/K 410      /error/K 500    /busy/K 503 + Retry-After, then ok
    /throttle/K 429 + Retry-After, then ok               /flaky/K  500 once, then ok
    /slow/K             an article after `slow_s`        /hang/K   headers never come
    /reset/K            connection closed mid-body       /endless/K     a body that never ends
    /bomb/K             gzip bomb (100 MB of zeros)      /brbomb/K      brotli bomb
    /latin1/K           cp1252 bytes declared utf-8      /nocharset/K   no charset anywhere
    /binary/K           PNG bytes as text/html           /file/K.pdf    application/pdf
    /data/K.json        application/json
    /drop/K             the connection closed before any response (a dropped keep-alive, seen from the client)
    /to-https/K         301 to https://HOST:TLS_PORT/article/K (when serving TLS)

Pages that test the corpus stages after the crawl (each host has one or two; all crawl as ok):

    /syndicated/K       article K of the previous host, lightly edited (a near duplicate for dedup)
    /stub/K             an article of a few sentences (under the filter's 128-token minimum)
    /foreign/K          an article in German (dropped by the filter's language rule)

Host variants by index: index % 7 == 5 serves robots.txt with 503 (the whole host is disallowed: its URLs are
`robots_unreachable`), == 6 with 404 (everything allowed). The server records, per host, every request (arrival
time, path), every response (time the handler finished, path, status) and the highest number of requests in
flight at once, so a test can prove the crawler's politeness from the server's side.

With `tls` (an `ssl.SSLContext` holding the server's certificates; the caller picks them, e.g. per SNI name) the
same web is also served over https on a second port, `tls_port`: `url(host, path, scheme="https")`.

    web = LocalWeb(seed=1, n_hosts=20, pages_per_host=10); port = web.start()
    web.pages()      # [Page(url, host, path, kind, expected outcome, title, text, family, expected_filter)]
    web.resolve()    # {"*.web.test": "127.0.0.1:PORT"} for the crawler's `resolve`
    web.stats()      # {host: HostStats}
    web.stop()

`python -m pipeline.localweb --seed 1 --hosts 20 --pages 10 [--port P] [--latency 0.05]` serves in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import html
import json
import random
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

DOMAIN = "web.test"
ROBOTS_503, ROBOTS_404 = 5, 6

WORDS = (
    "the of and to in is that it was for on are as with his they at be this have from or one had by word but not "
    "what all were we when your can said there use an each which she do how their if will up other about out many "
    "then them these so some her would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come made may part"
).split()
TOPICS = (
    "river", "harbour", "library", "engine", "orchard", "glacier", "market", "violin", "lantern", "garden", "bridge",
    "council", "museum", "railway", "forest", "kitchen", "satellite", "village", "factory", "island", "theatre",
    "mountain", "school", "festival", "hospital", "telescope", "vineyard", "canal", "archive", "workshop",
)
VERBS = ("built", "studied", "visited", "described", "repaired", "measured", "painted", "opened", "explored",
         "restored", "mapped", "funded", "planned", "photographed", "protected", "questioned", "recorded")
ADJECTIVES = ("old", "quiet", "famous", "narrow", "bright", "ancient", "modern", "busy", "remote", "careful",
              "small", "large", "strange", "patient", "curious", "generous", "northern", "southern")
GERMAN_WORDS = (
    "der die das und ist nicht ein eine mit auf für von dem den zu im sich auch es wir sie nach bei aus wie "
    "noch aber nur oder wenn schon sehr durch über unter zwischen immer wieder heute gestern morgen jahr stadt "
    "fluss hafen brücke garten schule arbeit leben menschen zeit geschichte wurde werden haben hatte können"
).split()
NAMES = ("Ada", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kofi", "Lena")

BOMBS: dict[tuple[str, int], bytes] = {}  # (encoding, MiB) -> compressed zeros, shared by the webs of a process
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8

# (kind, path template, expected crawl outcome with default settings and a working robots.txt)
FAULT_KINDS: tuple[tuple[str, str, str], ...] = (
    ("redirect", "/redirect/{k}", "ok"),
    ("cross_redirect", "/xredirect/{k}", "ok"),
    ("redirect_loop", "/loop/a", "too_many_redirects"),
    ("redirect_chain", "/chain/9", "too_many_redirects"),
    ("to_private", "/to-private", "blocked_address"),
    ("to_metadata", "/to-metadata", "blocked_address"),
    ("to_ftp", "/ftp", "bad_scheme"),
    ("not_found", "/missing/{k}", "http_status"),
    ("gone", "/gone/{k}", "http_status"),
    ("server_error", "/error/{k}", "http_status"),
    ("busy", "/busy/{k}", "ok"),
    ("throttled", "/throttle/{k}", "ok"),
    ("flaky", "/flaky/{k}", "ok"),
    ("slow", "/slow/{k}", "ok"),
    ("hang", "/hang/{k}", "timeout"),
    ("reset", "/reset/{k}", "read_error"),
    ("endless", "/endless/{k}", "too_large"),
    ("gzip_bomb", "/bomb/{k}", "decoded_too_large"),
    ("brotli_bomb", "/brbomb/{k}", "decoded_too_large"),
    ("wrong_charset", "/latin1/{k}", "ok"),
    ("no_charset", "/nocharset/{k}", "ok"),
    ("binary_as_html", "/binary/{k}", "binary_content"),
    ("pdf", "/file/{k}.pdf", "bad_content_type"),
    ("json", "/data/{k}.json", "bad_content_type"),
)
# Faults whose final response is an article of the same host (k = 0), or of the next one.
SERVES_OWN_ARTICLE = {"redirect", "busy", "throttled", "flaky", "slow", "wrong_charset", "no_charset"}
SERVES_NEXT_ARTICLE = {"cross_redirect"}


@dataclass
class Page:
    """A URL the local web serves, what it is, and what a crawl with default limits should record for it."""

    url: str
    host: str
    path: str
    kind: str
    expected: str
    title: str | None = None
    text: str | None = None  # the article's main text, paragraphs joined by blank lines
    family: str | None = None  # "host/K" of the article whose text this page serves: pages of one family are duplicates
    expected_filter: str | None = None  # the filter's reject reason for its text, None: kept


@dataclass
class HostStats:
    """What the server saw of one host: requests in arrival order, responses in the order they were finished
    (time, path, status; no entry for a connection dropped on purpose), the most requests in flight at once."""

    requests: list[tuple[float, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    responses: list[tuple[float, str, int]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.requests]

    def min_gap(self, exclude_robots: bool = False) -> float | None:
        """The shortest time between two arrivals. Seen from here it also holds each request's transit and the
        server's own lag, so compare it with a tolerance."""
        times = [t for t, path in self.requests if not (exclude_robots and path == "/robots.txt")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        return min(gaps) if gaps else None

    def min_gap_after_end(self) -> float | None:
        """The shortest time from a response finished here to the next request's arrival. The client saw that end
        later and the arrival is recorded later still, so this never understates the client's own gap: compare
        it with the delay exactly, however loaded the machine."""
        arrivals = sorted(t for t, _ in self.requests)
        gaps = [next((t for t in arrivals if t > end), None) for end, _, _ in self.responses]
        gaps = [start - end for start, (end, _, _) in zip(gaps, self.responses) if start is not None]
        return min(gaps) if gaps else None


class LocalWeb:
    """The server. Deterministic from `seed`; `latency_s` delays every response (the benchmark's network)."""

    def __init__(self, seed: int = 0, n_hosts: int = 20, pages_per_host: int = 10, latency_s: float = 0.0,
                 crawl_delay: float | None = None, slow_s: float = 0.5, hang_s: float = 120.0,
                 retry_after_s: int = 1, bomb_mb: int = 100, faults_per_host: int = 2, robots_faults: bool = True,
                 tls: ssl.SSLContext | None = None):
        self.seed, self.n_hosts, self.pages_per_host = seed, n_hosts, pages_per_host
        self.latency_s, self.crawl_delay, self.slow_s, self.hang_s = latency_s, crawl_delay, slow_s, hang_s
        self.retry_after_s, self.bomb_mb, self.faults_per_host = retry_after_s, bomb_mb, faults_per_host
        self.robots_faults = robots_faults  # False: every host serves its robots.txt (the benchmark's web)
        self._pages_html: dict[tuple[str, str, int], bytes] = {}
        self.port: int | None = None
        self.tls, self.tls_port = tls, None
        self._stats: dict[str, HostStats] = {}
        self._in_flight = 0
        self.max_in_flight = 0  # over all hosts: the crawler's global concurrency, seen from here
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # -- the site map ---------------------------------------------------------------------------------------

    def host_name(self, index: int) -> str:
        return f"site{index:03d}.{DOMAIN}"

    @property
    def hosts(self) -> list[str]:
        return [self.host_name(i) for i in range(self.n_hosts)]

    def url(self, host: str | int, path: str, scheme: str = "http") -> str:
        if isinstance(host, int):
            host = self.host_name(host)
        number = self.tls_port if scheme == "https" else self.port
        port = f":{number}" if number else ""
        return f"{scheme}://{host}{port}{path}"

    def resolve(self) -> dict[str, str]:
        """The crawler's `resolve` setting that sends every host of this web to this server."""
        return {f"*.{DOMAIN}": f"127.0.0.1:{self.port}"}

    def robots_variant(self, host: str) -> str:
        if not self.robots_faults:
            return "rules"
        index = int(host.split(".", 1)[0][len("site"):])
        return {ROBOTS_503: "unreachable", ROBOTS_404: "missing"}.get(index % 7, "rules")

    def pages(self) -> list[Page]:
        """Every page the web is meant to be crawled for: articles, one private page, a near duplicate, a stub or a
        foreign article, and some faults per host."""
        pages = []
        rng = random.Random(f"{self.seed}:faults")
        for i, host in enumerate(self.hosts):
            variant = self.robots_variant(host)
            next_host = self.host_name((i + 1) % self.n_hosts)

            def expect(outcome: str) -> str:
                if variant == "unreachable":
                    return "robots_unreachable"
                return outcome

            def add(path: str, kind: str, outcome: str, **content) -> None:
                pages.append(Page(self.url(host, path), host, path, kind, expect(outcome), **content))

            for k in range(self.pages_per_host):
                title, text = self.article(host, k)
                add(f"/article/{k}", "article", "ok", title=title, text=text, family=f"{host}/{k}")
            if variant == "missing":  # no robots.txt: the private page is crawled, and serves article 0
                add("/private/0", "private", "ok", family=f"{host}/0")
            else:
                add("/private/0", "private", "robots_disallowed")
            if self.pages_per_host:
                k = i % self.pages_per_host
                title, text = self.syndicated(host, k)
                add(f"/syndicated/{k}", "near_duplicate", "ok", title=title, text=text,
                    family=f"{self.host_name((i - 1) % self.n_hosts)}/{k}")
            if i % 2:
                title, text = self.stub(host, 0)
                add("/stub/0", "stub", "ok", title=title, text=text, family=f"{host}/stub", expected_filter="min_tokens")
            else:
                title, text = self.foreign(host, 0)
                add("/foreign/0", "foreign", "ok", title=title, text=text, family=f"{host}/foreign",
                    expected_filter="lang")
            for kind, template, outcome in rng.sample(FAULT_KINDS, min(self.faults_per_host, len(FAULT_KINDS))):
                path = template.format(k=0)
                family = (f"{host}/0" if kind in SERVES_OWN_ARTICLE else
                          f"{next_host}/0" if kind in SERVES_NEXT_ARTICLE else None)
                if kind == "cross_redirect" and self.robots_variant(next_host) == "unreachable":
                    outcome, family = "robots_unreachable", None
                add(path, kind, outcome, family=family)
        return pages

    def article(self, host: str, k: int) -> tuple[str, str]:
        """The title and main text of article `k` of `host` (what extraction should find)."""
        rng = random.Random(f"{self.seed}:{host}:article:{k}")
        topic = rng.choice(TOPICS)
        title = f"The {rng.choice(ADJECTIVES)} {topic} of {host.split('.')[0]}: notes {k}"
        paragraphs = []
        for _ in range(rng.randint(4, 7)):
            sentences = []
            for _ in range(rng.randint(3, 6)):
                words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
                words.insert(rng.randrange(len(words)), f"{rng.choice(ADJECTIVES)} {topic}")
                words.insert(rng.randrange(len(words)), f"{rng.choice(NAMES)} {rng.choice(VERBS)}")
                sentence = " ".join(words)
                sentences.append(sentence[0].upper() + sentence[1:] + ".")
            paragraphs.append(" ".join(sentences))
        # A sentence no other page has: the demo looks for it after extraction.
        paragraphs.append(f"Planted marker {self.seed}-{host}-{k}: the {topic} was {rng.choice(VERBS)} in {1900 + k}.")
        return title, "\n\n".join(paragraphs)

    def syndicated(self, host: str, k: int) -> tuple[str, str]:
        """Article `k` of the previous host as this host republishes it: a new title, one sentence rewritten, for odd
        `k` one paragraph dropped, a credit line added (word 5-gram Jaccard about 0.85, or 0.7 with the drop)."""
        source = self.host_name((self.hosts.index(host) - 1) % self.n_hosts)
        title, text = self.article(source, k)
        rng = random.Random(f"{self.seed}:{host}:syndicated:{k}")
        paragraphs = text.split("\n\n")
        if k % 2 and len(paragraphs) > 3:
            del paragraphs[rng.randrange(len(paragraphs) - 1)]
        target = rng.randrange(len(paragraphs) - 1)
        sentences = paragraphs[target].split(". ")
        sentences[rng.randrange(len(sentences))] = (f"{rng.choice(NAMES)} {rng.choice(VERBS)} it again last "
                                                    f"{rng.choice(['spring', 'winter', 'year'])}")
        paragraphs[target] = ". ".join(sentences)
        paragraphs.append(f"This article first appeared on {source} and is republished with permission.")
        return f"Republished: {title}", "\n\n".join(paragraphs)

    def stub(self, host: str, k: int) -> tuple[str, str]:
        """A page with only a few sentences of text: fewer GPT-2 tokens than the filter's minimum."""
        rng = random.Random(f"{self.seed}:{host}:stub:{k}")
        topic = rng.choice(TOPICS)
        sentences = [f"The {rng.choice(ADJECTIVES)} {topic} was {rng.choice(VERBS)} by {rng.choice(NAMES)} "
                     + " ".join(rng.choice(WORDS) for _ in range(8)) + "." for _ in range(4)]
        return f"Short note on the {topic}", " ".join(sentences)

    def foreign(self, host: str, k: int) -> tuple[str, str]:
        """An article of German words: long enough, but not English."""
        rng = random.Random(f"{self.seed}:{host}:foreign:{k}")
        paragraphs = []
        for _ in range(5):
            sentences = [" ".join(rng.choice(GERMAN_WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                         for _ in range(5)]
            paragraphs.append(" ".join(sentences))
        return "Die Geschichte der Stadt und des Flusses", "\n\n".join(paragraphs)

    def content(self, host: str, head: str, k: int) -> tuple[str, str]:
        """(title, text) of a content page: head is article, syndicated, stub or foreign."""
        return {"syndicated": self.syndicated, "stub": self.stub, "foreign": self.foreign}.get(head, self.article)(host, k)

    def article_html(self, host: str, k: int, charset: str | None = "utf-8", head: str = "article") -> str:
        title, text = self.content(host, head, k)
        rng = random.Random(f"{self.seed}:{host}:chrome:{k}")
        nav = "".join(f'<li><a href="/article/{j}">{rng.choice(TOPICS).title()}</a></li>' for j in range(6))
        sidebar = "".join(f'<li><a href="/article/{j}">Popular: {rng.choice(TOPICS)} {j}</a></li>' for j in range(5))
        comments = "".join(
            f'<div class="comment"><span class="author">{rng.choice(NAMES)}</span><p>{rng.choice(["Great post!", "I disagree.", "Thanks for sharing", "First!"])} '
            f'{" ".join(rng.choice(WORDS) for _ in range(8))}</p></div>' for _ in range(rng.randint(2, 5)))
        body = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n"))
        meta = f'<meta charset="{charset}">' if charset else ""
        return (
            f"<!DOCTYPE html><html lang=\"en\"><head>{meta}<title>{html.escape(title)}</title></head><body>"
            '<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. '
            "<button>Accept all cookies</button></div>"
            f'<header><nav class="menu"><ul>{nav}</ul></nav></header>'
            f'<main><article><h1>{html.escape(title)}</h1><p class="byline">By {rng.choice(NAMES)}</p>{body}</article>'
            f'<section id="comments" class="comments"><h2>Comments</h2>{comments}</section></main>'
            f'<aside class="sidebar"><h3>Popular</h3><ul>{sidebar}</ul></aside>'
            f"<footer><p>&copy; {host}. All rights reserved.</p><a href=\"/about\">About</a> "
            '<a href="/privacy">Privacy</a></footer></body></html>'
        )

    def robots_txt(self) -> str:
        lines = ["User-agent: *", "Disallow: /private/"]
        if self.crawl_delay is not None:
            lines.append(f"Crawl-delay: {self.crawl_delay}")
        return "\n".join(lines) + "\n"

    # -- stats ----------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, HostStats]:
        with self._lock:
            return {host: HostStats(list(s.requests), s.in_flight, s.max_in_flight, list(s.responses))
                    for host, s in self._stats.items()}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self._attempts.clear()
            self.max_in_flight = 0

    def _enter(self, host: str, path: str) -> None:
        with self._lock:
            stats = self._stats.setdefault(host, HostStats())
            stats.requests.append((time.monotonic(), path))
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self, host: str, path: str, status: int | None) -> None:
        with self._lock:
            stats = self._stats[host]
            stats.in_flight -= 1
            if status is not None:
                stats.responses.append((time.monotonic(), path, status))
            self._in_flight -= 1

    def _attempt(self, host: str, path: str) -> int:
        with self._lock:
            n = self._attempts.get((host, path), 0) + 1
            self._attempts[(host, path)] = n
            return n

    # -- serving --------------------------------------------------------------------------------------------

    def _bomb(self, encoding: str) -> bytes:
        """`bomb_mb` MiB of zeros, gzip- or brotli-compressed: built once per process, before serving (built while
        serving, it held the server's loop for a second or more and the requests queued behind it looked, from
        here, as if they had all come at once)."""
        import brotli

        key = (encoding, self.bomb_mb)
        if key not in BOMBS:
            zeros = bytes(self.bomb_mb << 20)
            BOMBS[key] = (gzip.compress(zeros, compresslevel=9) if encoding == "gzip"
                          else brotli.compress(zeros, quality=5))
        return BOMBS[key]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler):
        host = (request.host or "").rsplit(":", 1)[0].lower()
        self._enter(host, request.path_qs)
        status = None
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            response = await handler(request)
            status = None if request.transport is None or request.transport.is_closing() else response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            self._leave(host, request.path_qs, status)

    def _html(self, text: str, status: int = 200, content_type: str = "text/html; charset=utf-8") -> web.Response:
        return web.Response(body=text.encode("utf-8"), status=status, headers={"Content-Type": content_type})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].lower()
        if host not in self.hosts:
            return web.Response(status=421, text="misdirected request")
        path, parts = request.path, request.path.strip("/").split("/")
        head, arg = parts[0], (parts[1] if len(parts) > 1 else "0")
        index = self.hosts.index(host)
        if path == "/robots.txt":
            variant = self.robots_variant(host)
            if variant == "unreachable":
                return web.Response(status=503, text="unavailable")
            if variant == "missing":
                return web.Response(status=404, text="not found")
            return web.Response(text=self.robots_txt(), content_type="text/plain")
        k = int(arg) if arg.isdigit() else 0
        if head in ("article", "private", "slow", "", "syndicated", "stub", "foreign"):
            if head == "slow":
                await asyncio.sleep(self.slow_s)
            content = head if head in ("syndicated", "stub", "foreign") else "article"
            body = self._pages_html.get((host, content, k))
            if body is None:
                body = self.article_html(host, k, head=content).encode()
                if len(self._pages_html) < 100_000:
                    self._pages_html[(host, content, k)] = body
            return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})
        if head == "redirect":
            raise web.HTTPMovedPermanently(f"/article/{k}")
        if head == "xredirect":
            raise web.HTTPFound(self.url((index + 1) % self.n_hosts, f"/article/{k}"))
        if head == "loop":
            raise web.HTTPFound("/loop/b" if arg == "a" else "/loop/a")
        if head == "chain":
            raise web.HTTPFound(f"/chain/{k - 1}" if k > 0 else "/article/0")
        if head == "to-private":
            raise web.HTTPFound("http://10.0.0.1/admin")
        if head == "to-metadata":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if head == "to-https" and self.tls_port:
            raise web.HTTPMovedPermanently(self.url(host, f"/article/{k}", scheme="https"))
        if head == "drop":
            request.transport.close()  # before the status line: the client sees a server disconnect
            return web.Response(status=204)
        if head == "to-loopback":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/article/0")
        if head == "ftp":
            raise web.HTTPFound("ftp://files.example/pub/readme.txt")
        if head == "missing":
            return web.Response(status=404, text="not found")
        if head == "gone":
            return web.Response(status=410, text="gone")
        if head == "error":
            return web.Response(status=500, text="internal error")
        if head in ("busy", "throttle", "flaky"):
            if self._attempt(host, path) == 1:
                status = {"busy": 503, "throttle": 429, "flaky": 500}[head]
                headers = {"Retry-After": str(self.retry_after_s)} if head != "flaky" else {}
                return web.Response(status=status, text="try again later", headers=headers)
            return self._html(self.article_html(host, k))
        if head == "hang":
            return await self._hang(request)
        if head == "reset":
            return await self._reset(request, host, k)
        if head == "endless":
            return await self._endless(request)
        if head == "bomb":
            return web.Response(body=self._bomb("gzip"),
                                headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})
        if head == "brbomb":
            return web.Response(body=self._bomb("br"),
                                headers={"Content-Type": "text/html", "Content-Encoding": "br"})
        if head == "latin1":
            page = self.article_html(host, k, charset=None).replace("notes", "notes \u00e9t\u00e9 caf\u00e9")
            return web.Response(body=page.encode("cp1252"), headers={"Content-Type": "text/html; charset=utf-8"})
        if head == "nocharset":
            return web.Response(body=self.article_html(host, k, charset=None).encode("utf-8"),
                                headers={"Content-Type": "text/html"})
        if head == "binary":
            return web.Response(body=PNG_BYTES, headers={"Content-Type": "text/html"})
        if head == "file":
            return web.Response(body=b"%PDF-1.4\n" + bytes(200), headers={"Content-Type": "application/pdf"})
        if head == "data":
            return web.Response(text=json.dumps({"k": k}), content_type="application/json")
        return web.Response(status=404, text="not found")

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        """Send nothing until the client gives up (or `hang_s` passes)."""
        deadline = time.monotonic() + self.hang_s
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return web.Response(status=200, text="too late")

    async def _reset(self, request: web.Request, host: str, k: int) -> web.StreamResponse:
        body = self.article_html(host, k).encode()
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8",
                                               "Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[: len(body) // 3])
        await asyncio.sleep(0.05)
        request.transport.abort()  # RST mid-body: the client has a third of what Content-Length promised
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        await response.prepare(request)
        chunk = b"<p>" + b"all work and no play " * 3000 + b"</p>"
        try:
            for _ in range(100_000):  # bounded: about 6 GB, far past any crawler's cap
                if request.transport is None or request.transport.is_closing():
                    break
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    # -- running --------------------------------------------------------------------------------------------

    def start(self, port: int = 0, reuse_port: bool = False) -> int:
        """Serve on 127.0.0.1 in a background thread; returns the port. With `reuse_port`, several processes can
        serve one port (the kernel spreads connections over them)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        for encoding in ("gzip", "br"):
            self._bomb(encoding)

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.port = loop.run_until_complete(self._start(port, reuse_port))
                if self.tls is not None:
                    self.tls_port = loop.run_until_complete(self._start(0, False, self.tls))
            except BaseException as err:  # reported to the caller of start()
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="localweb", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.port

    async def _start(self, port: int, reuse_port: bool = False, tls: ssl.SSLContext | None = None) -> int:
        if self._runner is None:
            self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
            await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024, reuse_port=reuse_port or None,
                           ssl_context=tls)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> LocalWeb:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.localweb", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10, help="articles per host")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument("--crawl-delay", type=float, default=None)
    parser.add_argument("--reuse-port", action="store_true", help="let other processes serve the same port")
    parser.add_argument("--plain-robots", action="store_true", help="no robots.txt faults (every host has rules)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until killed)")
    args = parser.parse_args(argv)
    site = LocalWeb(args.seed, args.hosts, args.pages, latency_s=args.latency, crawl_delay=args.crawl_delay,
                    robots_faults=not args.plain_robots)
    port = site.start(args.port, reuse_port=args.reuse_port)
    print(json.dumps({"port": port, "resolve": site.resolve(), "pages": len(site.pages())}), flush=True)
    try:
        if args.seconds is None:
            threading.Event().wait()
        else:
            time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    site.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
