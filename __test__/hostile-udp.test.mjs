// Hostile UDP traffic at the server's media ports while a real call runs: random bytes,
// truncated and lying STUN, binding requests for ufrags nobody has (and for a real one with a
// wrong MESSAGE-INTEGRITY), DTLS-looking and RTP/RTCP-looking garbage, 2000 datagrams a second
// for 5 s from 8 sockets on 127.0.0.1. In both port modes: a port per connection (to the ports
// the server's candidates name) and single-port mode (udpPort). One datagram in 250 is a
// correctly signed binding request (the server's ICE password is in its SDP): all of them must
// be answered, which proves the garbage reaches the connections and real checks still get
// through. The consumer keeps decoding during and after the flood, the server logs nothing at
// its default level, holds no extra connection, and the process's RSS stays within a generous
// bound. The figures are printed as a test diagnostic.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { createHmac, randomBytes, randomInt } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { Client, createServer, closeServer, closeEverything, startCall, candidateLines, waitFor, sleep, safeJson } from './helpers.mjs'

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

const T = { timeout: 120000 }
const RATE = 2000 // datagrams per second
const SECONDS = 5
const SOURCES = 8 // sending sockets (distinct source addresses)
/** The documented default filter: our warnings and errors, webrtc-rs's errors. */
const LOG_LEVEL = 'warn,rtc=error,webrtc=error'
const RSS_BOUND = 96 * 1024 * 1024

// ---------------------------------------------------------------------------------------
// Garbage

const COOKIE = Buffer.from([0x21, 0x12, 0xa4, 0x42])
const USERNAME = 0x0006
const MESSAGE_INTEGRITY = 0x0008
const FINGERPRINT = 0x8028
const PRIORITY = 0x0024
const ICE_CONTROLLED = 0x8029
const ICE_CONTROLLING = 0x802a

function attribute (type, value) {
  const head = Buffer.alloc(4)
  head.writeUInt16BE(type, 0)
  head.writeUInt16BE(value.length, 2)
  return Buffer.concat([head, value, Buffer.alloc((4 - (value.length % 4)) % 4)])
}

/** A STUN message; the length field says `length` when given (a lie), else the truth. */
function stun (type, attributes, { length, transaction = randomBytes(12) } = {}) {
  const body = Buffer.concat(attributes)
  const head = Buffer.alloc(20)
  head.writeUInt16BE(type, 0)
  head.writeUInt16BE(length ?? body.length, 2)
  COOKIE.copy(head, 4)
  transaction.copy(head, 8)
  return Buffer.concat([head, body])
}

/** `message` (whose length field already counts the FINGERPRINT) with its FINGERPRINT. */
function withFingerprint (message) {
  const fingerprint = Buffer.alloc(4)
  fingerprint.writeUInt32BE((crc32(message) ^ 0x5354554e) >>> 0)
  return Buffer.concat([message, attribute(FINGERPRINT, fingerprint)])
}

/**
 * A binding request as a client sends it (PRIORITY, ICE-CONTROLLING, USERNAME,
 * MESSAGE-INTEGRITY, and a correct FINGERPRINT), with `username` and a random integrity tag:
 * right in every respect but the credentials.
 */
function bindingRequest (username) {
  const attrs = [
    attribute(PRIORITY, randomBytes(4)),
    attribute(ICE_CONTROLLING, randomBytes(8)),
    attribute(USERNAME, username),
    attribute(MESSAGE_INTEGRITY, randomBytes(20))
  ]
  return withFingerprint(stun(0x0001, attrs, { length: Buffer.concat(attrs).length + 8 }))
}

/**
 * A binding request the server must answer: for one of its connections (`ufrag`, `pwd` from
 * its SDP), from the client whose ufrag is `remoteUfrag`, signed with the server's password.
 * The flood carries some, from its own sockets: their answers prove that the garbage reaches
 * the connections' ports and that the server still answers real checks under fire.
 */
function canary ({ ufrag, pwd, remoteUfrag, serverControlling }) {
  const transaction = randomBytes(12)
  const attrs = [
    attribute(USERNAME, Buffer.from(`${ufrag}:${remoteUfrag}`)),
    attribute(PRIORITY, Buffer.from([0x6e, 0x7f, 0x1e, 0xff])),
    attribute(serverControlling ? ICE_CONTROLLED : ICE_CONTROLLING, randomBytes(8))
  ]
  const length = Buffer.concat(attrs).length
  const signed = stun(0x0001, attrs, { length: length + 24, transaction })
  const integrity = createHmac('sha1', pwd).update(signed).digest()
  const message = Buffer.concat([signed, attribute(MESSAGE_INTEGRITY, integrity)])
  message.writeUInt16BE(length + 24 + 8, 2)
  return { transaction: transaction.toString('hex'), packet: withFingerprint(message) }
}

