// Media actually flows through the SFU: every check is made on the receiving client's own
// getStats() (inbound-rtp: framesDecoded / packetsReceived / totalSamplesReceived).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Client, createServer, closeServer, closeEverything, assertServerSdp, mediaSections,
  waitStatsEqual, statsOf, waitSteady, safeJson
} from './helpers.mjs'

// Each test gets its own server and its own slice of this file's port range 41000-41999.
let nextPort = 41000
function newServer () {
  const range = { min: nextPort, max: nextPort + 99 }
  nextPort += 100
  return createServer(range)
}

const T = { timeout: 90000 }

async function teardown (server, clients) {
  for (const c of clients) c.close()
  await closeServer(server)
}

/** Let media flow a little longer and check that it kept flowing (video frames, audio packets). */
async function assertKeepsFlowing (consumer, producerId, { video = true, audio = true } = {}) {
  const s0 = await consumer.inboundStats(producerId)
  if (video) await consumer.waitDecoding(producerId, { above: s0.video.framesDecoded + 10 })
  if (audio) await consumer.waitAudio(producerId, { above: s0.audio.packetsReceived + 10 })
}

test('two users: A produces audio+video, B decodes the video and receives the audio', T, async () => {
  const server = newServer()
  const room = 'media-two'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A', userInfo: { name: 'Alice' } })
    const added = await server.addUser(room, 'B', { userInfo: { name: 'Bob' } })
    assert.deepStrictEqual(added, { id: 'B', userInfo: { name: 'Bob' }, users: [{ id: 'A', userInfo: { name: 'Alice' } }] },
      'A is not producing yet, so addUser hands B no offer')

    const res = await A.produce({ audio: true, video: true })
    assertServerSdp(res.answer, 'answer', 'produce answer')
    assert.equal(res.id, 'A')
    assert.deepStrictEqual(res.userInfo, { name: 'Alice' })
    assert.deepStrictEqual(res.constraints, { audio: true, video: true }, 'constraints derived from the offer')
    assert.equal(res.outbound.length, 1, `outbound: ${safeJson(res.outbound)}`)
    const item = res.outbound[0]
    assert.equal(item.id, 'B')
    assert.deepStrictEqual(item.userInfo, { name: 'Bob' })
    assert.deepStrictEqual(item.constraints, { audio: true, video: true })
    assertServerSdp(item.offer, 'offer', 'downstream offer for B')
    const kinds = mediaSections(item.offer.sdp).filter((m) => m.port !== 0).map((m) => m.kind).sort()
    assert.deepStrictEqual(kinds, ['audio', 'video'], 'the downstream offer carries audio and video')

    // single-answer form of consume
    await B.consumeOne('A', item.offer)

    const s = await B.waitDecoding('A')
    assert.equal(s.video.frameWidth, 320, 'B decodes A\'s 320x240 video')
    await B.waitAudio('A')
    await assertKeepsFlowing(B, 'A')
    const stats = await statsOf(server)
    assert.deepStrictEqual(stats, { rooms: 1, users: 2, upstreamConnections: 1, downstreamConnections: 1, liveConnections: 2 })
  } finally {
    await teardown(server, [A, B])
  }
})

test('three users all producing, each consuming the other two: all six streams decode', T, async () => {
  const server = newServer()
  const room = 'media-three'
  const ids = ['A', 'B', 'C']
  const clients = Object.fromEntries(ids.map((id) => [id, new Client(server, room, id)]))
  try {
    await server.createRoom(room, {})
    for (const id of ids) await server.addUser(room, id, { userInfo: { id } })
    for (const id of ids) {
      const res = await clients[id].produce({ audio: true, video: true })
      assertServerSdp(res.answer, 'answer', `produce answer for ${id}`)
      assert.deepStrictEqual(res.outbound.map((o) => o.id).sort(), ids.filter((x) => x !== id),
        `${id}'s outbound names every other user`)
      for (const o of res.outbound) {
        assertServerSdp(o.offer, 'offer', `offer ${id}->${o.id}`)
        await clients[o.id].consumeAll([o], { from: id })
      }
    }
    const pairs = ids.flatMap((c) => ids.filter((p) => p !== c).map((p) => [c, p]))
    assert.equal(pairs.length, 6)
    await Promise.all(pairs.map(async ([c, p]) => {
      await clients[c].waitDecoding(p)
      await clients[c].waitAudio(p)
    }))
    await Promise.all(pairs.map(([c, p]) => assertKeepsFlowing(clients[c], p)))
    for (const [c, p] of pairs) {
      const s = await clients[c].inboundStats(p)
      assert.equal(s.video.frameWidth, 320, `${c} decodes ${p}'s video at 320 wide`)
    }
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 1, users: 3, upstreamConnections: 3, downstreamConnections: 6, liveConnections: 9 })
  } finally {
    await teardown(server, Object.values(clients))
  }
})

