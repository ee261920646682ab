// Every error code a call can produce, each provoked on purpose, and each time a check that
// the failed call changed nothing (stats() unchanged, and a follow-up call sees the old state).

import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import {
  Client, createServer, closeServer, closeEverything, createSource, expectCode, makeOffer,
  makeAnswer, withMadeUpCodec, waitStatsEqual, sleep
} from './helpers.mjs'

// Each test gets its own server and its own slice of this file's port range 43000-43999
// (43990 and 43991 are the one-port servers of the RESOURCE_EXHAUSTED tests).
let nextPort = 43000
function newServer () {
  const range = { min: nextPort, max: nextPort + 49 }
  nextPort += 50
  assert.ok(nextPort <= 43900)
  return createServer(range)
}

const T = { timeout: 90000 }
let source // one synthetic camera+microphone for the whole file
before(() => { source = createSource() })

async function teardown (server, clients = []) {
  for (const c of clients) c.close()
  await closeServer(server)
}

/** stats() must still be `before` (exactly). */
/** stats() but the forwarding totals, which move on their own while media flows. */
function holdings ({ forwardedPackets, forwardedBytes, ...rest }) {
  return rest
}

async function assertUnchanged (server, before, what) {
  assert.deepStrictEqual(holdings(await server.stats()), holdings(before), `${what}: the failed call changed stats()`)
}

/** Room with A producing audio+video and B consuming it (media flowing). */
async function producingPair (server, room) {
  const A = new Client(server, room, 'A', { source })
  const B = new Client(server, room, 'B', { source })
  await server.createRoom(room, { userId: 'A', userInfo: { a: true } })
  await server.addUser(room, 'B', { userInfo: { b: true } })
  const res = await A.produce({ audio: true, video: true })
  await B.consumeAll(res.outbound, { from: 'A' })
  await B.waitDecoding('A')
  return { A, B }
}

// ---------------------------------------------------------------------------------------
// INVALID_ARGUMENT

test('INVALID_ARGUMENT: ids and bodies of the wrong type', T, async () => {
  const server = newServer()
  try {
    await server.createRoom('r', { userId: 'A' })
    const before = await server.stats()
    for (const badId of [{}, { id: 'x' }, [], ['r2'], true]) {
      await expectCode(server.createRoom(badId, {}), 'INVALID_ARGUMENT', { what: `createRoom(${JSON.stringify(badId)})` })
    }
    for (const badBody of ['not an object', 42, true]) {
      await expectCode(server.createRoom('r2', badBody), 'INVALID_ARGUMENT', { what: `createRoom('r2', ${JSON.stringify(badBody)})` })
    }
    await expectCode(server.createRoom('r2', { userId: {} }), 'INVALID_ARGUMENT', { what: 'createRoom with userId {}' })
    await expectCode(server.addUser('r', {}, {}), 'INVALID_ARGUMENT', { what: 'addUser with userId {}' })
    await expectCode(server.addUser('r', ['B'], {}), 'INVALID_ARGUMENT', { what: 'addUser with userId [B]' })
    await expectCode(server.addUser({}, 'B', {}), 'INVALID_ARGUMENT', { what: 'addUser with roomId {}' })
    await expectCode(server.addUser('r', 'B', 'not an object'), 'INVALID_ARGUMENT', { what: 'addUser with a string body' })
    await expectCode(server.addUser('r', 'B', 7), 'INVALID_ARGUMENT', { what: 'addUser with a number body' })
    await expectCode(server.deleteRoom({}), 'INVALID_ARGUMENT', { what: 'deleteRoom({})' })
    await expectCode(server.removeUser('r', { id: 'A' }), 'INVALID_ARGUMENT', { what: 'removeUser with userId object' })
    await assertUnchanged(server, before, 'INVALID_ARGUMENT')
    // nothing half-created: r2 does not exist, B is not in r, A still is
    await expectCode(server.deleteRoom('r2'), 'ROOM_NOT_FOUND')
    assert.deepStrictEqual(await server.addUser('r', 'B', {}), { id: 'B', userInfo: {}, users: [{ id: 'A', userInfo: {} }] })
  } finally {
    await teardown(server)
  }
})

