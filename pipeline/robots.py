"""robots.txt as RFC 9309 says, parsed by protego.

Parser: protego (Scrapy's, maintained) rather than the standard library's `urllib.robotparser`, because the latter
applies the first matching rule instead of the longest match, and knows neither `*` nor `$` in paths, both of
which RFC 9309 section 2.2.2 requires; protego does both and reads `Crawl-delay`.

What a fetch of /robots.txt means (RFC 9309 section 2.3.1), decided here once for the live crawl and the replay,
and the outcome a URL of the host gets when the decision stops it:
- 2xx: the rules in the body (only its first `max_bytes`, at least the 500 KiB the RFC asks parsers to read);
  a URL they disallow is `robots_disallowed`;
- 4xx ("unavailable"): everything allowed, except 429: a host asking to be left alone is not crawled at will
  (Google's reading too);
- 5xx or 429, or the server unreachable (timeout, connection error, DNS, a redirect loop): everything
  disallowed for the rest of this crawl task, as the RFC allows; the outcome is `robots_unreachable` and the cause
  (`HTTP 503`, `connect_error: …`) is in the error, so dead hosts can be told from sites' own rules;
- a refusal of the crawler's own (the SSRF guard, a malformed URL, a redirect to a scheme other than http(s), a
  certificate that does not verify): nothing of the host is fetched, and the outcome is the refusal
  (`blocked_address`, `bad_url`, `bad_scheme`, `tls_error`);
- redirects are followed by the fetcher (up to its redirect cap) before a status is known.

A decision is a small JSON object (`to_json` / `from_json`): the crawl checkpoints them, so a resumed crawl applies
the same rules without fetching (and archiving) robots.txt again.
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

REFUSALS = ("blocked_address", "bad_url", "bad_scheme", "tls_error")


@dataclass
class RobotsRules:
    """The rules for one host, and where they came from (`source`: parsed, unavailable, unreachable, refused)."""

    source: str
    parser: Protego | None = None
    detail: str = ""
    text: str | None = None  # the parsed robots.txt (kept for the checkpoint)
    refusal: str | None = None  # for `refused`: the outcome (one of REFUSALS)

    @classmethod
    def from_response(cls, status: int, body: bytes = b"") -> RobotsRules:
        if 200 <= status < 300:
            # utf-8-sig: a byte order mark would otherwise glue itself to the first line and void its group.
            return cls.parsed(body.decode("utf-8-sig", errors="replace"), detail=f"HTTP {status}")
        if 400 <= status < 500 and status != 429:
            return cls("unavailable", detail=f"HTTP {status}")
        return cls("unreachable", detail=f"HTTP {status}")

    @classmethod
    def from_error(cls, outcome: str, detail: str) -> RobotsRules:
        """No robots.txt response: a refusal of ours, or the host could not be reached (`outcome` says which)."""
        if outcome in REFUSALS:
            return cls("refused", detail=f"robots.txt: {detail}"[:300], refusal=outcome)
        return cls("unreachable", detail=f"{outcome}: {detail}"[:300])

    @classmethod
    def parsed(cls, text: str, detail: str = "") -> RobotsRules:
        return cls("parsed", Protego.parse(text), detail=detail, text=text)

    def to_json(self) -> dict:
        return {"source": self.source, "detail": self.detail, "text": self.text, "refusal": self.refusal}

    @classmethod
    def from_json(cls, data: dict) -> RobotsRules:
        if data["source"] == "parsed":
            return cls.parsed(data["text"], detail=data["detail"])
        return cls(data["source"], detail=data["detail"], refusal=data.get("refusal"))

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.source == "unavailable":
            return True
        if self.source == "parsed":
            return self.parser.can_fetch(url, user_agent)
        return False  # unreachable, refused

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        return float(delay) if delay is not None else None

    def outcome(self) -> str:
        """The outcome of a URL this decision stops."""
        return {"unreachable": "robots_unreachable", "refused": self.refusal}.get(self.source, "robots_disallowed")

    def why_disallowed(self) -> str:
        if self.source == "unreachable":
            return f"robots.txt unreachable ({self.detail}): everything disallowed (RFC 9309)"
        if self.source == "refused":
            return self.detail
        return "disallowed by robots.txt"


def robots_url(url: str) -> str:
    """`https://h:8080/a/b?q` -> `https://h:8080/robots.txt`."""
    from yarl import URL

    parsed = URL(url)
    return str(parsed.with_path("/robots.txt").with_query(None).with_fragment(None))


def user_agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against: `webtext-crawler/0.1 (+url)` -> `webtext-crawler`."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0]
