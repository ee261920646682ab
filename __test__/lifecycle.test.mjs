// Response shapes of the lifecycle calls, and that the server really frees what they close
// (stats(), including liveConnections, and media that stops).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Client, createServer, closeServer, closeEverything, byId, deliver, expectCode, waitStatsEqual,
  statsOf, waitSteady
} from './helpers.mjs'

// Each test gets its own server and its own slice of this file's port range 42000-42999.
let nextPort = 42000
function newServer () {
  const range = { min: nextPort, max: nextPort + 99 }
  nextPort += 100
  return createServer(range)
}

const T = { timeout: 90000 }
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

/** A copy of a response with its `users` / `outbound` arrays sorted by id (the spec gives no order). */
function sorted (res) {
  const out = { ...res }
  if (Array.isArray(out.users)) out.users = byId(out.users)
  if (Array.isArray(out.outbound)) out.outbound = byId(out.outbound)
  return out
}

/**
 * Right after a call that closed connections: rooms, users, upstreamConnections and
 * downstreamConnections already show the new state; liveConnections (webrtc-rs objects
 * actually freed) may take a moment, so it is polled.
 */
async function expectStatsAfterClose (server, expected) {
  const now = await statsOf(server)
  const { liveConnections: _l1, ...nowCounts } = now
  const { liveConnections: _l2, ...expectedCounts } = expected
  assert.deepStrictEqual(nowCounts, expectedCounts, 'counts right after the call')
  await waitStatsEqual(server, expected)
}

async function teardown (server, clients) {
  for (const c of clients) c.close()
  await closeServer(server)
}

/**
 * `consumer` receives nothing more from `producerId`. Called once the server has shown the
 * connection gone (its stats count it neither open nor allocated) or close() has resolved: from
 * then on nothing can send on it, so the consumer's packet counts must stand still, after at most
 * the packets already in flight. They are polled until they have not moved for a second
 * (`waitSteady`); if media keeps arriving they never do, and this fails. The counts must still be
 * there and non-zero, so that a report that lost its inbound-rtp entries cannot pass for "stopped".
 */
async function assertMediaStopped (consumer, producerId, what) {
  const { last } = await waitSteady(() => consumer.inboundStats(producerId), {
    key: (s) => [s.video.packetsReceived, s.audio.packetsReceived],
    message: `${what}: packets from ${producerId} still arriving (video, audio)`
  })
  assert.ok(last.video.packetsReceived > 0 && last.audio.packetsReceived > 0,
    `${what}: the consumer's inbound stats are gone, not stopped: ${JSON.stringify(last)}`)
}

async function assertMediaFlows (consumer, producerId) {
  const s = await consumer.inboundStats(producerId)
  await consumer.waitDecoding(producerId, { above: s.video.framesDecoded + 5 })
  await consumer.waitAudio(producerId, { above: s.audio.packetsReceived + 5 })
}

