"""The local faulty web: deterministic from its seed, serves hosts by the Host header, records what it saw."""

from __future__ import annotations

import gzip
import http.client

import pytest

from jobs.fixtures.localweb import FAULT_KINDS, LocalWeb
from tests.helpers import REPO


@pytest.fixture(scope="module")
def web():
    site = LocalWeb(seed=7, n_hosts=8, pages_per_host=3, crawl_delay=0.25, hang_s=2)
    site.start()
    yield site
    site.stop()


def get(web: LocalWeb, host: str, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
    conn.request("GET", path, headers={"Host": f"{host}:{web.port}", **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_same_seed_same_web_other_seed_other_text():
    a, b, c = LocalWeb(seed=1), LocalWeb(seed=1), LocalWeb(seed=2)
    assert [(p.url, p.kind, p.expected, p.text) for p in a.pages()] == [(p.url, p.kind, p.expected, p.text) for p in b.pages()]
    assert a.article("site000.web.test", 0) != c.article("site000.web.test", 0)
    assert a.article_html("site001.web.test", 2) == b.article_html("site001.web.test", 2)


def test_pages_cover_hosts_and_kinds():
    site = LocalWeb(seed=0, n_hosts=24, pages_per_host=10, faults_per_host=3)
    pages = site.pages()
    assert len({p.host for p in pages}) == 24
    assert sum(p.kind == "article" for p in pages) == 240
    assert len({p.url for p in pages}) == len(pages)
    corpus_kinds = {"near_duplicate", "stub", "foreign"}
    assert {p.kind for p in pages if p.kind not in ("article", "private")} <= {k for k, _, _ in FAULT_KINDS} | corpus_kinds
    assert sum(p.kind == "near_duplicate" for p in pages) == 24
    assert sum(p.kind in ("stub", "foreign") for p in pages) == 24
    # Families: an article and the near duplicate of it on the next host; faults without a body have none.
    families = {p.family for p in pages if p.kind == "article"}
    assert all(p.family in families for p in pages if p.kind == "near_duplicate")
    assert all(p.family is None for p in pages if p.kind in ("not_found", "hang", "gzip_bomb", "pdf"))
    # Planted text is unique per article.
    markers = [p.text.rsplit("\n\n", 1)[1] for p in pages if p.kind == "article"]
    assert len(set(markers)) == len(markers)


def test_article_has_boilerplate_around_the_text(web):
    resp, body = get(web, "site001.web.test", "/article/1")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/html; charset=utf-8"
    page = body.decode()
    title, text = web.article("site001.web.test", 1)
    for part in ("cookie-banner", "<nav", "<aside", "<footer", 'id="comments"'):
        assert part in page
    assert text.split("\n\n")[0][:60] in page


def test_robots_and_host_variants(web):
    resp, body = get(web, "site000.web.test", "/robots.txt")
    assert resp.status == 200 and b"Disallow: /private/" in body and b"Crawl-delay: 0.25" in body
    assert get(web, "site005.web.test", "/robots.txt")[0].status == 503
    assert get(web, "site006.web.test", "/robots.txt")[0].status == 404
    assert get(web, "unknown.example", "/article/0")[0].status == 421


def test_faults_as_served(web):
    resp, body = get(web, "site002.web.test", "/bomb/0", {"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip" and len(body) < 1 << 20
    assert len(gzip.decompress(body)) == 100 << 20
    resp, _ = get(web, "site002.web.test", "/busy/3")
    assert resp.status == 503 and resp.getheader("Retry-After") == "1"
    assert get(web, "site002.web.test", "/busy/3")[0].status == 200  # then it recovers
    resp, _ = get(web, "site002.web.test", "/xredirect/1")
    assert resp.status == 302 and resp.getheader("Location") == web.url(3, "/article/1")
    resp, body = get(web, "site002.web.test", "/binary/0")
    assert resp.getheader("Content-Type") == "text/html" and body.startswith(b"\x89PNG")
    resp, body = get(web, "site002.web.test", "/latin1/0")
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")  # declared utf-8, is cp1252
    with pytest.raises(http.client.IncompleteRead):
        get(web, "site002.web.test", "/reset/0")


def test_records_concurrency_and_arrivals(web):
    import concurrent.futures

    web.reset_stats()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: get(web, "site004.web.test", "/slow/0"), range(4)))
    stats = web.stats()["site004.web.test"]
    assert stats.paths == ["/slow/0"] * 4
    assert stats.max_in_flight >= 2  # four clients at once, each held 0.5 s
    assert web.max_in_flight >= 2
    # Responses are recorded when finished, with their status; a dropped connection has none.
    assert [(path, status) for _, path, status in stats.responses] == [("/slow/0", 200)] * 4
    assert min(end for end, _, _ in stats.responses) - min(start for start, _ in stats.requests) >= web.slow_s - 0.01
    web.reset_stats()
    get(web, "site004.web.test", "/redirect/1")
    with pytest.raises(http.client.RemoteDisconnected):
        get(web, "site004.web.test", "/drop/0")
    assert [(p, s) for _, p, s in web.stats()["site004.web.test"].responses] == [("/redirect/1", 301)]


def test_runs_as_a_module():
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "jobs.fixtures.localweb", "--seed", "4", "--hosts", "3", "--pages", "2",
                             "--seconds", "20"], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        info = json.loads(proc.stdout.readline())
        site = LocalWeb(seed=4, n_hosts=3, pages_per_host=2)
        site.port = info["port"]
        assert info["resolve"] == {"*.web.test": f"127.0.0.1:{info['port']}"} and info["pages"] == len(site.pages())
        resp, body = get(site, "site001.web.test", "/article/1")
        assert resp.status == 200 and body.decode() == site.article_html("site001.web.test", 1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_near_duplicates_stubs_and_foreign_pages(web):
    """What the corpus stages after the crawl are tested with: each page is served, and is what it claims to be."""
    from jobs.fixtures.dupgen import shingle_set
    from pipeline.langid import detect_language
    from pipeline.tokenizer import gpt2_encoding

    for k in range(3):
        host = web.host_name(k + 1)
        _, source = web.article(web.host_name(k), k)
        title, text = web.syndicated(host, k)
        jaccard = len(shingle_set(source) & shingle_set(text)) / len(shingle_set(source) | shingle_set(text))
        assert 0.6 < jaccard < 0.95, jaccard  # a near duplicate at the dedup threshold of 0.5, not an exact one
        resp, body = get(web, host, f"/syndicated/{k}")
        assert resp.status == 200 and text.split("\n\n")[-1] in body.decode()
    title, text = web.stub("site001.web.test", 0)
    assert 30 < len(gpt2_encoding().encode_ordinary(text)) < 128
    assert text[:40] in get(web, "site001.web.test", "/stub/0")[1].decode()
    title, text = web.foreign("site000.web.test", 0)
    assert detect_language(text)[0] == "de"
    assert text[:40] in get(web, "site000.web.test", "/foreign/0")[1].decode()
