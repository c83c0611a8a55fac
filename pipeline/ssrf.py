"""SSRF guard: which addresses the crawler may connect to, and a resolver that connects only to checked ones.

A crawler that follows links from the open web must not be turned against the network it runs in: a Reddit link
(or a redirect from one) to `http://169.254.169.254/` or `http://10.0.0.5/` would otherwise fetch cloud metadata
or internal services. The guard:
- allows only http and https URLs;
- refuses loopback, private, link-local (the cloud metadata address included), shared (100.64/10), multicast,
  reserved and unspecified addresses and their IPv6 equivalents, IPv4-mapped / 6to4 / Teredo / NAT64 addresses by
  the IPv4 address they carry, and anything else Python's `ipaddress` does not call global;
- resolves a host name once, in `GuardedResolver`, and hands aiohttp only the addresses that passed, so the
  connection goes to the checked address (no second lookup that DNS rebinding could answer differently);
- is applied again by the fetcher to every redirect hop (a literal IP in a URL never reaches a resolver, so the
  fetcher checks it with `check_literal`).

`allow` opens the guard for tests and the demo: networks (`127.0.0.0/8`) or host names (`*.test`). `resolve`
is curl's `--resolve`: `{"*.example": "127.0.0.1:8080"}` sends every matching host to one address and port, so
one loopback server can stand for many hosts; the target address is still checked against the guard.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult

ALLOWED_SCHEMES = ("http", "https")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A host resolved only to addresses the guard refuses (or is such an address)."""


class DNSFailure(OSError):
    """A host name could not be resolved."""


def address_class(ip: IPAddress) -> str | None:
    """Why `ip` must not be connected to (`loopback`, `private`, …), or None for a global unicast address."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = address_class(embedded)
        return f"{reason} (embedded in IPv6)" if reason else None
    for reason, test in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared", isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10")),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if test:
            return reason
    return None if ip.is_global else "not_global"


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client address is where the traffic goes
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def parse_resolve(mapping: dict[str, str]) -> list[tuple[str, str, int | None]]:
    """`{"*.example": "127.0.0.1:8080", "a.test": "[::1]"}` -> [(pattern, address, port or None)]."""
    rules = []
    for pattern, target in mapping.items():
        target = target.strip()
        port: int | None = None
        if target.startswith("["):
            addr, _, rest = target[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif target.count(":") == 1:
            addr, _, port_text = target.partition(":")
            port = int(port_text)
        else:
            addr = target
        ipaddress.ip_address(addr)  # raises ValueError for a target that is not an address
        rules.append((pattern.lower(), addr, port))
    return rules


@dataclass
class AddressGuard:
    """The policy: refuse non-global addresses unless allowed by network or host name."""

    enabled: bool = True
    allow: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.allowed_networks, self.allowed_hosts = [], []
        for item in self.allow:
            try:
                self.allowed_networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.allowed_hosts.append(item.lower())

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to `ip` (for `host`) is refused, or None if it is allowed."""
        if not self.enabled or self.host_allowed(host):
            return None
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return None
        if ip.version == 6 and (embedded := _embedded_ipv4(ip)) is not None:
            if any(net.version == 4 and embedded in net for net in self.allowed_networks):
                return None
        return address_class(ip)

    def check_literal(self, host: str) -> None:
        """Raise BlockedAddress if `host` is an IP literal the guard refuses (names are checked on resolution)."""
        if ":" not in host and not host[-1:].isdigit():
            return  # a name: IPv4 literals end in a digit and IPv6 ones hold a colon
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        reason = self.refusal(host, ip)
        if reason:
            raise BlockedAddress(f"{host}: {reason} address")


class GuardedResolver(AbstractResolver):
    """Resolves through the `resolve` overrides, else getaddrinfo, and returns only addresses the guard allows.

    aiohttp connects to exactly the addresses returned here, so what was checked is what is connected to.
    """

    def __init__(self, guard: AddressGuard, resolve: dict[str, str] | None = None):
        self.guard = guard
        self.rules = parse_resolve(resolve or {})
        self.refused: dict[str, str] = {}  # host -> why its addresses were refused (for the fetch log)
        self.addresses: dict[str, list[str]] = {}  # host -> the checked addresses handed to the connector

    def override(self, host: str) -> tuple[str, int | None] | None:
        host = host.lower().rstrip(".")
        for pattern, addr, port in self.rules:
            if fnmatch.fnmatchcase(host, pattern):
                return addr, port
        return None

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        target = self.override(host)
        if target is not None:
            addr, override_port = target
            candidates = [(addr, override_port or port)]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
            except socket.gaierror as err:
                raise DNSFailure(f"{host}: {err.strerror}") from None
            candidates = [(info[4][0], info[4][1]) for info in infos]
        results: list[ResolveResult] = []
        reasons = []
        for addr, addr_port in dict.fromkeys(candidates):
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
            reason = self.guard.refusal(host, ip)
            if reason:
                reasons.append(f"{addr} ({reason})")
                continue
            results.append(ResolveResult(
                hostname=host, host=str(ip), port=addr_port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            ))
        if not results:
            detail = f"{host} resolves only to refused addresses: {', '.join(reasons)}"
            self.refused[host] = detail
            raise BlockedAddress(detail)
        self.addresses[host] = [r["host"] for r in results]
        return results

    async def close(self) -> None:
        pass
