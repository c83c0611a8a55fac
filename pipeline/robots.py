"""robots.txt as RFC 9309 says, parsed by protego.

Parser: protego (Scrapy's, maintained) rather than the standard library's `urllib.robotparser`, because the latter
applies the first matching rule instead of the longest match, and knows neither `*` nor `$` in paths, both of
which RFC 9309 section 2.2.2 requires; protego does both and reads `Crawl-delay`.

What a fetch of /robots.txt means (RFC 9309 section 2.3.1), decided here once for the live crawl and the replay:
- 2xx: the rules in the body (only its first `max_bytes`, at least the 500 KiB the RFC asks parsers to read);
- 4xx ("unavailable"): everything allowed;
- 5xx, or the server unreachable (timeout, connection error, DNS): everything disallowed, for the rest of this
  crawl task ("unreachable": the RFC allows assuming complete disallow);
- redirects are followed by the fetcher (up to its redirect cap) before a status is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego


@dataclass
class RobotsRules:
    """The rules for one host, and where they came from (`source`: parsed, unavailable, unreachable)."""

    source: str
    parser: Protego | None = None
    detail: str = ""

    @classmethod
    def from_response(cls, status: int | None, body: bytes = b"", detail: str = "") -> RobotsRules:
        if status is None:
            return cls("unreachable", detail=detail)
        if 200 <= status < 300:
            text = body.decode("utf-8", errors="replace")
            return cls("parsed", Protego.parse(text), detail=f"HTTP {status}")
        if 400 <= status < 500:
            return cls("unavailable", detail=f"HTTP {status}")
        return cls("unreachable", detail=f"HTTP {status}")

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.source == "unavailable":
            return True
        if self.source == "unreachable":
            return False
        return self.parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        return float(delay) if delay is not None else None

    def why_disallowed(self) -> str:
        if self.source == "unreachable":
            return f"robots.txt unreachable ({self.detail}): disallowed"
        return "disallowed by robots.txt"


def robots_url(url: str) -> str:
    """`https://h:8080/a/b?q` -> `https://h:8080/robots.txt`."""
    from yarl import URL

    parsed = URL(url)
    return str(parsed.with_path("/robots.txt").with_query(None).with_fragment(None))


def user_agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against: `webtext-crawler/0.1 (+url)` -> `webtext-crawler`."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0]