test('createRoom: generated UUID v4 ids, numeric ids become strings, exact shapes', T, async () => {
  const server = newServer()
  try {
    const generated = [
      await server.createRoom(),
      await server.createRoom(null),
      await server.createRoom(undefined, {}),
      await server.createRoom(null, {})
    ]
    for (const r of generated) {
      assert.equal(typeof r.room_id, 'string')
      assert.match(r.room_id, UUID_V4, `generated room id ${r.room_id} is not a lowercase UUID v4`)
      assert.deepStrictEqual(r, { room_id: r.room_id, users: [] }, 'no user_id / userInfo when no user was created')
    }
    assert.equal(new Set(generated.map((r) => r.room_id)).size, generated.length, 'generated ids are distinct')

    assert.deepStrictEqual(await server.createRoom('plain', {}), { room_id: 'plain', users: [] })
    assert.deepStrictEqual(await server.createRoom(123), { room_id: '123', users: [] })
    assert.deepStrictEqual(
      await server.createRoom(124, { userId: 7, userInfo: { contactId: 11 } }),
      { room_id: '124', user_id: '7', users: [], userInfo: { contactId: 11 } })
    assert.deepStrictEqual(
      await server.createRoom('with-user', { userId: 'u1' }),
      { room_id: 'with-user', user_id: 'u1', users: [], userInfo: {} }, 'userInfo defaults to {}')
    const genWithUser = await server.createRoom(null, { userId: 'x', userInfo: [1, 2] })
    assert.match(genWithUser.room_id, UUID_V4)
    assert.deepStrictEqual(genWithUser, { room_id: genWithUser.room_id, user_id: 'x', users: [], userInfo: [1, 2] })

    // the numeric ids are the same rooms / users as their decimal strings
    await expectCode(server.createRoom('123'), 'ROOM_EXISTS')
    await expectCode(server.addUser(124, '7', {}), 'USER_EXISTS')
    assert.deepStrictEqual(await server.addUser('123', 5, {}), { id: '5', userInfo: {}, users: [] })

    assert.deepStrictEqual(await statsOf(server),
      { rooms: 9, users: 4, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
  } finally {
    await closeServer(server)
  }
})

test('addUser / removeUser: userInfo echoed untouched (any JSON value), default {}, numeric ids', T, async () => {
  const server = newServer()
  try {
    const info = {
      a: [1, 2, { b: null, c: 'ü ✓ 漢字 "q" \\ \n' }],
      n: -1.5,
      big: 1e21,
      t: true,
      f: false,
      nested: { deep: { deeper: [] } },
      empty: {}
    }
    await server.createRoom('r', { userId: 'first', userInfo: info })
    assert.deepStrictEqual(await server.addUser('r', 2), { id: '2', userInfo: {}, users: [{ id: 'first', userInfo: info }] },
      'no body: userInfo defaults to {}')
    assert.deepStrictEqual(sorted(await server.addUser('r', '3', {})),
      { id: '3', userInfo: {}, users: [{ id: '2', userInfo: {} }, { id: 'first', userInfo: info }] },
      'empty body: userInfo defaults to {}')
    assert.deepStrictEqual((await server.addUser('r', 'str', { userInfo: 'just a string' })).userInfo, 'just a string')
    assert.deepStrictEqual((await server.addUser('r', 'num', { userInfo: 42 })).userInfo, 42)
    const arr = await server.addUser('r', 'arr', { userInfo: [{ x: 1 }, 'y'] })
    assert.deepStrictEqual(sorted(arr), {
      id: 'arr',
      userInfo: [{ x: 1 }, 'y'],
      users: byId([
        { id: 'first', userInfo: info }, { id: '2', userInfo: {} }, { id: '3', userInfo: {} },
        { id: 'str', userInfo: 'just a string' }, { id: 'num', userInfo: 42 }
      ])
    })
    assert.deepStrictEqual(sorted(await server.removeUser('r', 'first')), {
      id: 'first',
      userInfo: info,
      outbound: byId([{ id: '2', userInfo: {} }, { id: '3', userInfo: {} }, { id: 'str', userInfo: 'just a string' },
        { id: 'num', userInfo: 42 }, { id: 'arr', userInfo: [{ x: 1 }, 'y'] }])
    })
    assert.deepStrictEqual(sorted(await server.removeUser('r', 2)), {
      id: '2',
      userInfo: {},
      outbound: byId([{ id: '3', userInfo: {} }, { id: 'str', userInfo: 'just a string' },
        { id: 'num', userInfo: 42 }, { id: 'arr', userInfo: [{ x: 1 }, 'y'] }])
    })
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 1, users: 4, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    assert.deepStrictEqual(await server.deleteRoom('r'), { count: 4 })
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    await expectCode(server.addUser('r', 'late', {}), 'ROOM_NOT_FOUND')
  } finally {
    await closeServer(server)
  }
})

test('stopProduce, removeUser, deleteRoom: exact shapes, connections closed and freed', T, async () => {
  const server = newServer()
  const room = 'life'
  const info = { A: { name: 'Ann' }, B: { name: 'Ben' }, C: { name: 'Cat', tags: ['x'] } }
  const cl = {
    A: new Client(server, room, 'A'),
    B: new Client(server, room, 'B'),
    C: new Client(server, room, 'C')
  }
  try {
    await server.createRoom(room, { userId: 'A', userInfo: info.A })
    await server.addUser(room, 'B', { userInfo: info.B })
    await server.addUser(room, 'C', { userInfo: info.C })
    for (const p of ['A', 'B']) {
      const res = await cl[p].produce({ audio: true, video: true })
      await deliver(res, cl)
    }
    // A->B, A->C, B->A, B->C
    const flows = [['B', 'A'], ['C', 'A'], ['A', 'B'], ['C', 'B']]
    await Promise.all(flows.map(([c, p]) => cl[c].waitDecoding(p)))
    assert.deepStrictEqual(await statsOf(server),
      { rooms: 1, users: 3, upstreamConnections: 2, downstreamConnections: 4, liveConnections: 6 })

    // --- stopProduce A: closes A's upstream and A->B, A->C
    const stopped = await server.stopProduce(room, 'A')
    assert.deepStrictEqual(sorted(stopped), {
      id: 'A',
      userInfo: info.A,
      constraints: { audio: false, video: false },
      outbound: [{ id: 'B', userInfo: info.B }, { id: 'C', userInfo: info.C }]
    })
    // (client pcs are still open: whatever closes now is closed by the server)
    await expectStatsAfterClose(server, { rooms: 1, users: 3, upstreamConnections: 1, downstreamConnections: 2, liveConnections: 3 })
    await assertMediaStopped(cl.B, 'A', 'B after stopProduce(A)')
    await assertMediaFlows(cl.A, 'B')
    await assertMediaFlows(cl.C, 'B')

    // --- removeUser C: closes B->C
    const removed = await server.removeUser(room, 'C')
    assert.deepStrictEqual(sorted(removed), {
      id: 'C',
      userInfo: info.C,
      outbound: [{ id: 'A', userInfo: info.A }, { id: 'B', userInfo: info.B }]
    })
    await expectStatsAfterClose(server, { rooms: 1, users: 2, upstreamConnections: 1, downstreamConnections: 1, liveConnections: 2 })
    await assertMediaStopped(cl.C, 'B', 'C after removeUser(C)')
    await assertMediaFlows(cl.A, 'B')

    // --- deleteRoom: closes everything left
    assert.deepStrictEqual(await server.deleteRoom(room), { count: 2 })
    await expectStatsAfterClose(server, { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    await assertMediaStopped(cl.A, 'B', 'A after deleteRoom')
    await expectCode(server.addUser(room, 'D', {}), 'ROOM_NOT_FOUND')
    await expectCode(server.deleteRoom(room), 'ROOM_NOT_FOUND')
  } finally {
    await teardown(server, Object.values(cl))
  }
})

test('removeUser of a producer closes its downstreams; the last user out deletes the room', T, async () => {
  const server = newServer()
  const room = 'last-out'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A', userInfo: { a: 1 } })
    await server.addUser(room, 'B', { userInfo: { b: 2 } })
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')

    assert.deepStrictEqual(await server.removeUser(room, 'A'), { id: 'A', userInfo: { a: 1 }, outbound: [{ id: 'B', userInfo: { b: 2 } }] })
    await expectStatsAfterClose(server, { rooms: 1, users: 1, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    await assertMediaStopped(B, 'A', 'B after removeUser(A)')

    assert.deepStrictEqual(await server.removeUser(room, 'B'), { id: 'B', userInfo: { b: 2 }, outbound: [] })
    assert.deepStrictEqual(await statsOf(server), { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    await expectCode(server.addUser(room, 'C', {}), 'ROOM_NOT_FOUND')
    await expectCode(server.deleteRoom(room), 'ROOM_NOT_FOUND')
    // the id is free again
    assert.deepStrictEqual(await server.createRoom(room, {}), { room_id: room, users: [] })
  } finally {
    await teardown(server, [A, B])
  }
})

test('close(): resolves with live connections; afterwards every call rejects with SERVER_CLOSED', T, async () => {
  const server = newServer()
  const room = 'closing'
  const A = new Client(server, room, 'A')
  const B = new Client(server, room, 'B')
  try {
    await server.createRoom(room, { userId: 'A' })
    await server.addUser(room, 'B', {})
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')

    await server.close()
    await assertMediaStopped(B, 'A', 'B after server.close()')
    const calls = {
      stats: () => server.stats(),
      createRoom: () => server.createRoom('new', {}),
      addUser: () => server.addUser(room, 'C', {}),
      produce: () => server.produce(room, 'A', { constraints: { audio: true, video: false } }),
      consume: () => server.consume(room, 'B', { id: 'A', answer: { type: 'answer', sdp: B.downstreams.get('A').localDescription.sdp } }),
      stopProduce: () => server.stopProduce(room, 'A'),
      removeUser: () => server.removeUser(room, 'B'),
      deleteRoom: () => server.deleteRoom(room)
    }
    const wrong = []
    for (const [name, call] of Object.entries(calls)) {
      try { await expectCode(call(), 'SERVER_CLOSED', { what: `${name} after close()` }) } catch (err) { wrong.push(err.message) }
    }
    assert.deepStrictEqual(wrong, [], 'calls after close() that did not reject with SERVER_CLOSED')
  } finally {
    await teardown(server, [A, B])
  }
})

after(closeEverything)
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
