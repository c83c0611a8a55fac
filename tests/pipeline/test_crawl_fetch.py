"""The fetcher against the local web: every fault's outcome, politeness proved from the server's side, retries,
robots.txt semantics, and the decoders' caps."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib

import brotli
import pytest
from yarl import URL

from jobs.fixtures.localweb import FAULT_KINDS, LocalWeb
from pipeline.fetch import BoundedDecoder, FetchConfig, FetchError, Fetcher, fetch_urls, parse_retry_after
from pipeline.robots import RobotsRules, robots_url, user_agent_token

FAST = dict(allow_networks=["127.0.0.0/8"], total_timeout_s=1.5, read_timeout_s=1.0, connect_timeout_s=1.0,
            backoff_base_s=0.05, max_body_bytes=1 << 20, max_decoded_bytes=4 << 20, retry_budget=1.0)


@pytest.fixture(scope="module")
def web():
    site = LocalWeb(seed=11, n_hosts=14, pages_per_host=3, faults_per_host=len(FAULT_KINDS) // 7 + 1,
                    hang_s=10)
    site.start()
    yield site
    site.stop()


# ---------------------------------------------------------------------------------------------------------------
# Units


def test_bounded_decoder_stops_bombs():
    bomb = gzip.compress(b"\0" * (50 << 20))
    decoder = BoundedDecoder("gzip", 1 << 20)
    with pytest.raises(FetchError) as err:
        for i in range(0, len(bomb), 4096):
            decoder.feed(bomb[i:i + 4096])
    assert err.value.outcome == "decoded_too_large" and decoder.size <= (1 << 20) + 1

    decoder = BoundedDecoder("br", 1 << 20)
    with pytest.raises(FetchError, match="decoded body over"):
        decoder.feed(brotli.compress(b"\0" * (50 << 20)))

    text = b"<html>" + b"hello world " * 1000
    assert BoundedDecoder("gzip", 1 << 20).feed(gzip.compress(text)) == text
    assert BoundedDecoder("deflate", 1 << 20).feed(zlib.compress(text)) == text
    raw = zlib.compressobj(wbits=-15)
    assert BoundedDecoder("deflate", 1 << 20).feed(raw.compress(text) + raw.flush()) == text  # headerless deflate
    assert BoundedDecoder("br", 1 << 20).feed(brotli.compress(text)) == text
    assert BoundedDecoder(None, 1 << 20).feed(text) == text
    with pytest.raises(FetchError) as err:
        BoundedDecoder("gzip", 1 << 20).feed(b"not gzip at all")
    assert err.value.outcome == "decode_error"
    with pytest.raises(FetchError):
        BoundedDecoder("compress", 100)


def test_retry_after_forms():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(date) <= 31


def test_robots_semantics_rfc9309():
    rules = RobotsRules.from_response(200, b"User-agent: *\nDisallow: /private/\nAllow: /private/ok$\n"
                                           b"Disallow: /*.pdf$\nCrawl-delay: 2\n")
    agent = user_agent_token("webtext-crawler/0.1 (+https://x)")
    assert agent == "webtext-crawler"
    assert rules.allowed("http://h/public", agent)
    assert not rules.allowed("http://h/private/x", agent)
    assert rules.allowed("http://h/private/ok", agent)  # longest match wins
    assert not rules.allowed("http://h/a/b.pdf", agent)  # wildcard and end anchor
    assert rules.crawl_delay(agent) == 2.0
    ours = RobotsRules.from_response(200, b"User-agent: *\nAllow: /\n\nUser-agent: webtext-crawler\nDisallow: /\n")
    assert not ours.allowed("http://h/x", agent) and ours.allowed("http://h/x", "otherbot")
    assert RobotsRules.from_response(404).allowed("http://h/x", agent)  # unavailable: allowed
    assert RobotsRules.from_response(401).allowed("http://h/x", agent)
    assert not RobotsRules.from_response(503).allowed("http://h/x", agent)  # unreachable: disallowed
    too_many = RobotsRules.from_response(429)  # still throttled after its retries: not "crawl everything"
    assert not too_many.allowed("http://h/x", agent) and too_many.outcome() == "robots_unreachable"
    timeout = RobotsRules.from_error("timeout", "no complete response in time")
    assert not timeout.allowed("http://h/x", agent)
    assert (timeout.outcome(), RobotsRules.from_response(503).outcome(), rules.outcome()) == (
        "robots_unreachable", "robots_unreachable", "robots_disallowed")
    assert "timeout" in timeout.why_disallowed() and "HTTP 503" in RobotsRules.from_response(503).why_disallowed()
    for refusal in ("blocked_address", "bad_url", "bad_scheme"):
        refused = RobotsRules.from_error(refusal, "why")
        assert not refused.allowed("http://h/x", agent) and refused.outcome() == refusal
    # A decision survives the checkpoint unchanged.
    for decision in (rules, timeout, RobotsRules.from_response(404), RobotsRules.from_error("bad_scheme", "ftp")):
        again = RobotsRules.from_json(json.loads(json.dumps(decision.to_json())))
        assert (again.outcome(), again.crawl_delay(agent), again.allowed("http://h/private/x", agent),
                again.allowed("http://h/a", agent)) == (decision.outcome(), decision.crawl_delay(agent),
                                                        decision.allowed("http://h/private/x", agent),
                                                        decision.allowed("http://h/a", agent))
    assert robots_url("https://h:8080/a/b?q=1#f") == "https://h:8080/robots.txt"


def test_one_pace_per_host_name_one_robots_txt_per_origin():
    fetcher = Fetcher(FetchConfig(), transport=None, n_urls=1)
    origins = [fetcher.host(URL(u)) for u in ("http://a.test/x", "https://A.test/y", "http://a.test.:8080/z")]
    assert len({id(o) for o in origins}) == 3 and len({id(o.pace) for o in origins}) == 1
    assert fetcher.host(URL("http://b.test/")).pace is not origins[0].pace


def test_robots_txt_with_a_byte_order_mark_is_obeyed():
    """A robots.txt saved with a UTF-8 byte order mark (Windows editors, IIS): its first line is a rule like any
    other (Google's parser skips the mark); read with it, the first group was lost and everything allowed."""
    rules = RobotsRules.from_response(200, b"\xef\xbb\xbfUser-agent: *\r\nDisallow: /private/\r\n")
    assert not rules.allowed("http://h/private/x", "webtext-crawler") and rules.allowed("http://h/a", "webtext-crawler")


# ---------------------------------------------------------------------------------------------------------------
# Against the local web


def test_every_fault_has_its_outcome_and_politeness_holds(web):
    """One crawl of everything the web lists: each URL's outcome is the one planted; the server saw at most one
    request in flight per host, the delay between requests to a host, and no request to a disallowed path."""
    pages = web.pages()
    assert {p.kind for p in pages} >= {"article", "private", "hang", "gzip_bomb", "endless", "reset", "busy"}
    config = FetchConfig(**FAST, resolve=web.resolve(), min_delay_s=0.1, global_concurrency=8)
    web.reset_stats()
    results = fetch_urls(config, [p.url for p in pages])
    mismatches = [(p.kind, p.url, p.expected, r.outcome, r.error) for p, r in zip(pages, results) if r.outcome != p.expected]
    assert not mismatches
    stats = web.stats()
    for host, seen in stats.items():
        assert seen.max_in_flight == 1, host
        if len(seen.requests) > 1:
            assert seen.min_gap_after_end() >= 0.1 and seen.min_gap() >= 0.1 - 0.015, host
        variant = web.robots_variant(host)
        if variant == "rules":
            assert not any(path.startswith("/private/") for path in seen.paths), host
        if variant == "unreachable":
            assert seen.paths == ["/robots.txt"] * 3, host  # 503 retried, then nothing else asked of the host
        assert seen.paths.count("/robots.txt") == (3 if variant == "unreachable" else 1), host
    assert web.max_in_flight <= 8
    ok = [r for p, r in zip(pages, results) if r.outcome == "ok" and p.kind == "article"]
    assert ok and all(r.content_type.startswith("text/html") and r.bytes > 1000 for r in ok)


def test_retry_after_pauses_the_host_and_budget_limits_retries(web):
    config = FetchConfig(**FAST, resolve=web.resolve(), min_delay_s=0)
    web.reset_stats()
    busy, throttled = fetch_urls(config, [web.url(1, "/busy/7"), web.url(2, "/throttle/7")])
    assert (busy.outcome, busy.attempt, throttled.outcome, throttled.attempt) == ("ok", 2, "ok", 2)
    for host, path in ((web.host_name(1), "/busy/7"), (web.host_name(2), "/throttle/7")):
        times = [t for t, p in web.stats()[host].requests if p == path]
        assert len(times) == 2 and times[1] - times[0] >= web.retry_after_s - 0.01

    no_budget = FetchConfig(**{**FAST, "retry_budget": 0, "retry_budget_min": 0}, resolve=web.resolve(), min_delay_s=0)
    [flaky] = fetch_urls(no_budget, [web.url(3, "/flaky/7")])
    assert (flaky.outcome, flaky.status, flaky.attempt) == ("http_status", 500, 1)
    [error] = fetch_urls(config, [web.url(3, "/error/7")])
    assert (error.outcome, error.status, error.attempt) == ("http_status", 500, 3)  # 5xx retried to the limit
    too_long = FetchConfig(**{**FAST, "max_retry_after_s": 0.5}, resolve=web.resolve(), min_delay_s=0)
    [gave_up] = fetch_urls(too_long, [web.url(4, "/busy/8")])
    assert (gave_up.outcome, gave_up.status, gave_up.attempt) == ("http_status", 503, 1)


@pytest.mark.parametrize("limits", [{"max_attempts": 1}, {"retry_budget": 0, "retry_budget_min": 0}])
def test_retry_after_pauses_the_host_when_the_url_has_no_attempt_left(web, limits):
    """A 503 with Retry-After on a URL that will not be retried (its last attempt, or no retry budget left) still
    pauses the host: the host's other URLs wait it out."""
    config = FetchConfig(**{**FAST, **limits}, resolve=web.resolve(), min_delay_s=0, obey_robots=False)
    web.reset_stats()
    path = f"/busy/{len(limits)}"
    results = fetch_urls(config, [web.url(5, path), web.url(5, "/article/0"), web.url(5, "/article/1")])
    assert [(r.outcome, r.status) for r in results] == [("http_status", 503), ("ok", 200), ("ok", 200)]
    seen = web.stats()[web.host_name(5)]
    [(said_at, _, _)] = [r for r in seen.responses if r[1] == path]
    after = [t for t, p in seen.requests if p != path]
    assert len(after) == 2 and min(after) - said_at >= web.retry_after_s - 0.01, (said_at, after)


def test_crawl_delay_concurrency_and_global_limits():
    site = LocalWeb(seed=2, n_hosts=6, pages_per_host=4, crawl_delay=0.3, slow_s=0.2)
    site.start()
    try:
        delayed = FetchConfig(**FAST, resolve=site.resolve(), min_delay_s=0)
        urls = [site.url(h, f"/article/{k}") for h in (0, 1) for k in range(4)]
        assert all(r.outcome == "ok" for r in fetch_urls(delayed, urls))
        for host in (site.host_name(0), site.host_name(1)):
            seen = site.stats()[host]  # robots.txt Crawl-delay honoured
            assert seen.min_gap_after_end() >= 0.3 and seen.min_gap() >= 0.3 - 0.015

        site.crawl_delay = None
        site.reset_stats()
        two_per_host = FetchConfig(**FAST, resolve=site.resolve(), min_delay_s=0, per_host_concurrency=2,
                                   global_concurrency=3)
        urls = [site.url(h, f"/slow/{k}") for h in (1, 2) for k in range(6)]
        outcomes = [r.outcome for r in fetch_urls(two_per_host, urls)]
        assert outcomes == ["ok"] * len(urls), outcomes
        stats = site.stats()
        assert max(stats[site.host_name(h)].max_in_flight for h in (1, 2)) == 2
        assert site.max_in_flight == 3  # the global limit, reached and never passed
    finally:
        site.stop()


def test_caps_and_robots_off(web):
    small = FetchConfig(**{**FAST, "max_body_bytes": 2000}, resolve=web.resolve(), min_delay_s=0, obey_robots=False)
    big, private = fetch_urls(small, [web.url(8, "/article/0"), web.url(8, "/private/1")])
    assert big.outcome == "too_large" and "2000" in big.error
    assert private.outcome == "too_large"  # requested: robots.txt not consulted when switched off
    only_pdf = FetchConfig(**FAST, resolve=web.resolve(), min_delay_s=0, content_types=["application/pdf"])
    pdf, page = fetch_urls(only_pdf, [web.url(9, "/file/1.pdf"), web.url(9, "/article/1")])
    assert (pdf.outcome, page.outcome) == ("ok", "bad_content_type")
    assert page.content_type == "text/html; charset=utf-8" and page.bytes == 0 and not page.exchanges
    no_redirects = FetchConfig(**FAST, resolve=web.resolve(), min_delay_s=0, max_redirects=0)
    [hop] = fetch_urls(no_redirects, [web.url(9, "/redirect/1")])
    assert hop.outcome == "too_many_redirects"


def test_robots_unreachable_is_its_own_outcome_with_its_cause(web):
    """A host whose robots.txt answers 5xx, refuses connections or never answers: every URL of it is
    robots_unreachable (complete disallow, RFC 9309) with the cause, told apart from a site's own rules."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    unreachable = next(i for i in range(web.n_hosts) if web.robots_variant(web.host_name(i)) == "unreachable")
    ruled = next(i for i in range(web.n_hosts) if web.robots_variant(web.host_name(i)) == "rules")
    config = FetchConfig(**{**FAST, "max_attempts": 1, "total_timeout_s": 0.5},
                         resolve={"dead.web.test": f"127.0.0.1:{dead_port}",
                                  "silent.web.test": f"127.0.0.1:{silent.getsockname()[1]}", **web.resolve()},
                         min_delay_s=0)
    try:
        results = fetch_urls(config, [web.url(unreachable, "/article/0"), "http://dead.web.test/a",
                                 "http://dead.web.test/b", "http://silent.web.test/c", web.url(ruled, "/private/0")])
    finally:
        silent.close()
    outcomes = [r.outcome for r in results]
    assert outcomes == ["robots_unreachable"] * 4 + ["robots_disallowed"], outcomes
    assert "HTTP 503" in results[0].error and "connect_error" in results[1].error and "timeout" in results[3].error
    assert results[4].error == "disallowed by robots.txt"


def test_host_politeness_holds_at_any_concurrency():
    """Two requests in flight per host and a delay of 0.4 s, pages served in 0.15 s: seen from the server, no
    request starts sooner than the delay after another one to the host started or ended, and none before a
    Retry-After the host gave has passed, even for requests that were already waiting."""
    delay = 0.4
    site = LocalWeb(seed=4, n_hosts=3, pages_per_host=6, slow_s=0.15, retry_after_s=1)
    site.start()
    try:
        config = FetchConfig(**FAST, resolve=site.resolve(), min_delay_s=delay, per_host_concurrency=2,
                             obey_robots=False)
        urls = [site.url(h, f"/slow/{k}") for h in (0, 1) for k in range(5)]
        urls += [site.url(2, "/busy/0")] + [site.url(2, f"/slow/{k}") for k in range(4)]
        results = fetch_urls(config, urls)
        assert [r.outcome for r in results] == ["ok"] * len(urls)
        stats = site.stats()
        for h in (0, 1, 2):
            seen = stats[site.host_name(h)]
            starts = [t for t, _ in seen.requests]
            assert seen.max_in_flight <= 2
            # start -> start: what the server sees also holds each request's own transit time (up to the tolerance)
            assert min(b - a for a, b in zip(starts, starts[1:])) >= delay - 0.05
            assert seen.min_gap_after_end() >= delay  # end -> start: exact (see HostStats.min_gap_after_end)
        busy = stats[site.host_name(2)]
        [(said_at, _, _)] = [r for r in busy.responses if r[2] == 503]
        after = [t for t, _ in busy.requests if t > said_at]
        assert after and after[0] - said_at >= site.retry_after_s - 0.01  # Retry-After held for the whole host
    finally:
        site.stop()


def test_every_request_on_the_wire_is_an_attempt(web):
    """A server that drops the connection before answering: aiohttp's own silent resend is off, so the server
    sees exactly `max_attempts` requests, each one an attempt in the result, spaced by the host's delay."""
    for max_attempts in (1, 3):
        config = FetchConfig(**{**FAST, "max_attempts": max_attempts, "backoff_base_s": 0}, resolve=web.resolve(),
                             min_delay_s=0.3, obey_robots=False)
        web.reset_stats()
        [result] = fetch_urls(config, [web.url(12, f"/drop/{max_attempts}")])
        assert (result.outcome, result.attempt) == ("read_error", max_attempts), result.error
        times = [t for t, path in web.stats()[web.host_name(12)].requests]
        assert len(times) == max_attempts
        assert all(b - a >= 0.3 - 0.01 for a, b in zip(times, times[1:]))


def test_refusals_met_fetching_robots_txt_keep_their_own_outcome():
    """robots.txt that redirects to another scheme, to a malformed URL or to a refused address: the host's URLs
    get that refusal as their outcome (bad_scheme, bad_url, blocked_address), not a robots decision."""
    from aiohttp import web as aioweb

    class OddRobots(LocalWeb):
        async def _handle(self, request):
            targets = {0: "ftp://files.example/robots.txt", 1: "http://[::1/robots.txt",
                       2: "http://169.254.169.254/robots.txt"}
            host = (request.host or "").rsplit(":", 1)[0]
            if request.path == "/robots.txt" and host in self.hosts and self.hosts.index(host) in targets:
                return aioweb.Response(status=302, headers={"Location": targets[self.hosts.index(host)]})
            return await super()._handle(request)

    site = OddRobots(seed=6, n_hosts=4, pages_per_host=1)
    site.start()
    try:
        results = fetch_urls(FetchConfig(**FAST, resolve=site.resolve(), min_delay_s=0),
                             [site.url(h, "/article/0") for h in range(4)])
    finally:
        site.stop()
    assert [r.outcome for r in results] == ["bad_scheme", "bad_url", "blocked_address", "ok"], [
        (r.outcome, r.error) for r in results]
    assert all(r.error.startswith("robots.txt: ") for r in results[:3])
