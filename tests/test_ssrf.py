"""The SSRF guard: every address class, IPv6 forms that carry IPv4, the resolver override, and live refusals."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from pipeline.fetch import FetchConfig, Fetcher, HttpTransport
from pipeline.localweb import LocalWeb
from pipeline.ssrf import AddressGuard, BlockedAddress, GuardedResolver, address_class, parse_resolve

ADDRESS_TABLE = [
    ("127.0.0.1", "loopback"),
    ("127.200.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link_local"),  # cloud metadata
    ("169.254.0.1", "link_local"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("192.0.2.10", "private"),  # TEST-NET-1, documentation
    ("198.18.0.1", "private"),  # benchmarking
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link_local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "private"),  # documentation
    ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
    ("::ffff:10.0.0.1", "private (embedded in IPv6)"),
    ("::ffff:169.254.169.254", "link_local (embedded in IPv6)"),
    ("2002:a00:1::1", "private (embedded in IPv6)"),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", "loopback (embedded in IPv6)"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link_local (embedded in IPv6)"),  # NAT64 of 169.254.169.254
    ("8.8.8.8", None),
    ("93.184.216.34", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
]


@pytest.mark.parametrize("address, expected", ADDRESS_TABLE)
def test_address_classes(address, expected):
    assert address_class(ipaddress.ip_address(address)) == expected


def test_allowlist_by_network_and_by_host():
    guard = AddressGuard(allow=["127.0.0.0/8", "*.web.test"])
    assert guard.refusal("x", ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal("x", ipaddress.ip_address("::ffff:127.0.0.1")) is None  # the same IPv4 address
    assert guard.refusal("x", ipaddress.ip_address("10.0.0.1")) == "private"
    assert guard.refusal("a.web.test", ipaddress.ip_address("10.0.0.1")) is None
    assert AddressGuard(enabled=False).refusal("x", ipaddress.ip_address("10.0.0.1")) is None
    with pytest.raises(BlockedAddress):
        AddressGuard().check_literal("169.254.169.254")
    with pytest.raises(BlockedAddress):
        AddressGuard().check_literal("[::1]")
    AddressGuard().check_literal("example.org")  # names are checked when resolved


def test_parse_resolve():
    assert parse_resolve({"*.Example": "127.0.0.1:8080", "a.test": "[::1]:99", "b.test": "10.0.0.1"}) == [
        ("*.example", "127.0.0.1", 8080), ("a.test", "::1", 99), ("b.test", "10.0.0.1", None)]
    with pytest.raises(ValueError):
        parse_resolve({"x": "not-an-address:80"})


def run(coro):
    return asyncio.run(coro)


def test_resolver_override_is_checked_too():
    resolver = GuardedResolver(AddressGuard(), {"*.example": "127.0.0.1:8080"})
    with pytest.raises(BlockedAddress, match="loopback"):
        run(resolver.resolve("a.example", 80))
    allowed = GuardedResolver(AddressGuard(allow=["127.0.0.0/8"]), {"*.example": "127.0.0.1:8080"})
    [result] = run(allowed.resolve("a.example", 80))
    assert (result["host"], result["port"], result["hostname"]) == ("127.0.0.1", 8080, "a.example")


def test_name_resolving_to_loopback_is_refused():
    # localhost resolves through /etc/hosts: no network needed, and the answer is loopback.
    with pytest.raises(BlockedAddress, match="loopback"):
        run(GuardedResolver(AddressGuard()).resolve("localhost", 80))


@pytest.fixture(scope="module")
def web():
    site = LocalWeb(seed=3, n_hosts=3, pages_per_host=1)
    site.start()
    yield site
    site.stop()


def fetch_all(config: FetchConfig, urls: list[str]):
    async def go():
        transport = HttpTransport(config)
        fetcher = Fetcher(config, transport, len(urls))
        try:
            return await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        finally:
            await transport.close()

    return asyncio.run(go())


def test_live_refusals(web):
    """Guard on, opened only for the local web's names: literal, redirected and non-http targets are refused."""
    config = FetchConfig(allow=["*.web.test"], resolve=web.resolve(), min_delay_s=0, obey_robots=False,
                         total_timeout_s=5)
    urls = [
        web.url(0, "/article/0"),
        web.url(0, "/to-private"),
        web.url(0, "/to-metadata"),
        web.url(0, "/to-loopback"),
        f"http://127.0.0.1:{web.port}/article/0",
        f"http://[::ffff:127.0.0.1]:{web.port}/article/0",
        f"http://localhost:{web.port}/article/0",
        f"http://2130706433:{web.port}/article/0",  # 127.0.0.1 as one number: aiohttp refuses it as bad_url
        f"http://0x7f.1:{web.port}/article/0",  # and in inet_aton's hex shorthand
        web.url(0, "/ftp"),
        "ftp://site000.web.test/file",
        "file:///etc/passwd",
        "javascript:alert(1)",
    ]
    web.reset_stats()
    results = fetch_all(config, urls)
    outcomes = [r.outcome for r in results]
    assert outcomes == ["ok", "blocked_address", "blocked_address", "blocked_address", "blocked_address",
                        "blocked_address", "blocked_address", "bad_url", "blocked_address", "bad_scheme", "bad_scheme", "bad_scheme", "bad_scheme"]
    # The page was fetched from the address the resolver checked.
    assert results[0].exchanges[-1].ip == "127.0.0.1"
    # Nothing was requested except the page and the three redirects that were refused after their hop.
    requested = sorted(p for s in web.stats().values() for p in s.paths)
    assert requested == ["/article/0", "/ftp", "/to-loopback", "/to-metadata", "/to-private"]


def test_guard_on_without_allowlist_refuses_the_local_web(web):
    config = FetchConfig(resolve=web.resolve(), min_delay_s=0, obey_robots=False)
    [result] = fetch_all(config, [web.url(1, "/article/0")])
    assert result.outcome == "blocked_address" and "loopback" in result.error
