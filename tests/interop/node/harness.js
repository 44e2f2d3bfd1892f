'use strict'
// Shared pieces of the nsqjs interop test (same roles as ../python/harness.py):
// the server on 127.0.0.1:0 ports, a fake nsqd listener, an nsqd-style TCP
// registration, and a recording relay in front of the HTTP port; for the
// access tests, ../auth_server.py as a subprocess, the certificates of
// ../pki.sh, the server's refusal counters and a deadline-bound wait; and
// for both test files, a watch on nsqjs's fetches and a watched Reader.

const {spawn} = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const path = require('node:path')
const readline = require('node:readline')

const ROOT = path.resolve(__dirname, '..', '..', '..')
const HOST = '127.0.0.1'

function serverBinary() {
  if (process.env.NSQLOOKUPD_BIN) return process.env.NSQLOOKUPD_BIN
  const target = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target')
  return path.join(target, 'debug', 'nsqlookupd')
}

function split(addr) {
  const i = addr.lastIndexOf(':')
  return {host: addr.slice(0, i), port: Number(addr.slice(i + 1))}
}

function withDeadline(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Spawns the server and resolves once both listening lines are logged. */
async function startLookupd(...extraArgs) {
  // A third listener with a certificate (the HTTPS flags of tlsArgs).
  const want = ['TCP', 'HTTP']
  if (extraArgs.some((a) => a.startsWith('--tls-cert='))) want.push('HTTPS')
  const proc = spawn(
    serverBinary(),
    [
      `--tcp-address=${HOST}:0`,
      `--http-address=${HOST}:0`,
      ...(process.env.NSQLOOKUPD_EXTRA_ARGS || '').split(/\s+/).filter(Boolean),
      ...extraArgs,
    ],
    {stdio: ['ignore', 'ignore', 'pipe']}
  )
  const log = []
  const found = {}
  const ready = new Promise((resolve, reject) => {
    proc.on('error', reject)
    proc.on('exit', (code) =>
      reject(new Error(`nsqlookupd exited (${code}) before listening:\n${log.join('\n')}`))
    )
    // Reads stderr for the whole life of the process (never a full pipe).
    readline.createInterface({input: proc.stderr}).on('line', (line) => {
      log.push(line)
      const m = /INFO: (TCP|HTTPS|HTTP): listening on (\S+)/.exec(line)
      if (m) {
        found[m[1]] = split(m[2])
        if (want.every((k) => found[k])) resolve()
      }
    })
  })
  try {
    await withDeadline(ready, 10000, 'nsqlookupd start')
  } catch (err) {
    proc.kill()
    throw err
  }
  return {
    proc,
    log,
    tcp: found.TCP,
    http: found.HTTP,
    httpAddress: `${found.HTTP.host}:${found.HTTP.port}`,
    https: found.HTTPS,
    httpsURL: found.HTTPS && `https://${found.HTTPS.host}:${found.HTTPS.port}`,
    stop() {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve()
        proc.once('exit', () => resolve())
        proc.kill('SIGTERM')
      })
    },
  }
}

/** A listener standing in for an nsqd: keeps the first 4 bytes of every
 * connection and closes it. */