const ufragChars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const ufrag = (n) => Array.from({ length: n }, () => ufragChars[randomInt(ufragChars.length)]).join('')

/** Kinds of garbage, each a function of the server's real ufrags (from its SDPs). */
const KINDS = {
  random: () => randomBytes(randomInt(0, 1501)),
  truncatedStun: () => stun(0x0001, [attribute(USERNAME, Buffer.from(`${ufrag(16)}:${ufrag(4)}`))]).subarray(0, randomInt(1, 28)),
  lyingStunLength: () => stun(0x0001, [attribute(USERNAME, Buffer.from(`${ufrag(16)}:${ufrag(4)}`)), attribute(MESSAGE_INTEGRITY, randomBytes(20))], { length: 4 * randomInt(20, 16384) }),
  unknownUfrag: () => bindingRequest(Buffer.from(`${ufrag(16)}:${ufrag(4)}`)),
  randomUsername: () => bindingRequest(randomBytes(randomInt(0, 600))),
  knownUfragWrongIntegrity: (ufrags) => bindingRequest(Buffer.from(`${ufrags[randomInt(ufrags.length)]}:${ufrag(4)}`)),
  dtlsLooking: () => {
    const b = randomBytes(randomInt(13, 1200))
    b[0] = randomInt(20, 64)
    if (randomInt(2)) { b[1] = 0xfe; b[2] = 0xfd } // DTLS 1.2 version bytes
    return b
  },
  rtpLooking: () => {
    const b = randomBytes(randomInt(12, 1300))
    b[0] = randomInt(128, 192)
    if (randomInt(4) === 0) b[1] = randomInt(200, 205) // RTCP packet types
    return b // random SSRC (bytes 8..11) and everything else
  }
}
const kindNames = Object.keys(KINDS)

/** Every CANARY_EVERY-th datagram of the flood is a canary. */
const CANARY_EVERY = 250

/**
 * Sends RATE datagrams a second for SECONDS seconds (RATE * SECONDS in all, never more, and
 * never past SECONDS + 2 s) to `ports` on 127.0.0.1, round-robin over kinds, ports and sources;
 * every CANARY_EVERY-th is a canary for one of `connections` ({port, ufrag, pwd, ...}). Waits
 * up to 2 s for the canaries' answers after the last datagram.
 */
async function flood (ports, ufrags, connections) {
  const answered = new Set()
  const sockets = await Promise.all(Array.from({ length: SOURCES }, () => new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4')
    s.once('error', reject)
    s.on('message', (msg) => {
      // A binding success or error response: its transaction id.
      if (msg.length >= 20 && (msg.readUInt16BE(0) & 0xffef) === 0x0101) answered.add(msg.subarray(8, 20).toString('hex'))
    })
    s.bind(0, '127.0.0.1', () => resolve(s))
  })))
  const total = RATE * SECONDS
  const perKind = Object.fromEntries([...kindNames, 'canary'].map((k) => [k, 0]))
  const canaries = []
  let sent = 0
  let failed = 0
  const started = performance.now()
  const hardStop = started + (SECONDS + 2) * 1000
  try {
    while (sent < total && performance.now() < hardStop) {
      const due = Math.min(total, Math.floor((performance.now() - started) * RATE / 1000))
      for (; sent < due; sent++) {
        const socket = sockets[sent % SOURCES]
        const done = (err) => { if (err) failed++ }
        if (sent % CANARY_EVERY === CANARY_EVERY - 1) {
          const connection = connections[canaries.length % connections.length]
          const { transaction, packet } = canary(connection)
          canaries.push(transaction)
          perKind.canary++
          socket.send(packet, connection.port, '127.0.0.1', done)
          continue
        }
        const kind = kindNames[sent % kindNames.length]
        perKind[kind]++
        const port = ports[Math.floor(sent / kindNames.length) % ports.length]
        socket.send(KINDS[kind](ufrags), port, '127.0.0.1', done)
      }
      await sleep(5)
    }
    await waitFor(() => canaries.every((c) => answered.has(c)), { timeout: 2000, message: 'answers to the canaries' }).catch(() => {})
  } finally {
    for (const s of sockets) s.close()
  }
  const canariesAnswered = canaries.filter((c) => answered.has(c)).length
  return { sent, failed, perKind, canaries: canaries.length, canariesAnswered, ms: Math.round(performance.now() - started) }
}

