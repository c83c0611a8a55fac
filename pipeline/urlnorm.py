"""URL normalisation: one key per page, so that links to the same page written differently count once.

`normalize_url` lower-cases scheme and host, drops default ports, a leading `www.`, a trailing dot on the host,
the fragment, a trailing slash on the path and tracking parameters (`utm_*`, `fbclid`, ...), upper-cases
percent-escapes and decodes the ones that stand for unreserved characters, and sorts the query by key.
It keeps what can change the page: the scheme, other query parameters, the path's case.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Exact names, plus prefixes ending in "_" or "*" (`utm_*`). Sources: common analytics and ad-click parameters.
DEFAULT_TRACKING_PARAMS = (
    "utm_*",
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "yclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ref_src",
    "ref_url",
    "spm",
    "vero_id",
    "oly_anon_id",
    "oly_enc_id",
    "rb_clickid",
    "s_cid",
    "wt_mc",
    "wt.mc_id",
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


class BadURL(ValueError):
    """The string is not an absolute http(s)-style URL with a host."""


class TrackingParams:
    """Matches query parameter names against exact names and `prefix*` patterns, case-insensitively."""

    def __init__(self, patterns: tuple[str, ...] | list[str] = DEFAULT_TRACKING_PARAMS):
        self.exact = frozenset(p.lower() for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1].lower() for p in patterns if p.endswith("*"))

    def __call__(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self.exact or lowered.startswith(self.prefixes)


def _normalize_escapes(text: str) -> str:
    if "%" not in text:
        return text

    def fix(m: re.Match) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    return _PERCENT.sub(fix, text)


def split_url(url: str) -> SplitResult:
    """Parse an absolute URL; BadURL if it has no scheme or host, or an invalid port."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as err:
        raise BadURL(str(err)) from None
    if not parts.scheme or not parts.hostname:
        raise BadURL("no scheme or host")
    return parts


def normalize_host(hostname: str, strip_www: bool = True) -> str:
    host = hostname.lower().rstrip(".")
    if strip_www and host.startswith("www.") and host.count(".") >= 2:
        host = host[4:]
    return host


class NormalizedURL(NamedTuple):
    url: str  # the normalised URL
    host: str  # its host, normalised
    path: str  # its path, normalised


def normalize_url(url: str, tracking: TrackingParams | None = None, strip_www: bool = True) -> str:
    """The normalised form of an absolute URL (see the module docstring); BadURL if it cannot be parsed."""
    return normalize(url, tracking, strip_www).url


# The shape of nearly every real link: scheme, plain host, optional port, path, query, fragment. Anything else
# (user info, IPv6, escaped hosts, whitespace) takes urlsplit; both give the same result (tested).
_SIMPLE_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([A-Za-z0-9._-]+)(?::([0-9]{1,5}))?(/[^?#\s]*)?(?:\?([^#\s]*))?(?:#.*)?\Z",
                         re.S)
_DEFAULT_TRACKING = TrackingParams()


def _parse_simple(url: str) -> tuple | None:
    """(scheme, hostname, port, path, query, userinfo) of a URL of the common shape, or None."""
    simple = _SIMPLE_URL.match(url)
    if simple is None or (simple.group(3) is not None and int(simple.group(3)) > 65535):
        return None
    scheme, hostname, port, path, query = simple.groups()
    return scheme.lower(), hostname.lower(), None if port is None else int(port), path or "", query or "", None


def _parse_any(url: str) -> tuple:
    """The same fields through urlsplit, for every URL."""
    parts = split_url(url)
    userinfo = None
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
    return parts.scheme, parts.hostname, parts.port, parts.path, parts.query, userinfo


def normalize(url: str, tracking: TrackingParams | None = None, strip_www: bool = True) -> NormalizedURL:
    """`normalize_url` with the normalised host and path alongside."""
    url = url.strip()
    scheme, hostname, port, path, query, userinfo = _parse_simple(url) or _parse_any(url)
    scheme = scheme.lower()
    host = normalize_host(hostname, strip_www)
    if not host:
        raise BadURL("empty host")
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    if userinfo is not None:
        netloc = f"{userinfo}@{netloc}"
    path = _normalize_escapes(path or "/")
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    if query:
        tracking = tracking or _DEFAULT_TRACKING
        kept = [p for p in query.split("&") if p and not tracking(p.partition("=")[0])]
        if len(kept) > 1:
            kept.sort(key=lambda p: p.partition("=")[0])
        query = "&".join(kept)
        if "%" in query:
            query = _normalize_escapes(query)
    return NormalizedURL(f"{scheme}://{netloc}{path}{'?' + query if query else ''}", host, path)
