"""gnsq's Consumer and LookupdClient against a server with access control
and HTTPS.

gnsq 1.0.2 cannot send a secret to the lookupd: its HTTPClient._request
(gnsq/httpclient.py) always passes its own `headers` (Accept, User-Agent),
which replace any pool headers urllib3 was given, and LookupdClient.lookup
adds none. So it reads from inside `--read-allow` and is refused by an auth
server it cannot answer.

An `https://` lookupd address makes HTTPClient.from_url pick urllib3's
HTTPSConnectionPool. The Consumer builds its clients with from_url(address)
and nothing else (gnsq/util.py, parse_lookupds), so it trusts the system's
CAs (SSL_CERT_FILE, read at each new connection) and presents no client
certificate; a LookupdClient made directly takes urllib3's `ca_certs`,
`cert_file` and `key_file`."""

import gevent
import pytest

import gnsq
from gnsq.errors import NSQHttpError

from harness import (
    ALLOWED,
    DEADLINE,
    HOST,
    NOT_ALLOWED,
    Scene,
    handshake_failed_twice,
    handshake_failures,
    pki,
    refused_twice,
    tls_args,
    wait_until,
)

TOPIC = "interop_gnsq_access"
CHANNEL = "interop_ch"


class WatchedConsumer:
    """A started Consumer whose lookups are observed: `outcomes` holds, for
    each, "ok" or the exception LookupdClient.lookup raised (the Consumer
    itself only logs it)."""

    def __init__(self, address):
        self.outcomes = []
        self.consumer = gnsq.Consumer(
            TOPIC,
            CHANNEL,
            lookupd_http_addresses=[address],
            lookupd_poll_interval=0.2,
            lookupd_poll_jitter=0.0,
            timeout=5.0,
        )
        for client in self.consumer.lookupds:
            client.lookup = self._watch(client.lookup)
        self.consumer.on_message.connect(lambda consumer, message: None, weak=False)
        self.consumer.start(block=False)

    def _watch(self, lookup):
        def watched(topic):
            try:
                result = lookup(topic)
            except Exception as e:
                self.outcomes.append(e)
                raise
            self.outcomes.append("ok")
            return result

        return watched

    def count(self, kind):
        return sum(isinstance(o, kind) for o in self.outcomes)

    def close(self):
        self.consumer.close()
        self.consumer.join(timeout=5)


def discovers(setup, address):
    watched = WatchedConsumer(address)
    try:
        magic = setup.fake.wait_for_connection(DEADLINE, idle=gevent.sleep)
        assert magic == b"  V2"
        return watched
    finally:
        watched.close()


def never_connects(setup, address, refused_enough):
    watched = WatchedConsumer(address)
    try:
        wait_until(
            lambda: refused_enough(watched), DEADLINE, "two refused gnsq lookups", gevent.sleep
        )
        assert setup.fake.magics == []
        return watched
    finally:
        watched.close()


def test_consumer_inside_read_allow_discovers():
    with Scene(TOPIC, CHANNEL, *ALLOWED) as setup:
        discovers(setup, setup.lookupd.http_url)
        assert setup.auth.requests == []


def test_consumer_without_secret_is_refused():
    # An auth server, and an allow-list (TEST-NET-1) that does not cover
    # 127.0.0.1: gnsq has no secret to send, every lookup is a 401.
    with Scene(TOPIC, CHANNEL, *NOT_ALLOWED) as setup:
        lookupd = setup.lookupd
        refused_enough = refused_twice(lookupd, "no_credentials", NSQHttpError)
        watched = never_connects(setup, lookupd.http_url, refused_enough)
        assert all(str(e) == "http error <401>" for e in watched.outcomes)
        # gnsq's own client gets the same answer.
        client = gnsq.LookupdClient.from_url(lookupd.http_url)
        with pytest.raises(NSQHttpError, match=r"^http error <401>$"):
            client.lookup(TOPIC)
        assert setup.auth.requests == []


def test_consumer_over_https_with_the_ca_trusted_discovers(monkeypatch):
    certs = pki()
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    with Scene(TOPIC, CHANNEL, *ALLOWED, *tls_args(certs)) as setup:
        discovers(setup, setup.lookupd.https_url)


def test_consumer_over_https_without_secret_is_refused(monkeypatch):
    certs = pki()
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    with Scene(TOPIC, CHANNEL, *NOT_ALLOWED, *tls_args(certs)) as setup:
        lookupd = setup.lookupd
        refused_enough = refused_twice(lookupd, "no_credentials", NSQHttpError)
        never_connects(setup, lookupd.https_url, refused_enough)


def test_consumer_over_https_with_an_untrusted_ca_never_connects(monkeypatch):
    certs = pki()
    monkeypatch.setenv("SSL_CERT_FILE", certs.other_ca)
    with Scene(TOPIC, CHANNEL, *tls_args(certs)) as setup:
        lookupd = setup.lookupd
        # urllib3 (ssl) refuses the server's certificate with an alert,
        # which the server counts.
        watched = never_connects(
            setup, lookupd.https_url, handshake_failed_twice(lookupd, "alert")
        )
        assert all("CERTIFICATE_VERIFY_FAILED" in str(e) for e in watched.outcomes)


def test_client_certificates_lookupd_client_yes_consumer_no(monkeypatch):
    certs = pki()
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    with Scene(TOPIC, CHANNEL, *ALLOWED, *tls_args(certs, "require-verify")) as setup:
        lookupd = setup.lookupd
        # The Consumer cannot be given a certificate: every handshake fails.
        never_connects(
            setup, lookupd.https_url, handshake_failed_twice(lookupd, "no_client_certificate")
        )
        # A LookupdClient made with urllib3's options presents one.
        client = gnsq.LookupdClient.from_url(
            lookupd.https_url,
            ca_certs=certs.ca,
            cert_file=certs.client.cert,
            key_file=certs.client.key,
        )
        producers = client.lookup(TOPIC)["producers"]
        assert [(p["broadcast_address"], p["tcp_port"]) for p in producers] == [
            (HOST, setup.fake.port)
        ]
        # One signed by another CA is refused.
        stranger = gnsq.LookupdClient.from_url(
            lookupd.https_url,
            ca_certs=certs.ca,
            cert_file=certs.other_client.cert,
            key_file=certs.other_client.key,
            retries=False,
        )
        with pytest.raises(Exception):
            stranger.lookup(TOPIC)
        wait_until(
            lambda: handshake_failures(lookupd, "bad_client_certificate") >= 1,
            5,
            "the stranger's handshake counted",
        )


def test_consumer_does_not_follow_tls_required():
    # The plain port answers 403 TLS_REQUIRED with the HTTPS port; NSQ's Go
    # HTTP client follows that, gnsq does not.
    certs = pki()
    with Scene(TOPIC, CHANNEL, *tls_args(certs), "--tls-required") as setup:
        watched = never_connects(
            setup, setup.lookupd.http_url, lambda w: w.count(NSQHttpError) >= 2
        )
        assert all(str(e) == "http error <403>" for e in watched.outcomes)
