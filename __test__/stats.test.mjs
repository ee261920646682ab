// Statistics: getStats(roomId, userId?) per connection, and the server-wide stats(), growing
// while media flows (checked against what the clients themselves count).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Client, createServer, closeServer, closeEverything, expectCode, safeJson, startCall, waitFor, waitStats, waitSteady
} from './helpers.mjs'

const T = { timeout: 90000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

const track = (conn, kind) => conn.tracks.find((t) => t.kind === kind)

test('getStats: per connection packets, bytes, bitrates, loss, jitter, RTT, feedback counts, candidate pair and codec', T, async () => {
  const server = createServer({ min: 48200, max: 48249 })
  const A = new Client(server, 'st', 'A')
  const B = new Client(server, 'st', 'B')
  try {
    await startCall(server, 'st', A, B)
    await B.waitDecoding('A', { above: 30 })
    await B.waitAudio('A')
    // Read once B's receiver reports have reached the server (loss and jitter of the downstream
    // come from them; before the first, packetsLost is null).
    const first = await waitFor(async () => {
      const stats = await server.getStats('st')
      const down = stats.connections.find((c) => c.direction === 'downstream')
      return down && track(down, 'video')?.packetsLost != null && track(down, 'audio')?.packetsLost != null ? stats : null
    }, { timeout: 15000, interval: 200, message: 'B\'s receiver reports reach the server' })
    const firstAt = Date.now()
    assert.equal(first.roomId, 'st')
    assert.deepStrictEqual(first.connections.map((c) => [c.direction, c.userId, c.producerId, c.state]),
      [['upstream', 'A', 'A', 'connected'], ['downstream', 'B', 'A', 'connected']], safeJson(first))
    const [up, down] = first.connections

    // Upstream: what the server receives from A.
    assert.deepStrictEqual(up.tracks.map((t) => [t.kind, t.codec]), [['audio', 'audio/opus'], ['video', 'video/VP8']])
    for (const t of up.tracks) {
      assert.ok(t.packetsReceived > 0 && t.bytesReceived > 0, `upstream ${t.kind} received nothing: ${safeJson(t)}`)
      assert.equal(typeof t.packetsLost, 'number')
      assert.equal(typeof t.jitter, 'number')
      for (const k of ['nackCount', 'pliCount', 'firCount']) assert.equal(typeof t[k], 'number', k)
    }
    assert.ok(track(up, 'video').pliCount >= 1, 'the server asked A for a keyframe when B subscribed')
    const pair = up.transport.selectedCandidatePair
    assert.ok(pair, `no selected candidate pair: ${safeJson(up.transport)}`)
    assert.equal(pair.local.address, '127.0.0.1')
    assert.equal(pair.local.protocol, 'udp')
    // pair.remote is null: webrtc-rs 0.21.1 keeps no stats of candidates that came in an SDP.
    assert.ok(up.transport.bytesReceived > 0 && up.transport.packetsReceived > 0)
    assert.ok(up.transport.bitrateReceived > 0, `upstream bitrate: ${safeJson(up.transport)}`)

    // Downstream: what the server sends B, and what B reports back.
    assert.deepStrictEqual(down.tracks.map((t) => [t.kind, t.codec]), [['audio', 'audio/opus'], ['video', 'video/VP8']])
    const video = track(down, 'video')
    const received = await B.inboundStats('A')
    assert.ok(video.packetsSent >= received.video.packetsReceived * 0.9,
      `the server sent ${video.packetsSent} video packets, B counts ${received.video.packetsReceived}`)
    assert.ok(video.packetsLost !== null && video.packetsLost >= 0, `B's receiver reports reached the server: ${safeJson(video)}`)
    assert.equal(typeof video.jitter, 'number')
    assert.ok(down.transport.bitrateSent > 100_000, `downstream bitrate ${down.transport.bitrateSent} bit/s`)

    // A second read later: counters grow, the bitrate is over the last window. Bitrates are
    // averaged since the previous read at least a second old, so the read that counts is one
    // made a second or more after `first`: polled until the counters have grown and that much
    // time has passed (media flowing at some 100 packets a second grows them at once).
    const grown = ([u, d]) => track(u, 'video').packetsReceived > track(up, 'video').packetsReceived &&
      track(d, 'video').packetsSent > video.packetsSent && track(d, 'audio').bytesSent > track(down, 'audio').bytesSent
    const second = await waitFor(async () => {
      const stats = await server.getStats('st')
      return Date.now() - firstAt >= 1000 && grown(stats.connections) ? stats : null
    }, { timeout: 10000, interval: 200, message: 'the counters grow' })
    const [, down2] = second.connections
    assert.ok(down2.transport.bitrateSent > 100_000, `downstream bitrate over the last window ${down2.transport.bitrateSent} bit/s`)

    // One user's connections: those whose other end is that user.
    const onlyB = await server.getStats('st', 'B')
    assert.deepStrictEqual(onlyB.connections.map((c) => [c.direction, c.userId]), [['downstream', 'B']])
    const onlyA = await server.getStats('st', 'A')
    assert.deepStrictEqual(onlyA.connections.map((c) => [c.direction, c.userId]), [['upstream', 'A']])

    await expectCode(server.getStats('nope'), 'ROOM_NOT_FOUND')
    await expectCode(server.getStats('st', 'nobody'), 'USER_NOT_FOUND')
    await expectCode(server.getStats('st', { id: 1 }), 'INVALID_ARGUMENT')
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})

test('stats(): forwarded packets and bytes grow while media flows, and stop growing when it stops', T, async () => {
  const server = createServer({ min: 48250, max: 48299 })
  const A = new Client(server, 'fw', 'A')
  const B = new Client(server, 'fw', 'B')
  try {
    const idle = await server.stats()
    assert.deepStrictEqual([idle.forwardedPackets, idle.forwardedBytes, idle.udpPort], [0, 0, null])
    await startCall(server, 'fw', A, B)
    const s1 = await server.stats()
    const s2 = await waitStats(server, (s) => s.forwardedPackets > s1.forwardedPackets + 50 && s.forwardedBytes > s1.forwardedBytes,
      { message: `forwarded packets grow past ${s1.forwardedPackets} + 50` })
    const received = await B.inboundStats('A')
    const got = received.video.packetsReceived + received.audio.packetsReceived
    assert.ok(s2.forwardedPackets >= got * 0.9, `forwarded ${s2.forwardedPackets}, B received ${got}`)

    await server.stopProduce('fw', 'A')
    // Once the server holds neither A's upstream nor B's downstream, nothing is left to forward:
    // the total must stop moving. Forwarders add their counts every 200 ms, so one last addition
    // may come after; a total that has not moved for a second (`waitSteady`, polling every
    // 500 ms) has stopped, and one that keeps moving fails the wait.
    await waitStats(server, (s) => s.upstreamConnections === 0 && s.downstreamConnections === 0,
      { message: 'A\'s upstream and B\'s downstream closed' })
    const { last: s4 } = await waitSteady(() => server.stats(), {
      key: (s) => [s.forwardedPackets, s.forwardedBytes],
      message: 'forwarding goes on after A stopped'
    })
    assert.ok(s4.forwardedPackets >= s2.forwardedPackets, 'the totals never go back')
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})
