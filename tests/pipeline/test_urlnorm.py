import pytest

from pipeline.urlnorm import BadURL, TrackingParams, normalize, normalize_url

CASES = [
    # case of scheme and host, not of the path
    ("HTTP://Example.COM/Path", "http://example.com/Path"),
    # default ports go, others stay
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com:80/a", "https://example.com:80/a"),
    # www. goes, but not when it is the whole registered name
    ("http://www.example.com/a", "http://example.com/a"),
    ("http://www.com/a", "http://www.com/a"),
    ("http://www2.example.com/a", "http://www2.example.com/a"),
    # trailing slash, empty path, trailing dot on the host
    ("http://example.com/a/", "http://example.com/a"),
    ("http://example.com", "http://example.com/"),
    ("http://example.com/", "http://example.com/"),
    ("http://example.com./a", "http://example.com/a"),
    # fragments
    ("http://example.com/a#section-2", "http://example.com/a"),
    # tracking parameters, by name and by prefix, any case; others kept and sorted by key
    ("http://example.com/a?utm_source=reddit&utm_medium=social", "http://example.com/a"),
    ("http://example.com/a?id=3&UTM_Campaign=x&fbclid=abc", "http://example.com/a?id=3"),
    ("http://example.com/a?b=2&a=1&gclid=z", "http://example.com/a?a=1&b=2"),
    ("http://example.com/a?page=2&page=1", "http://example.com/a?page=2&page=1"),
    # percent-escapes: unreserved ones decoded, the rest upper-cased
    ("http://example.com/%7euser/%2fx%3a", "http://example.com/~user/%2Fx%3A"),
    # IPv6 literal and port
    ("http://[2001:DB8::1]:8080/a", "http://[2001:db8::1]:8080/a"),
    # user info is kept (it selects content)
    ("http://user:pw@Example.com/a", "http://user:pw@example.com/a"),
]


@pytest.mark.parametrize("url,expected", CASES)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected
    assert normalize_url(expected) == expected  # idempotent


def test_variants_of_one_page_share_one_key():
    variants = [
        "http://www.example.com/story/1",
        "HTTP://EXAMPLE.com:80/story/1/",
        "http://example.com/story/1#comments",
        "http://example.com/story/1?utm_source=reddit&utm_campaign=x",
    ]
    assert len({normalize_url(v) for v in variants}) == 1


def test_normalize_returns_host_and_path():
    norm = normalize("https://WWW.News.example.org/a/b.HTML?x=1")
    assert norm.host == "news.example.org"
    assert norm.path == "/a/b.HTML"


@pytest.mark.parametrize("url", ["not a url", "http://", "/relative/path", "http://example.com:99999/"])
def test_bad_urls(url):
    with pytest.raises(BadURL):
        normalize_url(url)


def test_tracking_params_configurable():
    tracking = TrackingParams(["ref", "session*"])
    assert normalize_url("http://e.com/?ref=x&sessionid=3&utm_source=y", tracking) == "http://e.com/?utm_source=y"


def test_fast_path_parses_like_urlsplit():
    import random

    from pipeline.urlnorm import _parse_any, _parse_simple

    rng = random.Random(0)
    pieces = ["http://", "HTTPS://", "http://www.", "https://news."]
    hosts = ["Example.com", "a-b.example.co.uk", "x_y.example.org.", "127.0.0.1", "host"]
    ports = ["", ":80", ":443", ":8080", ":65535", ":65536", ":0"]
    paths = ["", "/", "/a/b/", "/a%7eb", "/a b", "/caf%C3%A9", "/p;x=1", "/a//b"]
    queries = ["", "?", "?a=1&b=2", "?utm_source=x&id=3", "?q=a+b&q=c", "?x=%2f"]
    frags = ["", "#", "#top", "#a?b"]
    seen_fast = 0
    for _ in range(3000):
        url = rng.choice(pieces) + rng.choice(hosts) + rng.choice(ports) + rng.choice(paths) + \
            rng.choice(queries) + rng.choice(frags)
        fast = _parse_simple(url)
        if fast is None:
            continue
        seen_fast += 1
        assert fast == _parse_any(url), url
    assert seen_fast > 1000
