"""HTTPS against a local TLS web: a CA made here and passed in config, certificates verified by default, a clear
`tls_error` for a bad certificate, SNI per host, http -> https redirects, the address guard on TLS connections,
and WARC records of HTTPS responses that replay."""

from __future__ import annotations

import asyncio
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from warcio.archiveiterator import ArchiveIterator

from jobs.cli import main as cli
from jobs.fixtures.localweb import LocalWeb
from pipeline.fetch import FetchConfig, FetchError, HttpTransport, fetch_urls

GOOD, WRONG_NAME, UNTRUSTED = 0, 2, 3  # site indexes: a valid certificate, one for another name, one from another CA


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def server_context(directory: Path, ca, name: str) -> ssl.SSLContext:
    """A server context holding a certificate for `name`, signed by `ca`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture(scope="module")
def tls_web(tmp_path_factory):
    """Five sites over http and https. The server picks each site's certificate by the SNI name the client sent
    (and records the names): site002 gets a certificate for another name, site003 one from a CA nobody trusts."""
    directory = tmp_path_factory.mktemp("tls")
    ca, rogue = make_ca("webtext test CA"), make_ca("rogue CA")
    (directory / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    site = LocalWeb(seed=9, n_hosts=5, pages_per_host=2)
    contexts = {}
    for i, host in enumerate(site.hosts):
        name = "other.example" if i == WRONG_NAME else host
        contexts[host] = server_context(directory, rogue if i == UNTRUSTED else ca, name)
    default = server_context(directory, ca, "default.invalid")
    seen_sni: list[str | None] = []

    def pick(connection, server_name, _context):
        seen_sni.append(server_name)
        if server_name in contexts:
            connection.context = contexts[server_name]

    default.sni_callback = pick
    site.tls = default
    site.start()
    site.seen_sni, site.ca_file = seen_sni, str(directory / "ca.pem")
    yield site
    site.stop()


def config(web: LocalWeb, **extra) -> FetchConfig:
    settings = dict(allow_hosts=["*.web.test"], resolve={"*.web.test": "127.0.0.1"}, tls_ca_file=web.ca_file,
                    min_delay_s=0, total_timeout_s=5, connect_timeout_s=2, max_attempts=1)
    return FetchConfig(**{**settings, **extra})


def test_certificates_verified_by_default_with_sni_per_host(tls_web):
    urls = [tls_web.url(i, "/article/1", scheme="https") for i in (GOOD, 1, WRONG_NAME, UNTRUSTED)]
    tls_web.seen_sni.clear()
    good, other, wrong_name, untrusted = fetch_urls(config(tls_web), urls)
    assert (good.outcome, other.outcome) == ("ok", "ok")
    assert good.exchanges[-1].url == urls[0] and tls_web.article(tls_web.host_name(GOOD), 1)[1].split("\n\n")[0][
        :80].encode() in good.exchanges[-1].body
    # Each connection named its host, though all of them went to 127.0.0.1: the server could pick its certificate.
    assert set(tls_web.seen_sni) == {tls_web.host_name(i) for i in (GOOD, 1, WRONG_NAME, UNTRUSTED)}
    for bad in (wrong_name, untrusted):
        assert bad.outcome == "tls_error", bad.error
        assert "certificate" in bad.error.lower()
    assert "other.example" in wrong_name.error or "match" in wrong_name.error.lower()
    assert not any(p for s in (tls_web.stats().get(tls_web.host_name(i)) for i in (WRONG_NAME, UNTRUSTED)) if s
                   for p in s.paths)  # nothing was sent over a connection that failed verification

    # Without the CA in config, the system's trust store decides: our test CA is not in it.
    [unknown] = fetch_urls(config(tls_web, tls_ca_file=None), urls[:1])
    assert unknown.outcome == "tls_error" and "certificate verify failed" in unknown.error
    # Switched off on purpose, the bad certificates are accepted.
    assert [r.outcome for r in fetch_urls(config(tls_web, tls_verify=False), urls[2:])] == ["ok", "ok"]


def test_http_to_https_redirect_with_robots_over_https(tls_web):
    tls_web.reset_stats()
    [moved] = fetch_urls(config(tls_web), [tls_web.url(1, "/to-https/0")])
    assert moved.outcome == "ok" and moved.final_url == tls_web.url(1, "/article/0", scheme="https")
    assert [e.status for e in moved.exchanges] == [301, 200]
    # robots.txt asked once per origin (http and https are two), then the pages; nothing private.
    assert tls_web.stats()[tls_web.host_name(1)].paths == ["/robots.txt", "/to-https/0", "/robots.txt", "/article/0"]
    [private] = fetch_urls(config(tls_web), [tls_web.url(1, "/private/0", scheme="https")])
    assert private.outcome == "robots_disallowed"


def test_the_address_guard_holds_on_tls_connections(tls_web):
    """No allowlist: an https URL whose name resolves to loopback, an https IP literal and an https page that
    redirects to the metadata address are refused; and the transport checks the peer of a TLS connection itself
    (an IP literal handed straight to it, verification off, is refused after connecting, before any byte of the
    response is used)."""
    guarded = config(tls_web, allow_hosts=[])
    by_name, literal, spelled = fetch_urls(guarded, [
        tls_web.url(GOOD, "/article/0", scheme="https"), f"https://127.0.0.1:{tls_web.tls_port}/article/0",
        f"https://2130706433:{tls_web.tls_port}/article/0"])
    assert [r.outcome for r in (by_name, literal, spelled)] == ["blocked_address"] * 3
    [to_metadata] = fetch_urls(config(tls_web, obey_robots=False),
                              [tls_web.url(GOOD, "/to-metadata", scheme="https")])
    assert to_metadata.outcome == "blocked_address" and "169.254.169.254" in to_metadata.error

    async def direct():
        transport = HttpTransport(config(tls_web, allow_hosts=[], tls_verify=False))
        try:
            return await transport.get(f"https://127.0.0.1:{tls_web.tls_port}/article/0", 1 << 20, 1 << 20)
        finally:
            await transport.close()

    with pytest.raises(FetchError) as err:
        asyncio.run(direct())
    assert err.value.outcome == "blocked_address" and "connected to 127.0.0.1" in err.value.detail


def test_warc_records_of_https_responses_replay(tls_web, tmp_path):
    """The crawl stage over https: the WARC holds the https responses (robots.txt included), byte-exact, with the
    address connected to; replayed with no network they give the same outcomes."""
    urls = [tls_web.url(i, f"/article/{k}", scheme="https") for i in (GOOD, 1) for k in range(2)]
    urls += [tls_web.url(4, "/to-https/1"), tls_web.url(WRONG_NAME, "/article/0", scheme="https")]
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"url": urls}), tmp_path / "urls" / "part-00000.parquet")
    settings = {"allow_hosts": '["*.web.test"]', "resolve": '{"*.web.test": "127.0.0.1"}',
                "tls_ca_file": tls_web.ca_file, "min_delay_s": "0", "max_attempts": "1", "num_buckets": "1"}
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert cli(["crawl", "--urls", str(tmp_path / "urls"), "--out", str(tmp_path / "live"), "--executor", "local",
                *args]) == 0
    log = {r["url"]: r for r in pq.read_table(tmp_path / "live" / "crawl" / "part-00000.parquet").to_pylist()}
    assert [log[u]["outcome"] for u in urls] == ["ok"] * 5 + ["tls_error"]
    with open(tmp_path / "live" / "crawl" / "part-00000.warc.gz", "rb") as f:
        responses = {r.rec_headers.get_header("WARC-Target-URI"): (r.rec_headers.get_header("WARC-IP-Address"),
                                                                   r.content_stream().read())
                     for r in ArchiveIterator(f, check_digests="raise") if r.rec_type == "response"}
    for i in (GOOD, 1):
        assert f"https://{tls_web.host_name(i)}:{tls_web.tls_port}/robots.txt" in responses
    for url in urls[:4]:
        ip, payload = responses[url]
        host = url.split("/")[2].split(":")[0]
        assert ip == "127.0.0.1" and payload == tls_web.article_html(host, int(url.rsplit("/", 1)[1])).encode()
    moved = log[urls[4]]["final_url"]
    assert moved == tls_web.url(4, "/article/1", scheme="https") and moved in responses

    assert cli(["crawl", "--urls", str(tmp_path / "urls"), "--out", str(tmp_path / "replay"), "--executor", "local",
                "--from-warc", str(tmp_path / "live" / "crawl"), *args,
                "--set", 'resolve={"*.web.test": "127.0.0.1:9"}']) == 0
    replayed = {r["url"]: r for r in pq.read_table(tmp_path / "replay" / "crawl" / "part-00000.parquet").to_pylist()}
    assert [replayed[u]["outcome"] for u in urls[:5]] == ["ok"] * 5
    assert replayed[urls[5]]["outcome"] == "not_in_warc"


def test_politeness_is_per_host_across_schemes_and_ports(tls_web):
    """http and https of one host name are one server to be polite to: an http->https redirect and a mix of
    http and https URLs of the host keep its delay between every two requests, as the server sees them (robots.txt
    is still one per origin)."""
    delay = 0.4
    urls = [tls_web.url(GOOD, "/to-https/1"), tls_web.url(GOOD, "/article/0"),
            tls_web.url(GOOD, "/article/1", scheme="https")]
    tls_web.reset_stats()
    results = fetch_urls(config(tls_web, min_delay_s=delay), urls)
    assert [r.outcome for r in results] == ["ok"] * 3, [(r.outcome, r.error) for r in results]
    seen = tls_web.stats()[tls_web.host_name(GOOD)]
    assert seen.paths.count("/robots.txt") == 2
    starts = [t for t, _ in seen.requests]
    assert min(b - a for a, b in zip(starts, starts[1:])) >= delay - 0.05, seen.requests
    assert seen.min_gap_after_end() >= delay
