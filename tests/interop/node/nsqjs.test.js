'use strict'
// nsqjs: a Reader finds the fake nsqd through this server, and its lookup
// helper stops offering the producer once it unregisters.
// Run by ../run.sh as `node --test` with NODE_PATH at the installed modules.

const assert = require('node:assert/strict')
const {test} = require('node:test')

const {
  HOST,
  startLookupd,
  startFakeNsqd,
  register,
  startRecordingProxy,
  recordHeaders,
  wrapNsqjsFetch,
  startReader,
} = require('./harness')

// nsqjs's lookup swallows every failure into "no producers", so an empty
// answer proves nothing by itself: record the status of each /lookup
// response nsqjs receives.
const responses = []
let inFlight = 0
wrapNsqjsFetch(async (realFetch, args) => {
  inFlight++
  try {
    const response = await realFetch(...args)
    responses.push({url: String(args[0]), status: response.status})
    return response
  } finally {
    inFlight--
  }
})

const lookup = require('nsqjs/lib/lookupd')
const nsqjsVersion = require('nsqjs/package.json').version

const TOPIC = 'interop_nsqjs'
const CHANNEL = 'interop_ch'
const DEADLINE_MS = 15000

test(`nsqjs ${nsqjsVersion} Reader discovers the producer, then loses it`, async (t) => {
  const lookupd = await startLookupd()
  t.after(() => lookupd.stop())
  const fake = await startFakeNsqd()
  t.after(() => fake.close())
  const proxy = await startRecordingProxy(lookupd.http)
  t.after(() => proxy.close())
  const reg = await register(lookupd, fake.port)
  t.after(() => reg.close())
  await reg.register(TOPIC, CHANNEL)

  // Through the recording relay, so the request heads are kept.
  const {reader, connects} = startReader(t, TOPIC, CHANNEL, proxy.address)

  const magic = await fake.waitForConnection(DEADLINE_MS)
  assert.equal(magic.toString('latin1'), '  V2')
  assert.deepEqual(connects[0], [HOST, fake.port])

  const lookups = proxy.requests().filter((r) => r.line.includes('/lookup'))
  assert.ok(lookups.length > 0, 'no /lookup went through the relay')
  assert.equal(lookups[0].line, `GET /lookup?topic=${TOPIC} HTTP/1.1`)
  recordHeaders('nsqjs', lookups[0])

  // nsqjs's own lookup helper, straight at the server: the producer is there.
  const before = await lookup([lookupd.httpAddress], TOPIC)
  assert.deepEqual(
    before.map((p) => [p.broadcast_address, p.tcp_port]),
    [[HOST, fake.port]]
  )

  // Stop the Reader's poll timer and let a poll already under way finish, so
  // that no answer given before the producer left arrives after it.
  reader.close()
  const drainEnd = Date.now() + 5000
  while (inFlight > 0 && Date.now() < drainEnd) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await new Promise((resolve) => setTimeout(resolve, 50))

  // The producer unregisters; neither the helper nor the Reader's next
  // lookup offers it, and both lookups were answered 200.
  await reg.unregister(TOPIC)
  reg.close()
  responses.length = 0
  connects.length = 0
  assert.deepEqual(await lookup([lookupd.httpAddress], TOPIC), [])
  await reader.queryLookupd()
  assert.deepEqual(connects, [])
  assert.ok(responses.length >= 2, 'nsqjs made no lookup')
  for (const r of responses) assert.equal(r.status, 200, r.url)
})