async function startFakeNsqd() {
  const magics = []
  const waiters = []
  const sockets = new Set()
  const server = net.createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => {})
    let data = Buffer.alloc(0)
    const done = () => {
      magics.push(data.subarray(0, 4))
      waiters.splice(0).forEach((w) => w())
      sock.destroy()
    }
    sock.on('data', (chunk) => {
      data = Buffer.concat([data, chunk])
      if (data.length >= 4) done()
    })
    sock.on('end', () => {
      if (data.length < 4) done()
    })
  })
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  return {
    port: server.address().port,
    magics,
    async waitForConnection(ms) {
      if (!magics.length) {
        await withDeadline(
          new Promise((resolve) => waiters.push(resolve)),
          ms,
          'client connection to the fake nsqd'
        )
      }
      return magics[0]
    },
    close() {
      sockets.forEach((s) => s.destroy())
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/** One nsqd's TCP connection to the server: "  V1", IDENTIFY, commands. */
async function register(lookupd, tcpPort, httpPort = 4151) {
  const sock = net.connect(lookupd.tcp.port, lookupd.tcp.host)
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve)
    sock.once('error', reject)
  })
  let buf = Buffer.alloc(0)
  let pending = []
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk])
    while (buf.length >= 4 && buf.length >= 4 + buf.readInt32BE(0)) {
      const size = buf.readInt32BE(0)
      const frame = buf.subarray(4, 4 + size)
      buf = buf.subarray(4 + size)
      const next = pending.shift()
      if (next) next.resolve(frame)
    }
  })
  sock.on('error', (err) => pending.splice(0).forEach((p) => p.reject(err)))
  sock.on('close', () =>
    pending.splice(0).forEach((p) => p.reject(new Error('nsqlookupd closed the connection')))
  )
  const send = (bytes) =>
    withDeadline(
      new Promise((resolve, reject) => {
        pending.push({resolve, reject})
        sock.write(bytes)
      }),
      5000,
      'nsqlookupd response'
    )

  sock.write('  V1')
  const body = Buffer.from(
    JSON.stringify({
      broadcast_address: HOST,
      tcp_port: tcpPort,
      http_port: httpPort,
      version: '1.3.0',
      hostname: 'fake-nsqd',
    })
  )
  const size = Buffer.alloc(4)
  size.writeInt32BE(body.length)
  const identify = JSON.parse(
    (await send(Buffer.concat([Buffer.from('IDENTIFY\n'), size, body]))).toString()
  )
  const command = async (line) => (await send(line + '\n')).toString()
  return {
    identify,
    command,
    async register(topic, channel) {
      const ok = await command(`REGISTER ${topic}${channel ? ' ' + channel : ''}`)
      if (ok !== 'OK') throw new Error(`REGISTER answered ${ok}`)
    },
    async unregister(topic, channel) {
      const ok = await command(`UNREGISTER ${topic}${channel ? ' ' + channel : ''}`)
      if (ok !== 'OK') throw new Error(`UNREGISTER answered ${ok}`)
    },
    close() {
      sock.destroy()
    },
  }
}

/** A byte-for-byte relay to the server's HTTP port that keeps what clients
 * send, to read their request heads. */
