"""What a consumer that sends `Authorization: Bearer <secret>` to the lookupd
gets (go-nsq does; none of pynsq, gnsq, nsqjs and tokio-nsq can: see the
README's capability table), with the auth server of ../auth_server.py that
every harness of this suite starts. Plain urllib requests, so that the
fixture and the server's answers are checked whatever the clients can do."""

import json
import urllib.error
import urllib.request

import pytest

from harness import (
    AuthServer,
    FakeNsqd,
    Lookupd,
    Registration,
    refused,
    subscribe_grant,
)

TOPIC = "interop_bearer"
OTHER = "interop_bearer_other"
CHANNEL = "interop_ch"
GRANTS = {
    "granted": subscribe_grant(f"^{TOPIC}$"),
    "other-topic": subscribe_grant(f"^{OTHER}$"),
    "refused": 403,
}


def get(url, secret=None):
    request = urllib.request.Request(url)
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
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
        # One query per secret, as nsqd asks; none without a secret.
        assert [r["params"] for r in auth.requests] == [
            {"secret": s, "remote_ip": "127.0.0.1", "tls": "false", "common_name": ""}
            for s in ("granted", "other-topic", "refused")
        ]
    finally:
        reg.close()
        lookupd.stop()