// ---------------------------------------------------------------------------------------
// The call under fire

/** The UDP ports the server's candidates name in these SDPs. */
function candidatePorts (sdps) {
  const ports = new Set()
  for (const sdp of sdps) {
    for (const line of candidateLines(sdp)) {
      const f = line.split(' ')
      if (f[2].toLowerCase() === 'udp' && f[4] === '127.0.0.1') ports.add(Number(f[5]))
    }
  }
  return [...ports]
}

const ufragsOf = (sdps) => [...new Set(sdps.flatMap((sdp) => [...sdp.matchAll(/^a=ice-ufrag:(\S+)/gm)].map((m) => m[1])))]

/**
 * Samples the consumer's framesDecoded (and audio packets) every 200 ms until stopped:
 * [{t, frames, audio}].
 */
function sampler (consumer, producerId) {
  const samples = []
  let running = true
  const done = (async () => {
    while (running) {
      const s = await consumer.inboundStats(producerId)
      samples.push({ t: performance.now(), frames: s.video.framesDecoded, audio: s.audio.packetsReceived })
      await sleep(200)
    }
  })()
  return { samples, async stop () { running = false; await done } }
}

/** Frames per second between the samples nearest `from` and `to`, and the longest stall there. */
function phase (samples, from, to) {
  const inside = samples.filter((s) => s.t >= from && s.t <= to)
  assert.ok(inside.length >= 2, `too few samples in a phase: ${inside.length}`)
  const [first, last] = [inside[0], inside[inside.length - 1]]
  let stall = 0
  let since = first
  for (const s of inside) {
    if (s.frames > since.frames) since = s
    stall = Math.max(stall, s.t - since.t)
  }
  return {
    fps: Math.round((last.frames - first.frames) * 10000 / (last.t - first.t)) / 10,
    frames: last.frames - first.frames,
    audio: last.audio - first.audio,
    stallMs: Math.round(stall)
  }
}

/**
 * A two-user call on `server` (whose log records go to `logs`), under fire at the ports
 * `targetPorts(server SDPs)` names; checks everything and returns the figures.
 */