test('INVALID_ARGUMENT: produce with neither offer nor constraints, consume with neither id/answer nor answers', T, async () => {
  const server = newServer()
  let A, B
  try {
    ({ A, B } = await producingPair(server, 'r'))
    await server.addUser('r', 'C', {})
    const before = await server.stats()
    // produce: B (not producing) and A (producing) alike
    for (const u of ['A', 'B']) {
      await expectCode(server.produce('r', u, {}), 'INVALID_ARGUMENT', { what: `produce(${u}, {})` })
      await expectCode(server.produce('r', u, 'offer'), 'INVALID_ARGUMENT', { what: `produce(${u}, 'offer')` })
    }
    // consume: C has nothing pending; B has consumed; neither form given
    for (const u of ['B', 'C']) {
      await expectCode(server.consume('r', u, {}), 'INVALID_ARGUMENT', { what: `consume(${u}, {})` })
      await expectCode(server.consume('r', u, { id: 'A' }), 'INVALID_ARGUMENT', { what: `consume(${u}, {id}) without answer` })
      await expectCode(server.consume('r', u, 'answer'), 'INVALID_ARGUMENT', { what: `consume(${u}, 'answer')` })
    }
    await assertUnchanged(server, before, 'INVALID_ARGUMENT on produce/consume')
    // B still not producing, A still producing and B still decoding
    await expectCode(server.stopProduce('r', 'B'), 'NOT_PRODUCING')
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 5 })
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

test('INVALID_ARGUMENT on consume leaves the pending offer pending', T, async () => {
  const server = newServer()
  const A = new Client(server, 'r', 'A', { source })
  const B = new Client(server, 'r', 'B', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await server.addUser('r', 'B', {})
    const res = await A.produce({ audio: true, video: true })
    const before = await server.stats()
    await expectCode(server.consume('r', 'B', {}), 'INVALID_ARGUMENT')
    await expectCode(server.consume('r', 'B', { answers: 'nope' }), 'INVALID_ARGUMENT')
    await assertUnchanged(server, before, 'INVALID_ARGUMENT on consume')
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')
  } finally {
    await teardown(server, [A, B])
  }
})

// ---------------------------------------------------------------------------------------
// INVALID_SDP

test('INVALID_SDP: produce with garbage, a wrong type, an SDP over 64 KiB, no usable codec', T, async () => {
  const server = newServer()
  const A = new Client(server, 'r', 'A', { source })
  const B = new Client(server, 'r', 'B', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await server.addUser('r', 'B', {})
    const good = await makeOffer(source)
    // over 64 KiB: a valid offer padded with session-level attributes
    const pad = Array.from({ length: 70 }, (_, i) => `a=x-padding-${i}:${'x'.repeat(1000)}`).join('\r\n')
    const huge = good.sdp.replace(/\r\nm=/, `\r\n${pad}\r\nm=`)
    assert.ok(huge.length > 65536 && huge.length < 80000, `huge SDP is ${huge.length} chars`)
    const noCodec = withMadeUpCodec(good.sdp)
    assert.doesNotMatch(noCodec, /opus|VP8|VP9|AV1/i)

    const bad = {
      garbage: { offer: { type: 'offer', sdp: 'this is not an SDP at all' } },
      'empty sdp': { offer: { type: 'offer', sdp: '' } },
      'type answer': { offer: { type: 'answer', sdp: good.sdp } },
      'type pranswer': { offer: { type: 'pranswer', sdp: good.sdp } },
      'over 64 KiB': { offer: { type: 'offer', sdp: huge } },
      'only a made-up codec': { offer: { type: 'offer', sdp: noCodec } },
      'only a made-up codec, with constraints': { offer: { type: 'offer', sdp: noCodec }, constraints: { audio: true, video: true } }
    }
    const before = await server.stats()
    assert.equal(before.upstreamConnections, 0)
    for (const [what, body] of Object.entries(bad)) {
      await expectCode(server.produce('r', 'A', body), 'INVALID_SDP', { what: `produce: ${what}` })
      await assertUnchanged(server, before, `produce: ${what}`)
      await expectCode(server.stopProduce('r', 'A'), 'NOT_PRODUCING', { what: `after produce: ${what}, A must not be producing` })
    }
    // liveConnections too: nothing was left behind, even for a moment later
    await sleep(500)
    await assertUnchanged(server, before, 'INVALID_SDP (after a moment)')
    // just under the limit is fine (the limit is not lower than 64 KiB)
    const underPad = pad.split('\r\n').slice(0, Math.floor((60000 - good.sdp.length) / 1020)).join('\r\n')
    const under = good.sdp.replace(/\r\nm=/, `\r\n${underPad}\r\nm=`)
    assert.ok(under.length > 58000 && under.length <= 60000, `padded SDP is ${under.length} chars`)
    const accepted = await server.produce('r', 'A', { offer: { type: 'offer', sdp: under } })
    assert.equal(accepted.answer.type, 'answer', 'a 60 KB offer is accepted')
    await server.stopProduce('r', 'A')
    await waitStatsEqual(server, { rooms: 1, users: 2, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    // a valid offer of the same user is accepted afterwards and B can consume it
    const res = await A.produce({ audio: true, video: true })
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')
  } finally {
    await teardown(server, [A, B])
  }
})

test('INVALID_SDP: produce with a bad offer while producing keeps the running stream', T, async () => {
  const server = newServer()
  let A, B
  try {
    ({ A, B } = await producingPair(server, 'r'))
    const before = await server.stats()
    await expectCode(server.produce('r', 'A', { offer: { type: 'offer', sdp: 'v=0\r\ngarbage' } }), 'INVALID_SDP')
    await expectCode(server.produce('r', 'A', { offer: { type: 'answer', sdp: A.upstream.localDescription.sdp } }), 'INVALID_SDP')
    await assertUnchanged(server, before, 'INVALID_SDP while producing')
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 10 })
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

test('INVALID_SDP: consume with garbage or a wrong type leaves the offer pending', T, async () => {
  const server = newServer()
  const A = new Client(server, 'r', 'A', { source })
  const B = new Client(server, 'r', 'B', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await server.addUser('r', 'B', {})
    const res = await A.produce({ audio: true, video: true })
    const { answer } = await B.handleOffer('A', res.outbound[0].offer)
    const before = await server.stats()
    await expectCode(server.consume('r', 'B', { id: 'A', answer: { type: 'answer', sdp: 'not an sdp' } }), 'INVALID_SDP', { what: 'garbage answer' })
    await expectCode(server.consume('r', 'B', { id: 'A', answer: { type: 'offer', sdp: answer.sdp } }), 'INVALID_SDP', { what: 'answer with type offer' })
    await expectCode(server.consume('r', 'B', { answers: [{ id: 'A', answer: { type: 'answer', sdp: 'x' } }] }), 'INVALID_SDP', { what: 'garbage in answers[]' })
    await assertUnchanged(server, before, 'INVALID_SDP on consume')
    // the offer is still pending: the real answer is accepted and media flows
    assert.deepStrictEqual(await server.consume('r', 'B', { id: 'A', answer }), { status: 'connected' })
    await B.waitDecoding('A')
  } finally {
    await teardown(server, [A, B])
  }
})

// ---------------------------------------------------------------------------------------
// ROOM_NOT_FOUND / USER_NOT_FOUND

test('ROOM_NOT_FOUND: every room-scoped call on a missing room', T, async () => {
  const server = newServer()
  try {
    await server.createRoom('exists', { userId: 'A' })
    const offer = await makeOffer(source)
    const answer = await makeAnswer(source)
    const before = await server.stats()
    const calls = {
      addUser: () => server.addUser('nope', 'A', {}),
      produce: () => server.produce('nope', 'A', { offer }),
      'produce (constraints)': () => server.produce('nope', 'A', { constraints: { audio: true, video: true } }),
      consume: () => server.consume('nope', 'A', { id: 'B', answer }),
      stopProduce: () => server.stopProduce('nope', 'A'),
      removeUser: () => server.removeUser('nope', 'A'),
      deleteRoom: () => server.deleteRoom('nope'),
      'deleteRoom (numeric)': () => server.deleteRoom(404)
    }
    for (const [name, call] of Object.entries(calls)) {
      await expectCode(call(), 'ROOM_NOT_FOUND', { what: name })
    }
    await assertUnchanged(server, before, 'ROOM_NOT_FOUND')
    // addUser did not create the room
    assert.deepStrictEqual(await server.createRoom('nope', {}), { room_id: 'nope', users: [] })
  } finally {
    await teardown(server)
  }
})

test('USER_NOT_FOUND: every user-scoped call for a user not in the room', T, async () => {
  const server = newServer()
  let A, B
  try {
    ({ A, B } = await producingPair(server, 'r'))
    await server.createRoom('other', { userId: 'ghost' }) // in another room only
    const offer = await makeOffer(source)
    const answer = await makeAnswer(source)
    const before = await server.stats()
    for (const ghost of ['ghost', 'nobody']) {
      const calls = {
        produce: () => server.produce('r', ghost, { offer }),
        'produce (constraints)': () => server.produce('r', ghost, { constraints: { audio: false, video: true } }),
        consume: () => server.consume('r', ghost, { id: 'A', answer }),
        stopProduce: () => server.stopProduce('r', ghost),
        removeUser: () => server.removeUser('r', ghost)
      }
      for (const [name, call] of Object.entries(calls)) {
        await expectCode(call(), 'USER_NOT_FOUND', { what: `${name} for ${ghost}` })
      }
    }
    await assertUnchanged(server, before, 'USER_NOT_FOUND')
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 5 })
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

// ---------------------------------------------------------------------------------------
// ROOM_EXISTS / USER_EXISTS

test('ROOM_EXISTS: an existing room id (also given as a number) is refused and the room is kept', T, async () => {
  const server = newServer()
  try {
    await server.createRoom('dup', { userId: 'owner', userInfo: { keep: 1 } })
    await server.createRoom(5, {})
    const before = await server.stats()
    await expectCode(server.createRoom('dup', {}), 'ROOM_EXISTS')
    await expectCode(server.createRoom('dup', { userId: 'intruder', userInfo: { x: 1 } }), 'ROOM_EXISTS')
    await expectCode(server.createRoom('5'), 'ROOM_EXISTS')
    await expectCode(server.createRoom(5, { userId: 'z' }), 'ROOM_EXISTS')
    await assertUnchanged(server, before, 'ROOM_EXISTS')
    // the original room is intact: owner still there with its userInfo, intruder not added
    assert.deepStrictEqual(await server.addUser('dup', 'intruder', {}), { id: 'intruder', userInfo: {}, users: [{ id: 'owner', userInfo: { keep: 1 } }] })
    assert.deepStrictEqual(await server.deleteRoom('dup'), { count: 2 })
    assert.deepStrictEqual(await server.deleteRoom('5'), { count: 0 })
  } finally {
    await teardown(server)
  }
})

test('USER_EXISTS: an existing user id (also given as a number) is refused, userInfo not overwritten', T, async () => {
  const server = newServer()
  try {
    await server.createRoom('r', { userId: '1', userInfo: { original: true } })
    await server.addUser('r', 'B', { userInfo: { b: 1 } })
    const before = await server.stats()
    await expectCode(server.addUser('r', '1', { userInfo: { replaced: true } }), 'USER_EXISTS')
    await expectCode(server.addUser('r', 1, {}), 'USER_EXISTS')
    await expectCode(server.addUser('r', 'B'), 'USER_EXISTS')
    await assertUnchanged(server, before, 'USER_EXISTS')
    assert.deepStrictEqual(await server.removeUser('r', 1), { id: '1', userInfo: { original: true }, outbound: [{ id: 'B', userInfo: { b: 1 } }] })
  } finally {
    await teardown(server)
  }
})

test('USER_EXISTS while the existing user produces: its stream is untouched', T, async () => {
  const server = newServer()
  let A, B
  try {
    ({ A, B } = await producingPair(server, 'r'))
    const before = await server.stats()
    await expectCode(server.addUser('r', 'A', {}), 'USER_EXISTS')
    await expectCode(server.addUser('r', 'B', {}), 'USER_EXISTS')
    await assertUnchanged(server, before, 'USER_EXISTS')
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 10 })
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

// ---------------------------------------------------------------------------------------
// NOT_PRODUCING

test('NOT_PRODUCING: constraints alone or stopProduce for a user who is not producing', T, async () => {
  const server = newServer()
  let A, B
  try {
    ({ A, B } = await producingPair(server, 'r'))
    const before = await server.stats()
    await expectCode(server.produce('r', 'B', { constraints: { audio: true, video: true } }), 'NOT_PRODUCING')
    await expectCode(server.produce('r', 'B', { constraints: { audio: false, video: false } }), 'NOT_PRODUCING')
    await expectCode(server.stopProduce('r', 'B'), 'NOT_PRODUCING')
    await assertUnchanged(server, before, 'NOT_PRODUCING')
    // after stopProduce, A is not producing either
    await server.stopProduce('r', 'A')
    await waitStatsEqual(server, { rooms: 1, users: 2, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    const afterStop = await server.stats()
    await expectCode(server.stopProduce('r', 'A'), 'NOT_PRODUCING', { what: 'second stopProduce' })
    await expectCode(server.produce('r', 'A', { constraints: { audio: true, video: false } }), 'NOT_PRODUCING', { what: 'constraints after stopProduce' })
    await assertUnchanged(server, afterStop, 'NOT_PRODUCING after stopProduce')
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

// ---------------------------------------------------------------------------------------
// NO_PENDING_OFFER

test('NO_PENDING_OFFER: an answer for a pair with no offer waiting', T, async () => {
  const server = newServer()
  let A, B
  try {
    await server.createRoom('idle', { userId: 'X' })
    await server.addUser('idle', 'Y', {})
    const stray = await makeAnswer(source)
    let before = await server.stats()
    // nobody produces in 'idle'
    await expectCode(server.consume('idle', 'Y', { id: 'X', answer: stray }), 'NO_PENDING_OFFER', { what: 'X does not produce' })
    await expectCode(server.consume('idle', 'Y', { answers: [{ id: 'X', answer: stray }] }), 'NO_PENDING_OFFER', { what: 'answers[] form' })
    await assertUnchanged(server, before, 'NO_PENDING_OFFER (idle)')

    // B has already answered A's offer: the same answer again has nothing to apply to
    ;({ A, B } = await producingPair(server, 'r'))
    const answered = { type: 'answer', sdp: B.downstreams.get('A').localDescription.sdp }
    before = await server.stats()
    await expectCode(server.consume('r', 'B', { id: 'A', answer: answered }), 'NO_PENDING_OFFER', { what: 'answer given twice' })
    // A does not consume from itself
    await expectCode(server.consume('r', 'A', { id: 'A', answer: answered }), 'NO_PENDING_OFFER', { what: 'answer for oneself' })
    await assertUnchanged(server, before, 'NO_PENDING_OFFER (answered)')
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 10 })
  } finally {
    await teardown(server, [A, B].filter(Boolean))
  }
})

test('NO_PENDING_OFFER in an answers[] list: the whole call fails and the valid answer stays pending', T, async () => {
  const server = newServer()
  const A = new Client(server, 'r', 'A', { source })
  const B = new Client(server, 'r', 'B', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await server.addUser('r', 'B', {})
    await server.addUser('r', 'C', {}) // C does not produce
    const res = await A.produce({ audio: true, video: true })
    const forB = res.outbound.find((o) => o.id === 'B')
    const { answer } = await B.handleOffer('A', forB.offer)
    const before = await server.stats()
    await expectCode(server.consume('r', 'B', { answers: [{ id: 'A', answer }, { id: 'C', answer }] }), 'NO_PENDING_OFFER')
    await assertUnchanged(server, before, 'NO_PENDING_OFFER in answers[]')
    // A's offer to B was not consumed by the failed call
    assert.deepStrictEqual(await server.consume('r', 'B', { id: 'A', answer }), { status: 'connected' })
    await B.waitDecoding('A')
  } finally {
    await teardown(server, [A, B])
  }
})

// ---------------------------------------------------------------------------------------
// SERVER_CLOSED

test('SERVER_CLOSED: every method after close()', T, async () => {
  const server = newServer()
  await server.createRoom('r', { userId: 'A' })
  await server.addUser('r', 'B', {})
  const offer = await makeOffer(source)
  const answer = await makeAnswer(source)
  await server.close()
  const calls = {
    stats: () => server.stats(),
    createRoom: () => server.createRoom('r2', {}),
    'createRoom (generated)': () => server.createRoom(),
    addUser: () => server.addUser('r', 'C', {}),
    produce: () => server.produce('r', 'A', { offer }),
    'produce (constraints)': () => server.produce('r', 'A', { constraints: { audio: true, video: true } }),
    consume: () => server.consume('r', 'B', { id: 'A', answer }),
    stopProduce: () => server.stopProduce('r', 'A'),
    removeUser: () => server.removeUser('r', 'B'),
    deleteRoom: () => server.deleteRoom('r'),
    // a missing room / user after close is still SERVER_CLOSED, not *_NOT_FOUND
    'removeUser (missing room)': () => server.removeUser('nope', 'nobody'),
    'deleteRoom (missing room)': () => server.deleteRoom('nope')
  }
  const wrong = []
  for (const [name, call] of Object.entries(calls)) {
    try { await expectCode(call(), 'SERVER_CLOSED', { what: `${name} after close()` }) } catch (err) { wrong.push(err.message) }
  }
  assert.deepStrictEqual(wrong, [], 'calls after close() that did not reject with SERVER_CLOSED')
  await closeServer(server)
})

// ---------------------------------------------------------------------------------------
// RESOURCE_EXHAUSTED

test('RESOURCE_EXHAUSTED: one port; addUser needing a second connection fails fast, adds nobody', T, async () => {
  // Ports per connection are the 'tasks' engine's (on the loops a connection leases no port).
  const server = createServer({ min: 43990, max: 43990 }, { engine: 'tasks' })
  const A = new Client(server, 'r', 'A', { source })
  const B = new Client(server, 'r', 'B', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await A.produce({ audio: true, video: true }) // takes the only port
    const before = await server.stats()
    assert.equal(before.upstreamConnections, 1)
    await expectCode(server.addUser('r', 'B', { userInfo: { b: 1 } }), 'RESOURCE_EXHAUSTED', { timeout: 15000, what: 'addUser B (needs a downstream A->B)' })
    await assertUnchanged(server, before, 'RESOURCE_EXHAUSTED on addUser')
    await expectCode(server.removeUser('r', 'B'), 'USER_NOT_FOUND', { what: 'B must not have been added' })
    // freeing the port (stopProduce) makes room for B
    await server.stopProduce('r', 'A')
    await waitStatsEqual(server, { rooms: 1, users: 1, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    assert.deepStrictEqual(await server.addUser('r', 'B', {}), { id: 'B', userInfo: {}, users: [{ id: 'A', userInfo: {} }] })
  } finally {
    await teardown(server, [A, B])
  }
})

test('RESOURCE_EXHAUSTED: one port; produce needing two connections fails fast and frees what it took', T, async () => {
  const server = createServer({ min: 43991, max: 43991 }, { engine: 'tasks' })
  const A = new Client(server, 'r', 'A', { source })
  const A2 = new Client(server, 'r', 'A', { source })
  try {
    await server.createRoom('r', { userId: 'A' })
    await server.addUser('r', 'B', {})
    const before = await server.stats()
    // upstream A + downstream A->B: two ports needed, one available
    await expectCode(A.produce({ audio: true, video: true }), 'RESOURCE_EXHAUSTED', { timeout: 15000, what: 'produce A with B in the room' })
    await assertUnchanged(server, before, 'RESOURCE_EXHAUSTED on produce')
    await sleep(500)
    await assertUnchanged(server, before, 'RESOURCE_EXHAUSTED on produce (after a moment)')
    await expectCode(server.stopProduce('r', 'A'), 'NOT_PRODUCING', { what: 'A must not be producing' })
    // the port was given back: alone in the room, A can produce
    await server.removeUser('r', 'B')
    const res = await A2.produce({ audio: true, video: true })
    assert.deepStrictEqual(res.outbound, [])
    assert.equal((await server.stats()).upstreamConnections, 1)
  } finally {
    await teardown(server, [A, A2])
  }
})

after(closeEverything)
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
