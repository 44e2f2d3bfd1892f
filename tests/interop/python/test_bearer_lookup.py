"""What a consumer that sends `Authorization: Bearer <secret>` to the lookupd
gets (go-nsq does; none of pynsq, gnsq, nsqjs and tokio-nsq can: see the
README's capability table), with the auth server of ../auth_server.py that
every harness of this suite starts. Plain urllib requests, so that the
fixture and the server's answers are checked whatever the clients can do."""

import json
import ssl
import urllib.error
import urllib.request

import pytest

from harness import (
    AuthServer,
    FakeNsqd,
    Lookupd,
    Registration,
    handshake_failures,
    pki,
    refused,
    subscribe_grant,
    tls_args,
    wait_until,
)

TOPIC = "interop_bearer"
OTHER = "interop_bearer_other"
CHANNEL = "interop_ch"
GRANTS = {
    "granted": subscribe_grant(f"^{TOPIC}$"),
    "other-topic": subscribe_grant(f"^{OTHER}$"),
    "refused": 403,
}


def get(url, secret=None, context=None):
    request = urllib.request.Request(url)
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def auth():
    server = AuthServer(GRANTS)
    yield server
    server.stop()


@pytest.fixture
def producer():
    fake = FakeNsqd()
    yield fake
    fake.close()


def test_secrets_over_http(auth, producer):
    # 192.0.2.0/24 (TEST-NET-1): an allow-list that does not cover loopback.
    lookupd = Lookupd("--read-allow=192.0.2.0/24", f"--auth-http-address={auth.address}")
    reg = Registration(lookupd, producer.port)
    try:
        reg.register(TOPIC, CHANNEL)
        url = f"{lookupd.http_url}/lookup?topic={TOPIC}"

        status, body = get(url, "granted")
        assert status == 200
        assert [p["tcp_port"] for p in body["producers"]] == [producer.port]
        assert get(url, "other-topic") == (403, {"message": "FORBIDDEN"})
        assert get(url, "refused") == (401, {"message": "AUTH_FAILED"})
        assert get(url) == (401, {"message": "AUTH_REQUIRED"})

        assert refused(lookupd, "forbidden") == 1
        assert refused(lookupd, "bad_credentials") == 1
        assert refused(lookupd, "no_credentials") == 1
        # One query per secret, as nsqd asks; none without a secret (the
        # log lines are read by a thread: wait for the three).
        wait_until(lambda: len(auth.requests) >= 3, 5, "the three queries logged")
        assert [r["params"] for r in auth.requests] == [
            {"secret": s, "remote_ip": "127.0.0.1", "tls": "false", "common_name": ""}
            for s in ("granted", "other-topic", "refused")
        ]
    finally:
        reg.close()
        lookupd.stop()


def test_secret_and_client_certificate_over_https(auth, producer):
    certs = pki()
    lookupd = Lookupd(
        "--read-allow=192.0.2.0/24",
        f"--auth-http-address={auth.address}",
        *tls_args(certs, "require-verify"),
    )
    reg = Registration(lookupd, producer.port)
    try:
        reg.register(TOPIC, CHANNEL)
        url = f"{lookupd.https_url}/lookup?topic={TOPIC}"
        context = ssl.create_default_context(cafile=certs.ca)
        context.load_cert_chain(certs.client.cert, certs.client.key)

        status, body = get(url, "granted", context)
        assert status == 200
        assert [p["tcp_port"] for p in body["producers"]] == [producer.port]
        assert get(url, "other-topic", context) == (403, {"message": "FORBIDDEN"})
        # The auth server hears of TLS and of the certificate's common name
        # (its log line is read by a thread: wait for both).
        wait_until(lambda: len(auth.requests) >= 2, 5, "both queries logged")
        assert [r["params"] for r in auth.requests] == [
            {"secret": s, "remote_ip": "127.0.0.1", "tls": "true", "common_name": "interop-client"}
            for s in ("granted", "other-topic")
        ]

        # No client certificate: the handshake fails, no request is made.
        bare = ssl.create_default_context(cafile=certs.ca)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(url, "granted", bare)
        wait_until(
            lambda: handshake_failures(lookupd, "no_client_certificate") >= 1,
            5,
            "the refused handshake counted",
        )
        assert len(auth.requests) == 2
    finally:
        reg.close()
        lookupd.stop()
