'use strict'
// nsqjs's Reader against a server with access control. Run by ../run.sh as
// `node --test` with NODE_PATH at the installed modules.
//
// nsqjs 0.13.0 cannot send a secret to the lookupd: lib/lookupd.js calls
// `fetch(url)` with no options (no header, no agent), and lib/reader.js
// hands it only the address and the topic; its `authSecret` goes to nsqd,
// in the AUTH command. So it reads from inside --read-allow and is refused
// by an auth server it cannot answer.
//
// An https:// lookupd address is accepted (lib/config.js,
// isLookupdHTTPAddresses) and fetched by node-fetch through node's https
// module and its global agent: nsqjs's own `ca`, `cert`, `key` and
// `tlsVerification` options are for nsqd connections only. So the lookupd's
// CA is trusted and a client certificate presented process-wide, through
// `https.globalAgent.options` (as here) or NODE_EXTRA_CA_CERTS (CA only,
// read at node's start).

const assert = require('node:assert/strict')
const fs = require('node:fs')
const https = require('node:https')
const {test} = require('node:test')

const {
  HOST,
  ALLOWED,
  NOT_ALLOWED,
  startScene,
  refused,
  handshakeFailures,
  metrics,
  pki,
  tlsArgs,
  waitUntil,
  wrapNsqjsFetch,
  startReader,
} = require('./harness')

// nsqjs's lookup swallows every failure into "no producers": record the
// outcome of each lookup (a status, or the error).
const outcomes = []
wrapNsqjsFetch(async (realFetch, args) => {
  try {
    const response = await realFetch(...args)
    outcomes.push(response.status)
    return response
  } catch (err) {
    outcomes.push(err)
    throw err
  }
})

const nsqjsVersion = require('nsqjs/package.json').version

const TOPIC = 'interop_nsqjs_access'
const CHANNEL = 'interop_ch'
const DEADLINE_MS = 15000

const count = (pred) => outcomes.filter(pred).length
const errors = () => count((o) => o instanceof Error)

/** neverConnects's condition: two lookups answered 401, and two read
 * refusals for `reason` counted by the server. */
const refusedTwice = (lookupd, reason) => async () =>
  count((o) => o === 401) >= 2 && (await refused(lookupd, reason)) >= 2

/** The same with failed handshakes, counted by the server for `reason`. */
const handshakeFailedTwice = (lookupd, reason) => async () =>
  errors() >= 2 && (await handshakeFailures(lookupd, reason)) >= 2

/** The scene of `args` (see harness.startScene), closed after the test `t`. */
async function sceneFor(t, args) {
  const scene = await startScene(TOPIC, CHANNEL, args)
  t.after(() => scene.close())
  return scene
}

/** A Reader at `address`, its outcomes recorded afresh. */
function watchedReader(t, address) {
  outcomes.length = 0
  return startReader(t, TOPIC, CHANNEL, address)
}

async function discovers(t, scene, address) {
  const {connects} = watchedReader(t, address)
  const magic = await scene.fake.waitForConnection(DEADLINE_MS)
  assert.equal(magic.toString('latin1'), '  V2')
  assert.deepEqual(connects[0], [HOST, scene.fake.port])
}

/** The Reader is refused until `refusedEnough()` (two refused lookups, as
 * the server counted them) and never dials the fake nsqd. */
async function neverConnects(t, scene, address, refusedEnough) {
  const {connects} = watchedReader(t, address)
  await waitUntil(refusedEnough, DEADLINE_MS, 'two refused nsqjs lookups')
  assert.deepEqual(connects, [])
  assert.deepEqual(scene.fake.magics, [])
}

/** Sets https.globalAgent.options (the agent node-fetch, so nsqjs's lookup,
 * uses) for the rest of the test `t`; `files`: option -> PEM file. */
function globalAgentOptions(t, files) {
  const saved = {...https.globalAgent.options}
  for (const [name, file] of Object.entries(files)) {
    https.globalAgent.options[name] = fs.readFileSync(file)
  }
  https.globalAgent.destroy() // no pooled socket made with other options
  t.after(() => {
    https.globalAgent.options = saved
    https.globalAgent.destroy()
  })
}