test('late joiner: addUser hands C an offer for the producing A; C decodes A quickly', T, async () => {
  const server = newServer()
  const room = 'media-late'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  const C = new Client(server, room, 'C')
  try {
    await server.createRoom(room, { userId: 'A', userInfo: { role: 'host' } })
    await server.addUser(room, 'B', { userInfo: { role: 'guest' } })
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')

    const added = await server.addUser(room, 'C', { userInfo: { role: 'late' } })
    assert.equal(added.id, 'C')
    assert.deepStrictEqual(added.userInfo, { role: 'late' })
    const users = [...added.users].sort((x, y) => x.id.localeCompare(y.id))
    assert.equal(users.length, 2, `users: ${safeJson(added.users)}`)
    const [a, b] = users
    assert.deepStrictEqual(Object.keys(a).sort(), ['constraints', 'id', 'offer', 'userInfo'])
    assert.equal(a.id, 'A')
    assert.deepStrictEqual(a.userInfo, { role: 'host' })
    assert.deepStrictEqual(a.constraints, { audio: true, video: true })
    assertServerSdp(a.offer, 'offer', 'late joiner offer')
    assert.deepStrictEqual(b, { id: 'B', userInfo: { role: 'guest' } }, 'B does not produce: no offer, no constraints')

    const answers = [await C.handleOffer('A', a.offer)]
    const t0 = performance.now()
    assert.deepStrictEqual(await server.consume(room, 'C', { answers }), { status: 'connected' })
    await C.waitDecoding('A', { timeout: 5000 })
    const ms = Math.round(performance.now() - t0)
    console.log(`late joiner: first decoded frame ${ms} ms after consume() resolved (target: under 2000 ms)`)
    await C.waitAudio('A')
    await assertKeepsFlowing(C, 'A')
    // B was not disturbed
    await assertKeepsFlowing(B, 'A')
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 1, users: 3, upstreamConnections: 1, downstreamConnections: 2, liveConnections: 3 })
  } finally {
    await teardown(server, [A, B, C])
  }
})

/** The packets the server has sent `consumerId` from `producerId`, per kind ({audio, video}). */
async function sentTo (server, room, consumerId, producerId) {
  const { connections } = await server.getStats(room, consumerId)
  const down = connections.find((c) => c.direction === 'downstream' && c.producerId === producerId)
  assert.ok(down, `no downstream ${producerId} -> ${consumerId} in the server's stats: ${safeJson(connections)}`)
  return Object.fromEntries(down.tracks.map((t) => [t.kind, t.packetsSent]))
}

// What stands still when a kind stops (video: frames decoded and packets; audio: packets), and
// what shows a kind flowing (frames decoded; audio packets).
const stillKey = { video: (s) => [s.video.framesDecoded, s.video.packetsReceived], audio: (s) => s.audio.packetsReceived }
const counter = { video: (s) => s.video.framesDecoded, audio: (s) => s.audio.packetsReceived }

/**
 * Once the server has applied a change that stops `kind` from `producerId` reaching `consumer`
 * (produce() with constraints resolved, or the renegotiation answered): the consumer's counter of
 * that kind (video frames and packets, audio packets) must stand still, and the other kind keep moving
 * over the same observation. The counter is polled until it has not moved for a second
 * (`waitSteady`, which fails if it never stops); returns the [first, last] samples of that second.
 */
async function stopsWhileOtherFlows (consumer, producerId, kind, what) {
  const other = kind === 'video' ? 'audio' : 'video'
  const { first, last } = await waitSteady(() => consumer.inboundStats(producerId), {
    key: stillKey[kind],
    message: `${what}: ${consumer.userId}'s ${kind} from ${producerId} kept moving`
  })
  assert.ok(counter[other](last) > counter[other](first),
    `${what}: ${other} must keep flowing while only ${kind} is stopped (${counter[other](first)} -> ${counter[other](last)})`)
  return [first, last]
}

test('constraints mute and unmute a producer\'s video (and audio) for its consumers', T, async () => {
  const server = newServer()
  const room = 'media-mute'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A', userInfo: { n: 1 } })
    await server.addUser(room, 'B', { userInfo: { n: 2 } })
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')
    await B.waitAudio('A')
    const pcB = B.downstreams.get('A')

    // --- video off
    const muted = await server.produce(room, 'A', { constraints: { audio: true, video: false } })
    assert.deepStrictEqual(muted, {
      id: 'A',
      userInfo: { n: 1 },
      constraints: { audio: true, video: false },
      outbound: [{ id: 'B', userInfo: { n: 2 }, constraints: { audio: true, video: false } }]
    }, 'constraints alone: no answer, outbound items without offer')
    const [, v2] = await stopsWhileOtherFlows(B, 'A', 'video', 'A\'s video muted')

    // --- video on again
    const unmuted = await server.produce(room, 'A', { constraints: { audio: true, video: true } })
    assert.deepStrictEqual(unmuted.constraints, { audio: true, video: true })
    assert.ok(!('answer' in unmuted), 'no answer without an offer')
    await B.waitDecoding('A', { above: v2.video.framesDecoded + 10, timeout: 15000 })

    // --- audio off
    const aMuted = await server.produce(room, 'A', { constraints: { audio: false, video: true } })
    assert.deepStrictEqual(aMuted.constraints, { audio: false, video: true })
    const [, a2] = await stopsWhileOtherFlows(B, 'A', 'audio', 'A\'s audio muted')

    // --- audio on again
    const aOn = await server.produce(room, 'A', { constraints: { audio: true, video: true } })
    assert.deepStrictEqual(aOn.constraints, { audio: true, video: true })
    await B.waitAudio('A', { above: a2.audio.packetsReceived + 10 })

    // the connections stayed up: same pc on the client, same counts on the server
    assert.equal(B.downstreams.get('A'), pcB)
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 1, users: 2, upstreamConnections: 1, downstreamConnections: 1, liveConnections: 2 })
  } finally {
    await teardown(server, [A, B])
  }
})

