"""URL normalisation: one key per page, so that links to the same page written differently count once.

`normalize_url` lower-cases scheme and host, drops default ports, a leading `www.`, a trailing dot on the host,
the fragment, a trailing slash on the path and tracking parameters (`utm_*`, `fbclid`, ...), upper-cases
percent-escapes and decodes the ones that stand for unreserved characters, and sorts the query by key.
It keeps what can change the page: the scheme, other query parameters, the path's case.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit, urlunsplit

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
        return lowered in self.exact or (bool(self.prefixes) and lowered.startswith(self.prefixes))


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


def normalize(url: str, tracking: TrackingParams | None = None, strip_www: bool = True) -> NormalizedURL:
    """`normalize_url` with the normalised host and path alongside."""
    parts = split_url(url)
    scheme = parts.scheme.lower()
    host = normalize_host(parts.hostname, strip_www)
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    port = parts.port
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = _normalize_escapes(parts.path) or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    query = parts.query
    if query:
        tracking = tracking or TrackingParams()
        pairs = [p for p in query.split("&") if p]
        kept = [p for p in pairs if not tracking(p.partition("=")[0])]
        query = "&".join(sorted((_normalize_escapes(p) for p in kept), key=lambda p: p.partition("=")[0]))
    return NormalizedURL(urlunsplit((scheme, netloc, path, query, "")), host, path)