async function startRecordingProxy(upstream) {
  const streams = []
  const sockets = new Set()
  const server = net.createServer((client) => {
    const record = []
    streams.push(record)
    const up = net.connect(upstream.port, upstream.host)
    for (const s of [client, up]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => {
        client.destroy()
        up.destroy()
      })
    }
    client.on('data', (chunk) => record.push(chunk))
    client.pipe(up)
    up.pipe(client)
  })
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  const port = server.address().port
  return {
    address: `${HOST}:${port}`,
    /** [{line, headers: [[name, value], ...]}] for every request head seen. */
    requests() {
      const out = []
      for (const record of streams) {
        const text = Buffer.concat(record).toString('latin1')
        for (const head of text.split('\r\n\r\n')) {
          if (!head) continue
          const [line, ...rest] = head.split('\r\n')
          const headers = rest.map((h) => {
            const i = h.indexOf(':')
            return [h.slice(0, i), h.slice(i + 1).trim()]
          })
          out.push({line, headers})
        }
      }
      return out
    },
    close() {
      sockets.forEach((s) => s.destroy())
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/** Keeps the request head a client sent, for run.sh's summary. */
function recordHeaders(client, request) {
  const dir =
    process.env.INTEROP_HEADERS_DIR || path.join(ROOT, 'target', 'interop', 'headers')
  fs.mkdirSync(dir, {recursive: true})
  const text =
    request.line + '\n' + request.headers.map(([n, v]) => `  ${n}: ${v}\n`).join('')
  fs.writeFileSync(path.join(dir, `${client}.txt`), text)
}

/** Puts `wrapper(realFetch, args)` in the place of the node-fetch that
 * nsqjs loads (before nsqjs is loaded: call it first). nsqjs's lookup
 * swallows every failure into "no producers", so the tests watch what each
 * of its fetches got. */
function wrapNsqjsFetch(wrapper) {
  const fetchPath = require.resolve('node-fetch', {
    paths: [path.dirname(require.resolve('nsqjs'))],
  })
  const realFetch = require(fetchPath)
  const wrapped = (...args) => wrapper(realFetch, args)
  Object.assign(wrapped, realFetch, {default: wrapped})
  require.cache[fetchPath].exports = wrapped
}

/** A connected nsqjs Reader of `topic`/`channel` at lookupd `address`
 * (polled every second, nsqjs's minimum), closed after the test `t`;
 * `connects` gets every producer it dials. */
function startReader(t, topic, channel, address) {
  const nsq = require('nsqjs')
  const reader = new nsq.Reader(topic, channel, {
    lookupdHTTPAddresses: [address],
    lookupdPollInterval: 1, // nsqjs's minimum (seconds)
  })
  t.after(() => reader.close())
  reader.on(nsq.Reader.ERROR, () => {}) // the fake nsqd hangs up
  reader.on(nsq.Reader.MESSAGE, (msg) => msg.finish())
  const connects = []
  const realConnect = reader.connectToNSQD.bind(reader)
  reader.connectToNSQD = (host, port) => {
    connects.push([host, port])
    return realConnect(host, port)
  }
  reader.connect()
  return {reader, connects}
}

/** Polls `cond` (sync or async) until it is true, for at most `ms`. */
async function waitUntil(cond, ms, what) {
  const end = Date.now() + ms
  for (;;) {
    if (await cond()) return
    if (Date.now() >= end) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** GET over plain HTTP with node's own client: {status, body}. */
function httpGet(url) {
  return withDeadline(
    new Promise((resolve, reject) => {
      http
        .get(url, {agent: false}, (res) => {
          const chunks = []
          res.on('data', (c) => chunks.push(c))
          res.on('end', () =>
            resolve({status: res.statusCode, body: Buffer.concat(chunks).toString()})
          )
          res.on('error', reject)
        })
        .on('error', reject)
    }),
    5000,
    `GET ${url}`
  )
}

/** The server's /metrics as {'name{labels}': value}. */
async function metrics(lookupd) {
  const {status, body} = await httpGet(`http://${lookupd.httpAddress}/metrics`)
  if (status !== 200) throw new Error(`/metrics answered ${status}`)
  const out = {}
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out[line.slice(0, i)] = Number(line.slice(i + 1))
  }
  return out
}

/** nsqlookupd_http_refused_total{class,reason}. */
async function refused(lookupd, reason, cls = 'read') {
  const key = `nsqlookupd_http_refused_total{class="${cls}",reason="${reason}"}`
  return (await metrics(lookupd))[key] || 0
}

/** nsqlookupd_tls_handshake_failures_total{reason}. */
async function handshakeFailures(lookupd, reason) {
  const key = `nsqlookupd_tls_handshake_failures_total{reason="${reason}"}`
  return (await metrics(lookupd))[key] || 0
}

const INTEROP = path.join(ROOT, 'tests', 'interop')

/** The certificates of ../pki.sh: run.sh makes them in $INTEROP_PKI_DIR;
 * made here (target/interop/pki) when run alone. */
function pki() {
  const dir = process.env.INTEROP_PKI_DIR || path.join(ROOT, 'target', 'interop', 'pki')
  if (!fs.existsSync(path.join(dir, 'other-client.pem'))) {
    const {execFileSync} = require('node:child_process')
    execFileSync('bash', [path.join(INTEROP, 'pki.sh'), dir], {stdio: 'inherit'})
  }
  const pair = (name) => ({
    cert: path.join(dir, `${name}.pem`),
    key: path.join(dir, `${name}-key.pem`),
  })
  return {
    ca: path.join(dir, 'ca.pem'),
    server: pair('server'),
    client: pair('client'),
    otherCA: path.join(dir, 'other-ca.pem'),
    otherClient: pair('other-client'),
  }
}

/** Server flags: HTTPS on 127.0.0.1:0 with the test server certificate;
 * with `policy`, client certificates checked against the test CA. */
function tlsArgs(certs, policy) {
  const args = [
    `--https-address=${HOST}:0`,
    `--tls-cert=${certs.server.cert}`,
    `--tls-key=${certs.server.key}`,
  ]
  if (policy) {
    args.push(`--tls-root-ca-file=${certs.ca}`, `--tls-client-auth-policy=${policy}`)
  }
  return args
}

/** An auth server answer granting `subscribe` on topics matching `pattern`. */
function subscribeGrant(pattern, ttl = 60) {
  return {
    ttl,
    identity: 'interop',
    identity_url: 'https://example.invalid/interop',
    authorizations: [{topic: pattern, channels: ['.*'], permissions: ['subscribe']}],
  }
}

/** ../auth_server.py on 127.0.0.1:0. `requests` gets the parameters of every
 * query it answers; stop() closes its stdin, which ends it. */
async function startAuthServer(grants) {
  const python = process.env.INTEROP_PYTHON || 'python3'
  const proc = spawn(python, [path.join(INTEROP, 'auth_server.py'), JSON.stringify(grants)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const requests = []
  const ready = new Promise((resolve, reject) => {
    proc.on('error', reject)
    proc.on('exit', (code) => reject(new Error(`auth_server.py exited (${code})`)))
    readline.createInterface({input: proc.stdout}).on('line', (line) => {
      if (line.startsWith('LISTENING ')) resolve(line.slice('LISTENING '.length))
      else if (line.startsWith('AUTH ')) requests.push(JSON.parse(line.slice(5)))
    })
  })
  let address
  try {
    address = await withDeadline(ready, 10000, 'auth_server.py start')
  } catch (err) {
    proc.kill()
    throw err
  }
  return {
    address,
    requests,
    stop() {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve()
        const kill = setTimeout(() => proc.kill('SIGKILL'), 5000)
        proc.once('exit', () => {
          clearTimeout(kill)
          resolve()
        })
        proc.stdin.end()
      })
    },
  }
}

/** The access tests' server flags: an auth server, and an allow-list that
 * covers the client (127.0.0.1), or not (TEST-NET-1). */
const ALLOWED = ['--read-allow=127.0.0.0/8', '--auth-http-address={auth}']
const NOT_ALLOWED = ['--read-allow=192.0.2.0/24', '--auth-http-address={auth}']

/** What an access test needs: an auth server answering `grants`, the
 * server started with `args` (in which "{auth}" is the auth server's
 * address), a fake nsqd registered for `topic` and `channel`. close() stops
 * them all. */
async function startScene(topic, channel, args, grants) {
  const auth = await startAuthServer(grants || {granted: subscribeGrant('.*')})
  let lookupd
  try {
    lookupd = await startLookupd(...args.map((a) => a.replace('{auth}', auth.address)))
  } catch (err) {
    await auth.stop()
    throw err
  }
  const fake = await startFakeNsqd()
  const reg = await register(lookupd, fake.port)
  await reg.register(topic, channel)
  return {
    auth,
    lookupd,
    fake,
    reg,
    async close() {
      reg.close()
      await fake.close()
      await lookupd.stop()
      await auth.stop()
    },
  }
}

module.exports = {
  HOST,
  ALLOWED,
  NOT_ALLOWED,
  startScene,
  startLookupd,
  startFakeNsqd,
  register,
  startRecordingProxy,
  recordHeaders,
  wrapNsqjsFetch,
  startReader,
  withDeadline,
  waitUntil,
  httpGet,
  metrics,
  refused,
  handshakeFailures,
  pki,
  tlsArgs,
  subscribeGrant,
  startAuthServer,
}
