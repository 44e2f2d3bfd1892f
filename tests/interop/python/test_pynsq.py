"""pynsq (`import nsq`): a Reader finds the fake nsqd through this server."""

import asyncio
import json
import time

import nsq

from harness import (
    DEADLINE,
    HOST,
    FakeNsqd,
    Lookupd,
    RecordingProxy,
    Registration,
    record_headers,
)

TOPIC = "interop_pynsq"
CHANNEL = "interop_ch"


def test_reader_discovers_producer_then_loses_it():
    asyncio.run(_scenario())


async def _scenario():
    lookupd = Lookupd()
    fake = FakeNsqd()
    proxy = RecordingProxy(lookupd.http_host, lookupd.http_port)
    reg = Registration(lookupd, fake.port)
    reader = None
    try:
        reg.register(TOPIC, CHANNEL)

        reader = nsq.Reader(
            topic=TOPIC,
            channel=CHANNEL,
            message_handler=lambda message: True,
            # Through the recording relay, so the request heads are kept.
            lookupd_http_addresses=[proxy.url],
            lookupd_poll_interval=1,  # pynsq wants whole seconds
            lookupd_poll_jitter=0.0,
            max_in_flight=1,
        )
        # Observe the Reader's own discovery path: every producer its lookup
        # hands on, and every /lookup response it received.
        connects = []
        real_connect = reader.connect_to_nsqd

        def connect_to_nsqd(host, port):
            connects.append((host, port))
            return real_connect(host, port)

        reader.connect_to_nsqd = connect_to_nsqd

        fetched = []
        in_flight = [0]
        real_fetch = reader.http_client.fetch

        async def fetch(request, *args, **kwargs):
            in_flight[0] += 1
            try:
                response = await real_fetch(request, *args, **kwargs)
            finally:
                in_flight[0] -= 1
            fetched.append(response)
            return response

        reader.http_client.fetch = fetch

        # The Reader starts on the running loop; wait for it to reach the fake.
        end = time.monotonic() + DEADLINE
        while not fake.magics and time.monotonic() < end:
            await asyncio.sleep(0.05)
        assert fake.magics, f"pynsq did not reach the fake nsqd within {DEADLINE}s"
        assert fake.magics[0] == b"  V2"
        assert (HOST, fake.port) in connects

        lookups = [r for r in proxy.requests() if "/lookup" in r[0]]
        assert lookups, "no /lookup went through the relay"
        assert lookups[0][0] == f"GET /lookup?topic={TOPIC} HTTP/1.1"
        record_headers("pynsq", lookups)

        # Stop the Reader's poll timer and let a poll already under way finish,
        # so that no answer given before the producer left arrives after it.
        if reader.query_periodic is not None:
            reader.query_periodic.stop()
        end = time.monotonic() + 5
        while in_flight[0] and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)

        # The producer goes away; the Reader's next lookup must not offer it.
        reg.unregister(TOPIC)
        reg.close()
        connects.clear()
        fetched.clear()
        await reader.query_lookupd()
        assert fetched, "the Reader's lookup did not complete"
        for response in fetched:
            assert response.code == 200
            body = json.loads(response.body)
            assert body["producers"] == [], body
            assert body["channels"] == [CHANNEL], body
        assert connects == []
    finally:
        if reader is not None:
            reader.close()
        reg.close()
        proxy.close()
        fake.close()
        lookupd.stop()
