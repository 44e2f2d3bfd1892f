"""pynsq's Reader against a server with access control and HTTPS.

pynsq 0.9.1 sends nothing but `Accept` to the lookupd (nsq/reader.py's
query_lookupd: no header, no credential; its `auth_secret` is sent to nsqd
only, in the AUTH command), so it reads from inside `--read-allow` and is
refused by an auth server it cannot answer.

It keeps the scheme of its lookupd address, so `https://` works, through
tornado's shared AsyncHTTPClient (nsq/reader.py: `AsyncHTTPClient()`, no TLS
setting of its own). That client trusts what tornado's request defaults say
(`AsyncHTTPClient.configure(None, defaults=...)`: `ca_certs`, and
`client_cert`/`client_key` for a client certificate) or else the system's
CAs (SSL_CERT_FILE, read once per process at the first https request)."""

import asyncio
import contextlib
import ssl
import time

import nsq
from tornado.httpclient import AsyncHTTPClient

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
)

TOPIC = "interop_pynsq_access"
CHANNEL = "interop_ch"


class WatchedReader:
    """A Reader whose discovery is observed: the producers it connects to,
    and the outcome of each of its lookups (an HTTP status, or the
    exception the fetch raised)."""

    def __init__(self, address):
        self.connects = []
        self.outcomes = []
        self.reader = nsq.Reader(
            topic=TOPIC,
            channel=CHANNEL,
            message_handler=lambda message: True,
            lookupd_http_addresses=[address],
            lookupd_poll_interval=1,  # pynsq wants whole seconds
            lookupd_poll_jitter=0.0,
            max_in_flight=1,
        )
        real_connect = self.reader.connect_to_nsqd

        def connect_to_nsqd(host, port):
            self.connects.append((host, port))
            return real_connect(host, port)

        self.reader.connect_to_nsqd = connect_to_nsqd
        real_fetch = self.reader.http_client.fetch

        async def fetch(request, *args, **kwargs):
            try:
                response = await real_fetch(request, *args, **kwargs)
            except Exception as e:  # HTTPClientError (status), ssl.SSLError, ...
                self.outcomes.append(getattr(e, "code", e))
                raise
            self.outcomes.append(response.code)
            return response

        self.reader.http_client.fetch = fetch

    def count(self, outcome):
        if isinstance(outcome, type):
            return sum(isinstance(o, outcome) for o in self.outcomes)
        return self.outcomes.count(outcome)

    def close(self):
        self.reader.close()


async def until(cond, timeout, what):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= end:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def tornado_defaults(**defaults):
    """Request defaults for the AsyncHTTPClient of every IOLoop made inside
    (each asyncio.run is a new loop, so the Reader gets a new client)."""
    AsyncHTTPClient.configure(None, defaults=defaults)
    try:
        yield
    finally:
        AsyncHTTPClient.configure(None)


def run(scenario, **tornado):
    """Runs the coroutine `scenario` in a new event loop, under tornado
    request defaults `tornado` (ca_certs, client_cert, client_key) when
    there are any."""
    if not tornado:
        return asyncio.run(scenario)
    with tornado_defaults(**tornado):
        return asyncio.run(scenario)


async def discovers(setup, address):
    """The Reader at `address` reaches the fake nsqd with "  V2"."""
    watched = WatchedReader(address)
    try:
        await until(lambda: setup.fake.magics, DEADLINE, "pynsq reaching the fake nsqd")
        assert setup.fake.magics[0] == b"  V2"
        assert (HOST, setup.fake.port) in watched.connects
        return watched
    finally:
        watched.close()


async def never_connects(setup, address, refused_enough):
    """The Reader at `address` is refused (`refused_enough(watched)` turns
    true: at least two lookups failed, as counted by the server) and never
    connects to the fake nsqd."""
    watched = WatchedReader(address)
    try:
        await until(lambda: refused_enough(watched), DEADLINE, "two refused pynsq lookups")
        assert watched.connects == []
        assert setup.fake.magics == []
        return watched
    finally:
        watched.close()


def test_reader_inside_read_allow_discovers():
    # The allow-list lets it in: the auth server is never asked.
    with Scene(TOPIC, CHANNEL, *ALLOWED) as setup:
        run(discovers(setup, setup.lookupd.http_url))
        assert setup.auth.requests == []


def test_reader_without_secret_is_refused():
    # An auth server, and an allow-list (TEST-NET-1) that does not cover
    # 127.0.0.1: pynsq has no secret to send, every lookup is a 401.
    with Scene(TOPIC, CHANNEL, *NOT_ALLOWED) as setup:
        lookupd = setup.lookupd
        refused_enough = refused_twice(lookupd, "no_credentials", 401)
        run(never_connects(setup, lookupd.http_url, refused_enough))
        assert setup.auth.requests == []


def test_reader_over_https_with_the_ca_trusted_discovers():
    certs = pki()
    with Scene(TOPIC, CHANNEL, *ALLOWED, *tls_args(certs)) as setup:
        run(discovers(setup, setup.lookupd.https_url), ca_certs=certs.ca)


def test_reader_over_https_without_secret_is_refused():
    certs = pki()
    with Scene(TOPIC, CHANNEL, *NOT_ALLOWED, *tls_args(certs)) as setup:
        lookupd = setup.lookupd
        refused_enough = refused_twice(lookupd, "no_credentials", 401)
        run(never_connects(setup, lookupd.https_url, refused_enough), ca_certs=certs.ca)


def test_reader_over_https_with_an_untrusted_ca_never_connects():
    certs = pki()
    with Scene(TOPIC, CHANNEL, *tls_args(certs)) as setup:
        lookupd = setup.lookupd
        # Python's ssl refuses the server's certificate and says so with
        # an alert, which the server counts.
        refused_enough = handshake_failed_twice(lookupd, "alert", ssl.SSLCertVerificationError)
        run(never_connects(setup, lookupd.https_url, refused_enough), ca_certs=certs.other_ca)


def test_reader_presents_a_client_certificate():
    certs = pki()
    with Scene(TOPIC, CHANNEL, *ALLOWED, *tls_args(certs, "require-verify")) as setup:
        lookupd = setup.lookupd
        client = dict(client_cert=certs.client.cert, client_key=certs.client.key)
        run(discovers(setup, lookupd.https_url), ca_certs=certs.ca, **client)
        assert handshake_failures(lookupd, "no_client_certificate") == 0


def test_reader_without_a_valid_client_certificate_never_connects():
    certs = pki()
    other = certs.other_client
    with Scene(TOPIC, CHANNEL, *tls_args(certs, "require-verify")) as setup:
        lookupd = setup.lookupd
        for client, reason in [
            ({}, "no_client_certificate"),
            (dict(client_cert=other.cert, client_key=other.key), "bad_client_certificate"),
        ]:
            refused_enough = handshake_failed_twice(lookupd, reason)
            scenario = never_connects(setup, lookupd.https_url, refused_enough)
            run(scenario, ca_certs=certs.ca, **client)


def test_reader_does_not_follow_tls_required():
    # The plain port answers 403 TLS_REQUIRED with the HTTPS port; NSQ's Go
    # HTTP client follows that, pynsq does not.
    certs = pki()
    with Scene(TOPIC, CHANNEL, *tls_args(certs), "--tls-required") as setup:
        run(never_connects(setup, setup.lookupd.http_url, lambda w: w.count(403) >= 2))
