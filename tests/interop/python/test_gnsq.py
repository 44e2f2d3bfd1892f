"""gnsq: a Consumer finds the fake nsqd through this server, and every
LookupdClient method gets the answer NSQ's nsqlookupd gives."""

import json
import time
import warnings

import gevent
import pytest

import gnsq
from gnsq.errors import NSQHttpError

from harness import (
    DEADLINE,
    HOST,
    FakeNsqd,
    Lookupd,
    RecordingProxy,
    Registration,
    record_headers,
)

TOPIC = "interop_gnsq"
CHANNEL = "interop_ch"


@pytest.fixture
def lookupd():
    server = Lookupd()
    yield server
    server.stop()


def test_consumer_discovers_producer_then_loses_it(lookupd):
    fake = FakeNsqd()
    proxy = RecordingProxy(lookupd.http_host, lookupd.http_port)
    reg = Registration(lookupd, fake.port)
    consumer = None
    try:
        reg.register(TOPIC, CHANNEL)

        consumer = gnsq.Consumer(
            TOPIC,
            CHANNEL,
            # Through the recording relay, so the request heads are kept.
            lookupd_http_addresses=[proxy.url],
            lookupd_poll_interval=0.2,
            lookupd_poll_jitter=0.0,
            timeout=5.0,
        )
        consumer.on_message.connect(lambda consumer, message: None, weak=False)
        consumer.start(block=False)

        magic = fake.wait_for_connection(DEADLINE, idle=gevent.sleep)
        assert magic == b"  V2"

        lookups = [r for r in proxy.requests() if "/lookup" in r[0]]
        assert lookups, "no /lookup went through the relay"
        assert lookups[0][0] == f"GET /lookup?topic={TOPIC} HTTP/1.1"
        record_headers("gnsq", lookups)

        # The producer goes away: gnsq's own HTTP client no longer gets it.
        client = gnsq.LookupdClient.from_url(lookupd.http_url)
        assert [p["tcp_port"] for p in client.lookup(TOPIC)["producers"]] == [fake.port]
        reg.unregister(TOPIC)
        assert client.lookup(TOPIC) == {"channels": [CHANNEL], "producers": []}
    finally:
        if consumer is not None:
            consumer.close()
            consumer.join(timeout=5)
        reg.close()
        proxy.close()
        fake.close()


def _peer(reg):
    return {
        "remote_address": reg.local_address,
        "hostname": reg.hostname,
        "broadcast_address": HOST,
        "tcp_port": reg.tcp_port,
        "http_port": reg.http_port,
        "version": "1.3.0",
        "topology_zone": "",
        "topology_region": "",
    }


def _raw(client, method, path):
    """The same request without gnsq's decoding, to see the error body."""
    response = client._connection.request(method, path)
    return response.status, json.loads(response.data)


