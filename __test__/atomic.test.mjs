// A failed call changes nothing, proven by the room's whole state (getRoom) and by media still
// decoding at the consumers that had it; ids of any characters never reach SDP text; every
// error of a synchronous call carries a code. Real libwebrtc peers throughout.

import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import {
  Client, createServer, closeServer, closeEverything, createSource, expectCode, waitFor, mediaSections, wrtc, loadAddon
} from './helpers.mjs'

let nextPort = 44000
function newServer (extra = {}) {
  const range = { min: nextPort, max: nextPort + 39 }
  nextPort += 40
  assert.ok(nextPort <= 44990)
  return createServer(range, extra)
}

const T = { timeout: 120000 }
let source
before(() => { source = createSource() })
after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** The room as the server holds it, with connection states left out (they move on their own). */
async function roomState (server, roomId) {
  const room = await server.getRoom(roomId)
  return {
    ...room,
    users: room.users.map((u) => ({ ...u, producer: u.producer && { ...u.producer, state: undefined } })),
    consumers: room.consumers.map((c) => ({ ...c, state: undefined }))
  }
}

/** Wait until `client` decodes more frames from `producer` than it had: media still flows. */
async function stillDecodes (client, producer) {
  const { video } = await client.inboundStats(producer)
  await client.waitDecoding(producer, { above: video.framesDecoded + 10 })
}

/** Drops the media sections of `kind` from an SDP (an answer made for a different offer). */
function withoutSection (sdp, kind) {
  const parts = sdp.split(/\r\n(?=m=)/)
  return parts.filter((p) => !p.startsWith(`m=${kind} `)).join('\r\n')
}

const HOSTILE_IDS = [
  'John Smith',
  'line\r\nbreak',
  'x\r\na=candidate:1 1 udp 1 6.6.6.6 6 typ host',
  '"quoted" \'single\' <tag> `tick`',
  'Ünïcødé 名前 🎥',
  'z'.repeat(256),
  '42'
]

test('ids of any characters the spec allows: each produces and consumes, media decodes, no id reaches the SDP', T, async () => {
  const server = newServer()
  for (let i = 0; i < HOSTILE_IDS.length; i++) {
    const producerId = HOSTILE_IDS[i]
    const consumerId = HOSTILE_IDS[(i + 1) % HOSTILE_IDS.length]
    const room = `hostile-${i}`
    const producer = new Client(server, room, producerId, { source })
    const consumer = new Client(server, room, consumerId)
    await server.createRoom(room, { userId: producerId === '42' ? 42 : producerId })
    await server.addUser(room, consumerId === '42' ? 42 : consumerId)
    const res = await producer.produce({ audio: true, video: true })
    assert.equal(res.id, producerId)
    const offer = res.outbound.find((o) => o.id === consumerId)?.offer
    assert.ok(offer, `an offer for ${JSON.stringify(consumerId)}`)
    for (const id of [producerId, consumerId].filter((id) => id !== '42')) {
      for (const piece of id.split(/\r\n/).filter((p) => p.length >= 6)) assert.ok(!offer.sdp.includes(piece), `${JSON.stringify(piece)} is in the offer`)
      assert.ok(!res.answer.sdp.includes(id), `${JSON.stringify(id)} is in the answer`)
    }
    assert.ok(!/6\.6\.6\.6/.test(offer.sdp))
    await consumer.consumeAll(res.outbound, { from: producerId })
    await consumer.waitDecoding(producerId)
    await consumer.waitAudio(producerId)
    const view = await server.getRoom(room)
    assert.deepEqual(view.users.map((u) => u.id), [producerId, consumerId])
    producer.close()
    consumer.close()
    await server.deleteRoom(room)
  }
  await closeServer(server)
})