test('partial constraints ({video:false} alone) change only the kind they name', T, async () => {
  const server = newServer()
  const room = 'media-partial'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A' })
    await server.addUser(room, 'B', {})
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')
    const r1 = await server.produce(room, 'A', { constraints: { video: false } })
    assert.deepStrictEqual(r1.constraints, { audio: true, video: false }, '{video:false} keeps audio as it was')
    assert.deepStrictEqual(r1.outbound, [{ id: 'B', userInfo: {}, constraints: { audio: true, video: false } }])
    const r2 = await server.produce(room, 'A', { constraints: { audio: false } })
    assert.deepStrictEqual(r2.constraints, { audio: false, video: false }, '{audio:false} keeps video as it was')
    const r3 = await server.produce(room, 'A', { constraints: { video: true } })
    assert.deepStrictEqual(r3.constraints, { audio: false, video: true })
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 10 })
  } finally {
    await teardown(server, [A, B])
  }
})

test('re-produce on the same upstream pc renegotiates the same downstream pc (a+v -> audio only -> a+v)', T, async () => {
  const server = newServer()
  const room = 'media-reproduce'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A' })
    await server.addUser(room, 'B', {})
    const first = await A.produce({ audio: true, video: true })
    assert.deepStrictEqual(first.constraints, { audio: true, video: true })
    await B.consumeAll(first.outbound, { from: 'A' })
    await B.waitDecoding('A')
    const upA = A.upstream
    const pcB = B.downstreams.get('A')

    // --- audio only, same upstream pc
    const second = await A.reproduce({ audio: true, video: false })
    assert.equal(A.upstream, upA)
    assertServerSdp(second.answer, 'answer', 're-produce answer (audio only)')
    assert.deepStrictEqual(second.constraints, { audio: true, video: false }, 'constraints derived from an audio-only offer')
    assert.equal(second.outbound.length, 1)
    assert.equal(second.outbound[0].id, 'B')
    assert.deepStrictEqual(second.outbound[0].constraints, { audio: true, video: false })
    assertServerSdp(second.outbound[0].offer, 'offer', 'renegotiation offer for B (audio only)')
    await B.consumeAll(second.outbound, { from: 'A' })
    assert.equal(B.downstreams.get('A'), pcB, 'B reuses its downstream pc')
    assert.equal(pcB.signalingState, 'stable')
    // B's own report lists no inbound video once its video transceiver is inactive, so it cannot
    // show video stopping: the server's count of the video packets it sends B must stand still
    // (polled until it has not moved for a second, `waitSteady` fails if it keeps moving), while
    // its audio count grows over the same second and B keeps receiving audio.
    const sent = await waitSteady(() => sentTo(server, room, 'B', 'A'), {
      key: (k) => k.video ?? 0,
      message: 'the server kept sending B video after A went audio-only'
    })
    assert.ok(sent.last.audio > sent.first.audio,
      `audio keeps flowing after A went audio-only: the server sent B ${sent.first.audio} -> ${sent.last.audio} audio packets`)
    const s2 = await B.inboundStats('A')
    await B.waitAudio('A', { above: s2.audio.packetsReceived + 10 })

    // --- audio + video again, same upstream pc
    const third = await A.reproduce({ audio: true, video: true })
    assert.equal(A.upstream, upA)
    assertServerSdp(third.answer, 'answer', 're-produce answer (audio+video)')
    assert.deepStrictEqual(third.constraints, { audio: true, video: true })
    assert.equal(third.outbound.length, 1)
    const offer = third.outbound[0].offer
    assertServerSdp(offer, 'offer', 'renegotiation offer for B (audio+video)')
    const video = mediaSections(offer.sdp).filter((m) => m.kind === 'video' && m.port !== 0 &&
      (m.direction === 'sendonly' || m.direction === 'sendrecv'))
    assert.ok(video.length >= 1, 'the renegotiation offer sends video')
    await B.consumeAll(third.outbound, { from: 'A' })
    assert.equal(B.downstreams.get('A'), pcB, 'B reuses its downstream pc')
    assert.equal(pcB.signalingState, 'stable')
    await B.waitDecoding('A', { above: s2.video.framesDecoded + 10, timeout: 15000 })
    await B.waitAudio('A', { above: s2.audio.packetsReceived + 10 })

    // renegotiated, not replaced
    await waitStatsEqual(server, { rooms: 1, users: 2, upstreamConnections: 1, downstreamConnections: 1, liveConnections: 2 })
  } finally {
    await teardown(server, [A, B])
  }
})

after(closeEverything)
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