def test_lookupd_client_every_method(lookupd):
    client = gnsq.LookupdClient(host=lookupd.http_host, port=lookupd.http_port)

    # Monitoring endpoints. /ping is text/plain, so gnsq hands back the bytes.
    assert client.ping() == b"OK"
    assert client.info() == {"version": "1.3.0"}

    # Empty registry.
    assert client.topics() == {"topics": []}
    assert client.nodes() == {"producers": []}
    assert client.channels("nope") == {"channels": []}  # no 404 for /channels

    # A missing topic: 404 TOPIC_NOT_FOUND. gnsq reads the NSQ 0.x
    # `status_txt` field, absent from 1.x's `{"message": ...}` body (the
    # original nsqlookupd answers the same), so its text is generic.
    with pytest.raises(NSQHttpError, match=r"^http error <404>$"):
        client.lookup("nope")
    assert _raw(client, "GET", "/lookup?topic=nope") == (
        404,
        {"message": "TOPIC_NOT_FOUND"},
    )
    # Invalid names never leave the client.
    with pytest.raises(ValueError):
        client.lookup("not valid!")

    # Admin endpoints answer 200 with no body and no Content-Type: bytes.
    assert client.create_topic("t1") == b""
    assert client.topics() == {"topics": ["t1"]}
    assert client.lookup("t1") == {"channels": [], "producers": []}
    assert client.channels("t1") == {"channels": []}

    assert client.create_channel("t1", "c1") == b""
    assert client.create_channel("t1", "c2") == b""
    assert sorted(client.channels("t1")["channels"]) == ["c1", "c2"]
    lookup = client.lookup("t1")
    assert sorted(lookup["channels"]) == ["c1", "c2"] and lookup["producers"] == []

    assert client.delete_channel("t1", "c2") == b""
    assert client.channels("t1") == {"channels": ["c1"]}
    with pytest.raises(NSQHttpError, match=r"^http error <404>$"):
        client.delete_channel("t1", "c2")
    assert _raw(client, "POST", "/channel/delete?topic=t1&channel=c2") == (
        404,
        {"message": "CHANNEL_NOT_FOUND"},
    )

    assert client.delete_topic("t1") == b""
    assert client.topics() == {"topics": []}
    assert client.channels("t1") == {"channels": []}
    with pytest.raises(NSQHttpError, match=r"^http error <404>$"):
        client.lookup("t1")

    # Two nsqd nodes carrying t2; tombstones hide one producer per call.
    a = Registration(lookupd, tcp_port=4150, http_port=4151, hostname="nsqd-a")
    b = Registration(lookupd, tcp_port=4250, http_port=4251, hostname="nsqd-b")
    try:
        a.register("t2", "c")
        b.register("t2")
        b.register("t3")

        lookup = client.lookup("t2")
        assert lookup["channels"] == ["c"]
        assert sorted(lookup["producers"], key=lambda p: p["tcp_port"]) == [
            _peer(a),
            _peer(b),
        ]
        assert sorted(client.topics()["topics"]) == ["t2", "t3"]
        assert client.channels("t2") == {"channels": ["c"]}

        nodes = sorted(client.nodes()["producers"], key=lambda p: p["tcp_port"])
        assert nodes[0] == dict(_peer(a), topics=["t2"], tombstones=[False])
        node_b = dict(nodes[1])
        pairs = sorted(zip(node_b.pop("topics"), node_b.pop("tombstones")))
        assert node_b == _peer(b) and pairs == [("t2", False), ("t3", False)]

        # gnsq always sends `node`; an empty one matches no producer (200, as
        # in the original, whose parameter check only rejects an absent key).
        assert client.tombstone_topic("t2", "") == b""
        assert len(client.lookup("t2")["producers"]) == 2
        # Without the parameter at all: 400 MISSING_ARG_NODE.
        assert _raw(client, "POST", "/topic/tombstone?topic=t2") == (
            400,
            {"message": "MISSING_ARG_NODE"},
        )

        # LookupdClient.tombstone_topic (gnsq 1.0's name) ...
        assert client.tombstone_topic("t2", f"{HOST}:4151") == b""
        assert client.lookup("t2")["producers"] == [_peer(b)]
        tombstoned = {
            n["hostname"]: dict(zip(n["topics"], n["tombstones"]))
            for n in client.nodes()["producers"]
        }
        assert tombstoned == {
            "nsqd-a": {"t2": True},
            "nsqd-b": {"t2": False, "t3": False},
        }

        # ... and tombstone_topic_producer, kept on the deprecated Lookupd.
        # gnsq 1.0.2's Lookupd.__init__ itself is broken (it assigns to the
        # read-only `address` property: AttributeError), so the instance is
        # set up through LookupdClient's constructor instead.
        with pytest.raises(AttributeError):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                gnsq.Lookupd(lookupd.http_url)
        legacy = gnsq.Lookupd.__new__(gnsq.Lookupd)
        gnsq.LookupdClient.__init__(legacy, lookupd.http_host, lookupd.http_port)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert legacy.tombstone_topic_producer("t2", f"{HOST}:4251") == b""
        assert client.lookup("t2") == {"channels": ["c"], "producers": []}
        # Tombstones are per topic: b still serves t3.
        assert client.lookup("t3")["producers"] == [_peer(b)]

        # A producer whose connection closes leaves every key.
        b.close()
        end = time.monotonic() + 5
        while len(client.nodes()["producers"]) != 1 and time.monotonic() < end:
            time.sleep(0.02)
        assert [n["hostname"] for n in client.nodes()["producers"]] == ["nsqd-a"]
        assert client.lookup("t3") == {"channels": [], "producers": []}
    finally:
        a.close()
        b.close()