async function run (t, server, logs, room, targetPorts) {
  const producer = new Client(server, room, 'producer')
  const consumer = new Client(server, room, 'consumer')
  const res = await startCall(server, room, producer, consumer)
  const sdps = [res.answer.sdp, ...res.outbound.map((o) => o.offer.sdp)]
  const ports = targetPorts(sdps)
  const ufrags = ufragsOf(sdps)
  assert.ok(ports.length >= 1 && ufrags.length === 2, `ports ${safeJson(ports)}, ufrags ${safeJson(ufrags)}`)
  // The server's two connections, as a client would check them (for the canaries).
  const iceOf = (sdp) => ({ ufrag: /^a=ice-ufrag:(\S+)/m.exec(sdp)[1], pwd: /^a=ice-pwd:(\S+)/m.exec(sdp)[1] })
  const connections = [
    { sdp: res.answer.sdp, client: producer.upstream.localDescription.sdp, serverControlling: false },
    { sdp: res.outbound[0].offer.sdp, client: consumer.downstreams.get('producer').localDescription.sdp, serverControlling: true }
  ].map(({ sdp, client, serverControlling }) => ({
    ...iceOf(sdp), remoteUfrag: iceOf(client).ufrag, serverControlling, port: candidatePorts([sdp])[0]
  }))
  const statsBefore = await server.stats()
  const sampling = sampler(consumer, 'producer')
  try {
    // Before: two seconds of the call as it is.
    const t0 = performance.now()
    await waitFor(() => performance.now() - t0 >= 2000 && sampling.samples.length >= 8, { timeout: 10000, message: 'two seconds of samples before the flood' })
    const rssBefore = process.memoryUsage().rss
    const logsBefore = logs.length
    const floodStart = performance.now()
    const sent = await flood(ports, ufrags, connections)
    const floodEnd = performance.now()
    const rssAfterFlood = process.memoryUsage().rss
    // After: the call goes on; wait for 2 s more of samples, then for 20 more frames.
    await waitFor(() => sampling.samples.filter((s) => s.t > floodEnd).length >= 10, { timeout: 10000, message: '2 s of samples after the flood' })
    const framesAtEnd = sampling.samples[sampling.samples.length - 1].frames
    await consumer.waitDecoding('producer', { above: framesAtEnd + 20, timeout: 10000 })
    await consumer.waitAudio('producer', { above: sampling.samples[sampling.samples.length - 1].audio + 20, timeout: 10000 })
    await sampling.stop()
    const s = sampling.samples
    const before = phase(s, t0, floodStart)
    const during = phase(s, floodStart, floodEnd)
    const afterwards = phase(s, floodEnd, s[s.length - 1].t)
    const statsAfter = await server.stats()
    const rssAfter = process.memoryUsage().rss
    const noisy = logs.slice(logsBefore).filter((r) => r.level === 'warn' || r.level === 'error')
    const figures = {
      ports,
      sent,
      decodedFps: { before: before.fps, during: during.fps, after: afterwards.fps },
      longestStallMs: { before: before.stallMs, during: during.stallMs, after: afterwards.stallMs },
      audioPackets: { during: during.audio, after: afterwards.audio },
      rssMiB: { before: Math.round(rssBefore / 1048576), afterFlood: Math.round(rssAfterFlood / 1048576), end: Math.round(rssAfter / 1048576) },
      logRecords: logs.length - logsBefore
    }
    t.diagnostic(JSON.stringify(figures))

    assert.equal(sent.sent, RATE * SECONDS, `every datagram was sent: ${safeJson(sent)}`)
    assert.equal(sent.failed, 0, `no send failed: ${safeJson(sent)}`)
    assert.ok(sent.ms < (SECONDS + 4) * 1000, `the flood took ${sent.ms} ms`)
    // The garbage reached the connections: the canaries among it were answered.
    assert.ok(sent.canaries === RATE * SECONDS / CANARY_EVERY && sent.canariesAnswered === sent.canaries, `canaries answered: ${safeJson(sent)}`)
    // The call keeps decoding: during the flood at least half the rate of before, never stalled
    // for long, and audio kept coming; afterwards likewise.
    assert.ok(before.fps >= 10, `the call decodes before the flood: ${safeJson(figures)}`)
    assert.ok(during.fps >= before.fps / 2, `decoding during the flood: ${safeJson(figures)}`)
    assert.ok(afterwards.fps >= before.fps / 2, `decoding after the flood: ${safeJson(figures)}`)
    assert.ok(during.stallMs <= 2000 && afterwards.stallMs <= 2000, `no long stall: ${safeJson(figures)}`)
    assert.ok(during.audio >= 50 * SECONDS / 2, `audio during the flood: ${safeJson(figures)}`)
    // Quiet: nothing at warn or error while and after the garbage arrived.
    // (A count, and the first lines: a diff of thousands of lines would take minutes.)
    assert.equal(noisy.length, 0, `log lines while under fire, the first of ${noisy.length}:\n` +
      noisy.slice(0, 10).map((r) => `${r.level} ${r.target}: ${r.message} ${safeJson(r.fields)}`).join('\n'))
    // Nothing extra held.
    const held = (x) => ({ rooms: x.rooms, users: x.users, upstream: x.upstreamConnections, downstream: x.downstreamConnections, live: x.liveConnections, ports: x.portsInUse })
    assert.deepStrictEqual(held(statsAfter), held(statsBefore), 'stats() after the flood')
    assert.deepStrictEqual(held(statsAfter), { rooms: 1, users: 2, upstream: 1, downstream: 1, live: 2, ports: statsBefore.portsInUse })
    assert.ok(rssAfter - rssBefore < RSS_BOUND, `RSS grew by ${Math.round((rssAfter - rssBefore) / 1048576)} MiB: ${safeJson(figures)}`)
    return figures
  } finally {
    await sampling.stop()
    producer.close()
    consumer.close()
  }
}

test('a port per connection: the call survives garbage at the ports its candidates name', T, async (t) => {
  const logs = []
  // A port per connection is the 'tasks' engine's (the loops share one socket per loop).
  const server = createServer({ min: 49100, max: 49149 }, { engine: 'tasks', logLevel: LOG_LEVEL, onLog: (r) => logs.push(r) })
  try {
    await run(t, server, logs, 'hostile-range', (sdps) => {
      const ports = candidatePorts(sdps)
      assert.equal(ports.length, 2, `one port for the upstream, one for the downstream: ${safeJson(ports)}`)
      return ports
    })
  } finally {
    await closeServer(server)
  }
})

test('single-port mode: the call survives garbage at the shared port', T, async (t) => {
  const logs = []
  const server = createServer(null, { udpPort: 0, logLevel: LOG_LEVEL, onLog: (r) => logs.push(r) })
  try {
    const { udpPort } = await server.stats()
    await run(t, server, logs, 'hostile-single', (sdps) => {
      assert.deepStrictEqual(candidatePorts(sdps), [udpPort], 'every candidate names the shared port')
      return [udpPort]
    })
  } finally {
    await closeServer(server)
  }
})
