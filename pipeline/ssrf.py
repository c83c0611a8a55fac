"""SSRF guard: which addresses the crawler may connect to, and a resolver that connects only to checked ones.

A crawler that follows links from the open web must not be turned against the network it runs in: a Reddit link
(or a redirect from one) to `http://169.254.169.254/` or `http://10.0.0.5/` would otherwise fetch cloud metadata
or internal services. The guard:
- allows only http and https URLs;
- refuses loopback, private, link-local (the cloud metadata address included), shared (100.64/10), multicast,
  reserved and unspecified addresses and their IPv6 equivalents, IPv4-mapped / 6to4 / Teredo / NAT64 addresses by
  the IPv4 address they carry, and anything else Python's `ipaddress` does not call global;
- reads a host that ends in a number the way resolvers and browsers do (`inet_aton`, the WHATWG URL standard's
  IPv4 parser): `2130706434`, `0x7f000002`, `0177.0.0.2`, `127.2`, `127.000.000.002`, `127.0.0.2.` and their
  percent-encoded forms are all 127.0.0.2 and refused as such, whatever the HTTP library would do with them
  (aiohttp before 3.14.1 handed such hosts to `getaddrinfo` past any custom resolver);
- resolves a host name once, in `GuardedResolver`, and hands aiohttp only the addresses that passed, so the
  connection goes to the checked address (no second lookup that DNS rebinding could answer differently); the
  transport checks the peer of every connection again, TLS ones included;
- is applied again by the fetcher to every redirect hop (a literal IP in a URL never reaches a resolver, so the
  fetcher checks it with `check_literal`).

Opening it, for tests, the demo and intranets, takes one of two explicit forms:
- `allow_networks`: addresses or CIDR networks (`127.0.0.0/8`) that may be connected to, whatever name or literal
  leads there: allowing `127.0.0.1/32` also lets `http://localhost/` through, since localhost resolves there;
- `allow_hosts`: host name patterns (`*.web.test`) whose names may resolve to loopback, private or shared
  addresses. Link-local addresses (cloud metadata: 169.254.0.0/16, fe80::/10) and the other metadata addresses
  (`METADATA_NETWORKS`), multicast, reserved and unspecified ones stay refused for them: only an `allow_networks`
  entry that contains such an address opens it.
`resolve` is curl's `--resolve`: `{"*.example": "127.0.0.1:8080"}` sends every matching host to one address (and
port, when given), so one loopback server can stand for many hosts; the most specific matching pattern wins (an
exact name before any wildcard, then the pattern with more literal characters), and the target address is still
checked against the guard.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp.abc import AbstractResolver, ResolveResult

ALLOWED_SCHEMES = ("http", "https")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Where clouds serve instance metadata and credentials: refused even for an allow_hosts name.
METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"))
# What an allow_hosts name may resolve to: the ranges a local or intranet service lives in.
HOST_OPENABLE = ("loopback", "private", "shared")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


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


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host stands for when it is an IP literal in any spelling, None when it is a name.

    IPv4 follows the WHATWG URL standard (what browsers do, and what `inet_aton` accepts): a host whose last label
    is a number is an address of one to four parts, each decimal, octal (leading 0) or hex (0x), the last filling
    the remaining bytes; a trailing dot and percent-encoding are ignored. Raises ValueError for a host that ends in
    a number but is no address (`1.2.3.4.5`, `256.1.1.1`, `08.1`): resolvers disagree on those, so none is fetched.
    """
    host = unquote(host).strip().lower()
    if host.startswith("[") or ":" in host:
        return ipaddress.ip_address(host.strip("[]"))  # IPv6 (ValueError if malformed)
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not (last.isascii() and (last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last))):
        return None  # a name: its addresses are checked when it is resolved
    if len(parts) > 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        raise ValueError(f"{host!r} ends in a number but is not an IPv4 address")
    numbers = [int(p[2:] or "0", 16) if p.startswith("0x") else int(p, 8) if p.startswith("0") else int(p)
               for p in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r}: a part of this IPv4 address is out of range")
    value = numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]))
    return ipaddress.IPv4Address(value)


def _specificity(pattern: str) -> tuple[bool, int, int]:
    """Sort key: exact names first, then patterns with more literal characters, then longer ones."""
    wildcard = any(c in pattern for c in "*?[")
    return wildcard, -len(re.sub(r"[*?]|\[[^]]*\]", "", pattern)), -len(pattern)


def parse_resolve(mapping: dict[str, str]) -> list[tuple[str, str, int | None]]:
    """`{"*.example": "127.0.0.1:8080", "a.test": "[::1]"}` -> [(pattern, address, port or None)], the most
    specific pattern first."""
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
        rules.append((pattern.lower().rstrip("."), addr, port))
    return sorted(rules, key=lambda rule: _specificity(rule[0]))


@dataclass
class AddressGuard:
    """The policy: refuse non-global addresses unless an address entry or (for some classes) a host entry allows."""

    enabled: bool = True
    allow_networks: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.networks = [ipaddress.ip_network(item, strict=False) for item in self.allow_networks]
        self.host_patterns = [item.lower().rstrip(".") for item in self.allow_hosts]

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.host_patterns)

    def _in(self, ip: IPAddress, networks) -> bool:
        embedded = _embedded_ipv4(ip)
        return any(a.version == net.version and a in net for a in (ip, embedded) if a is not None for net in networks)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to `ip` (for `host`) is refused, or None if it is allowed."""
        if not self.enabled or self._in(ip, self.networks):
            return None
        reason = address_class(ip)
        if reason is None:
            return None
        openable = reason.split(" ", 1)[0] in HOST_OPENABLE and not self._in(ip, METADATA_NETWORKS)
        if openable and self.host_allowed(host):
            return None
        return reason

    def check_literal(self, host: str) -> None:
        """Raise BlockedAddress if `host` is an IP literal (any spelling) the guard refuses, ValueError if it ends in
        a number but is no address; names are checked when resolved."""
        ip = literal_address(host)
        if ip is None:
            return
        reason = self.refusal(host, ip)
        if reason:
            spelled = "" if host.strip("[]").lower() == str(ip) else f" (= {ip})"
            raise BlockedAddress(f"{host}{spelled}: {reason} address")


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