test(`nsqjs ${nsqjsVersion} Reader inside --read-allow discovers the producer`, async (t) => {
  const scene = await sceneFor(t, ALLOWED)
  await discovers(t, scene, scene.lookupd.httpAddress)
  assert.deepEqual(scene.auth.requests, []) // the allow-list never asks it
})

test(`nsqjs ${nsqjsVersion} Reader without a secret is refused`, async (t) => {
  // An auth server, and an allow-list (TEST-NET-1) that does not cover
  // 127.0.0.1: nsqjs has no secret to send, every lookup is a 401.
  const scene = await sceneFor(t, NOT_ALLOWED)
  const lookupd = scene.lookupd
  await neverConnects(t, scene, lookupd.httpAddress, refusedTwice(lookupd, 'no_credentials'))
  assert.deepEqual(scene.auth.requests, [])
})

test(`nsqjs ${nsqjsVersion} Reader over https with the CA trusted discovers`, async (t) => {
  const certs = pki()
  const scene = await sceneFor(t, [...ALLOWED, ...tlsArgs(certs)])
  globalAgentOptions(t, {ca: certs.ca})
  await discovers(t, scene, scene.lookupd.httpsURL)
})

test(`nsqjs ${nsqjsVersion} Reader over https without a secret is refused`, async (t) => {
  const certs = pki()
  const scene = await sceneFor(t, [...NOT_ALLOWED, ...tlsArgs(certs)])
  globalAgentOptions(t, {ca: certs.ca})
  const lookupd = scene.lookupd
  await neverConnects(t, scene, lookupd.httpsURL, refusedTwice(lookupd, 'no_credentials'))
})

test(`nsqjs ${nsqjsVersion} Reader over https with an untrusted CA never connects`, async (t) => {
  const certs = pki()
  const scene = await sceneFor(t, tlsArgs(certs))
  globalAgentOptions(t, {ca: certs.otherCA})
  await neverConnects(t, scene, scene.lookupd.httpsURL, () => errors() >= 2)
  for (const err of outcomes) {
    assert.equal(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', String(err))
  }
  // node checks the certificate after the handshake and hangs up: the
  // server saw the connections, and no request on them.
  const m = await metrics(scene.lookupd)
  assert.ok(m.nsqlookupd_https_connections_accepted_total >= 2)
})

test(`nsqjs ${nsqjsVersion} Reader presents a client certificate`, async (t) => {
  const certs = pki()
  const scene = await sceneFor(t, [...ALLOWED, ...tlsArgs(certs, 'require-verify')])
  globalAgentOptions(t, {ca: certs.ca, cert: certs.client.cert, key: certs.client.key})
  await discovers(t, scene, scene.lookupd.httpsURL)
})

test(`nsqjs ${nsqjsVersion} Reader without a valid client certificate never connects`, async (t) => {
  const certs = pki()
  const scene = await sceneFor(t, tlsArgs(certs, 'require-verify'))
  const lookupd = scene.lookupd
  await t.test('no certificate', async (t) => {
    globalAgentOptions(t, {ca: certs.ca})
    const refusedEnough = handshakeFailedTwice(lookupd, 'no_client_certificate')
    await neverConnects(t, scene, lookupd.httpsURL, refusedEnough)
  })
  await t.test('a certificate of another CA', async (t) => {
    globalAgentOptions(t, {
      ca: certs.ca,
      cert: certs.otherClient.cert,
      key: certs.otherClient.key,
    })
    const refusedEnough = handshakeFailedTwice(lookupd, 'bad_client_certificate')
    await neverConnects(t, scene, lookupd.httpsURL, refusedEnough)
  })
})

test(`nsqjs ${nsqjsVersion} Reader does not follow TLS_REQUIRED`, async (t) => {
  // The plain port answers 403 TLS_REQUIRED with the HTTPS port; NSQ's Go
  // HTTP client follows that, nsqjs does not.
  const certs = pki()
  const scene = await sceneFor(t, [...tlsArgs(certs), '--tls-required'])
  await neverConnects(
    t,
    scene,
    scene.lookupd.httpAddress,
    () => count((o) => o === 403) >= 2
  )
})