test('a re-produce that fails at maxConnections changes nothing: same room, same offers, media still flows', T, async () => {
  // P produces; C1 consumes (2 connections); C2's offer times out (closed); C3 joins and holds
  // an offer (3). P re-produces: it needs a new downstream for C2, a fourth connection.
  const server = newServer({ maxConnections: 3, offerTimeoutMs: 1500 })
  const room = 'reproduce-limit'
  const p = new Client(server, room, 'p', { source })
  const c1 = new Client(server, room, 'c1')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c1')
  await server.addUser(room, 'c2')
  const timedOut = new Promise((resolve) => server.on('offertimeout', (e) => { if (e.userId === 'c2') resolve(e) }))
  const res = await p.produce({ audio: true, video: true })
  await c1.consumeAll(res.outbound, { from: 'p' })
  await c1.waitDecoding('p')
  await timedOut
  await waitFor(async () => (await server.getRoom(room)).consumers.length === 1, { message: 'c2 downstream closed' })
  const joined = await server.addUser(room, 'c3')
  assert.ok(joined.users.find((u) => u.id === 'p').offer, 'c3 got an offer')

  const before = await roomState(server, room)
  const statsBefore = await server.stats()
  assert.equal(statsBefore.upstreamConnections + statsBefore.downstreamConnections, 3)
  await expectCode(p.reproduce({ audio: true, video: true }), 'RESOURCE_EXHAUSTED')
  assert.deepStrictEqual(await roomState(server, room), before, 'the failed re-produce changed the room')
  const statsAfter = await server.stats()
  assert.equal(statsAfter.downstreamConnections, statsBefore.downstreamConnections)
  await stillDecodes(c1, 'p')
  // C3 can still answer the offer it was given.
  const c3 = new Client(server, room, 'c3')
  await c3.consumeAll(joined.users)
  await c3.waitDecoding('p')
})

test('consume with answers[]: one answer with fewer m-lines fails the whole call, both offers stay pending', T, async () => {
  const server = newServer()
  const room = 'batch'
  const p1 = new Client(server, room, 'p1', { source })
  const p2 = new Client(server, room, 'p2', { source })
  const c = new Client(server, room, 'c')
  await server.createRoom(room, { userId: 'p1' })
  await server.addUser(room, 'p2')
  await p1.produce()
  await p2.produce()
  const joined = await server.addUser(room, 'c')
  const offers = joined.users.filter((u) => u.offer)
  assert.equal(offers.length, 2)
  const answers = await Promise.all(offers.map((u) => c.handleOffer(u.id, u.offer)))
  const before = await roomState(server, room)
  assert.ok(before.consumers.filter((x) => x.userId === 'c').every((x) => x.pendingOffer))
  const bad = answers.map((a, i) => i === 1 ? { id: a.id, answer: { type: 'answer', sdp: withoutSection(a.answer.sdp, 'video') } } : a)
  assert.equal(mediaSections(bad[1].answer.sdp).length, mediaSections(answers[1].answer.sdp).length - 1)
  await expectCode(server.consume(room, 'c', { answers: bad }), 'INVALID_SDP')
  assert.deepStrictEqual(await roomState(server, room), before, 'the failed consume changed the room')
  assert.deepEqual(await server.consume(room, 'c', { answers }), { status: 'connected' })
  await c.waitDecoding('p1')
  await c.waitDecoding('p2')
  const after = await server.getRoom(room)
  assert.ok(after.consumers.filter((x) => x.userId === 'c').every((x) => !x.pendingOffer))
})

test('an answer made for a different offer (fewer or more m-lines) is INVALID_SDP and the offer stays pending', T, async () => {
  const server = newServer()
  const room = 'mismatch'
  const p = new Client(server, room, 'p', { source })
  const c = new Client(server, room, 'c')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  const res = await p.produce()
  const offer = res.outbound.find((o) => o.id === 'c').offer
  const { answer } = await c.handleOffer('p', offer)
  const before = await roomState(server, room)
  // Fewer: the video section left out.
  await expectCode(server.consume(room, 'c', { id: 'p', answer: { type: 'answer', sdp: withoutSection(answer.sdp, 'video') } }), 'INVALID_SDP')
  assert.deepStrictEqual(await roomState(server, room), before)
  // More: a real answer of libwebrtc to an offer with one more section (a data channel).
  const other = new wrtc.RTCPeerConnection()
  const otherAnswerer = new wrtc.RTCPeerConnection()
  try {
    other.addTransceiver('audio', { direction: 'sendonly' })
    other.addTransceiver('video', { direction: 'sendonly' })
    other.createDataChannel('x')
    await other.setLocalDescription(await other.createOffer())
    await otherAnswerer.setRemoteDescription(other.localDescription)
    await otherAnswerer.setLocalDescription(await otherAnswerer.createAnswer())
    const more = otherAnswerer.localDescription.sdp
    assert.equal(mediaSections(more).length, mediaSections(offer.sdp).length + 1)
    await expectCode(server.consume(room, 'c', { id: 'p', answer: { type: 'answer', sdp: more } }), 'INVALID_SDP')
  } finally {
    other.close()
    otherAnswerer.close()
  }
  assert.deepStrictEqual(await roomState(server, room), before)
  const view = await server.getRoom(room)
  assert.equal(view.consumers[0].state === 'connected', false, 'the downstream did not move on')
  // The right answer still works.
  assert.deepEqual(await server.consume(room, 'c', { id: 'p', answer }), { status: 'connected' })
  await c.waitDecoding('p')
})

test('ids and options are read as the spec says: NaN, Infinity, Dates and toJSON objects are not ids', T, async () => {
  const server = newServer()
  const before = await server.stats()
  for (const id of [NaN, Infinity, -Infinity, 1e309, new Date(), { toJSON: () => 'r' }, true, [], 10n, Symbol('s')]) {
    await expectCode(server.createRoom(id), 'INVALID_ARGUMENT', { what: `createRoom(${String(id?.toString?.() ?? typeof id)})` })
  }
  await expectCode(server.createRoom('r', { userId: NaN }), 'INVALID_ARGUMENT')
  await expectCode(server.createRoom('r', { userInfo: { a: 1 } }), 'INVALID_ARGUMENT', { what: 'userInfo without userId' })
  await expectCode(server.createRoom('r', { userId: 'u', userInfo: 'x'.repeat(17000) }), 'INVALID_ARGUMENT', { what: 'userInfo over 16 KiB' })
  assert.deepStrictEqual(await server.stats(), before)
  await server.createRoom('r', { userId: 'u', userInfo: 'x'.repeat(16000) })
  await expectCode(server.addUser('r', 'v', { userInfo: { big: 'x'.repeat(16384) } }), 'INVALID_ARGUMENT')
  assert.deepEqual((await server.getRoom('r')).users.map((u) => u.id), ['u'])
  const { MediaServer } = loadAddon()
  for (const options of [{ maxRooms: NaN }, { offerTimeoutMs: 1e309 }, { maxUserInfoBytes: -1 },
    { get onLog () { throw new Error('hostile getter') } }, { toJSON () { throw new Error('hostile toJSON') } }]) {
    Object.defineProperty(options, 'listenIp', { value: '127.0.0.1', enumerable: true })
    assert.throws(() => new MediaServer(options), (err) => err.code === 'INVALID_ARGUMENT', `options ${Object.keys(options)}`)
  }
  const small = new MediaServer({ listenIp: '127.0.0.1', maxUserInfoBytes: 10 })
  await expectCode(small.createRoom('s', { userId: 'u', userInfo: 'x'.repeat(20) }), 'INVALID_ARGUMENT')
  await small.close()
  for (const [event, listener] of [[5, () => {}], ['roomclosed', 5], ['nope', () => {}], [undefined, undefined]]) {
    assert.throws(() => server.on(event, listener), (err) => err.code === 'INVALID_ARGUMENT')
    assert.throws(() => server.off(event, listener), (err) => err.code === 'INVALID_ARGUMENT')
  }
  await server.close()
  await expectCode(server.close(), 'SERVER_CLOSED', { what: 'a second close()' })
})
