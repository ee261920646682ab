// The HTTP server (serve.js, bin/mediaserver-rs.js): the spec's routes driven with `fetch`,
// a full produce/consume cycle with real libwebrtc clients whose own getStats() proves the
// media, the exact response shapes, and every error code with its HTTP status and body.
//
// Ports: HTTP on port 0 (ephemeral), every media port in 47000-47999 on 127.0.0.1:
// 47000-47499 the main server, 47500-47599 the CLI, 47600-47649 a MediaServer passed in as
// `media`, 47650-47699 the SERVER_CLOSED server, 47700-47749 the server with a token, 47990 the
// one-port RESOURCE_EXHAUSTED server. No request goes anywhere but 127.0.0.1: the tests of the
// refusal to listen elsewhere without a token never bind a non-loopback address.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { createRequire } from 'node:module'
import { networkInterfaces } from 'node:os'
import { fileURLToPath } from 'node:url'
import {
  Client, closeEverything, createSource, makeOffer, makeAnswer, assertServerSdp, byId, waitFor,
  withTimeout, safeJson
} from './helpers.mjs'
import { request, rawRequest, assertError, HttpMediaServer } from './http-client.mjs'

const require = createRequire(import.meta.url)
const { serve, isLoopbackHost } = require('../serve.js')
const { MediaServer } = require('../index.js')
const CLI = fileURLToPath(new URL('../bin/mediaserver-rs.js', import.meta.url))

const T = { timeout: 90000 }
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const handles = new Set()
/** serve() on 127.0.0.1, port 0; remembered so that the file's `after` closes it. */
async function startServe (options) {
  const handle = await serve({ host: '127.0.0.1', port: 0, ...options })
  handles.add(handle)
  return handle
}

let main // the main server: listenIp 127.0.0.1, media ports 47000-47499
let source // one synthetic camera+microphone for the whole file
before(async () => {
  source = createSource()
  // Its stats are checked with a port per connection: the 'tasks' engine's.
  main = await startServe({ listenIp: '127.0.0.1', engine: 'tasks', portRange: { min: 47000, max: 47499 } })
})

const call = (method, path, opts) => request(main.url, method, path, opts)

/** A 200 response with a JSON body: returns the body. */
function ok (res, what) {
  assert.equal(res.status, 200, `${what}: ${res.status} ${res.text.slice(0, 500)}`)
  assert.match(res.contentType ?? '', /^application\/json/, `${what}: content-type`)
  return res.body
}

/** `value[key]` is a server SDP of `type`; returns `value` without `key`, for deepStrictEqual. */
function withoutSdp (value, key, type, what) {
  assertServerSdp(value[key], type, what)
  const { [key]: _removed, ...rest } = value
  return rest
}

/** stats() without the forwarding totals, which move while media flows. */
function counts (stats) {
  const { forwardedPackets, forwardedBytes, ...rest } = stats
  assert.equal(typeof forwardedPackets, 'number')
  assert.equal(typeof forwardedBytes, 'number')
  return rest
}

/** Poll GET /stats until its counts deep-equal `expected`. */
async function waitHttpStats (url, expected) {
  let last
  try {
    await waitFor(async () => {
      last = counts(ok(await request(url, 'GET', '/stats'), 'GET /stats'))
      try { assert.deepStrictEqual(last, expected); return true } catch { return false }
    }, { timeout: 10000, message: `GET /stats == ${JSON.stringify(expected)}` })
  } catch (err) {
    assert.deepStrictEqual(last, expected, 'GET /stats')
    throw err
  }
}

// ---------------------------------------------------------------------------------------
// The full cycle

test('a full cycle over HTTP: rooms, users, produce, consume (media decoded), mute, stop, leave, delete', T, async () => {
  const api = new HttpMediaServer(main.url)
  const room = 'http-cycle'
  const A = new Client(api, room, 'A', { source })
  const B = new Client(api, room, 'B', { source })
  const C = new Client(api, room, 'C', { source })
  try {
    // POST /rooms: a generated UUID v4, with and without a user
    const bare = ok(await call('POST', '/rooms'), 'POST /rooms (no body)')
    assert.match(bare.room_id, UUID_V4)
    assert.deepStrictEqual(bare, { room_id: bare.room_id, users: [] })
    const withUser = ok(await call('POST', '/rooms', { body: { userId: 1, userInfo: { contactId: 11 } } }), 'POST /rooms with a user')
    assert.match(withUser.room_id, UUID_V4)
    assert.notEqual(withUser.room_id, bare.room_id)
    assert.deepStrictEqual(withUser, { room_id: withUser.room_id, user_id: '1', users: [], userInfo: { contactId: 11 } })

    // POST /rooms/:room_id with a user; POST /rooms/:room_id/users/:user_id
    assert.deepStrictEqual(ok(await call('POST', `/rooms/${room}`, { body: { userId: 'A', userInfo: { name: 'Alice' } } }), 'createRoom'),
      { room_id: room, user_id: 'A', users: [], userInfo: { name: 'Alice' } })
    assert.deepStrictEqual(ok(await call('POST', `/rooms/${room}/users/B`, { body: { userInfo: { name: 'Bob' } } }), 'addUser B'),
      { id: 'B', userInfo: { name: 'Bob' }, users: [{ id: 'A', userInfo: { name: 'Alice' } }] })

    // produce: A's libwebrtc offer through POST …/produce
    const produced = await A.produce({ audio: true, video: true })
    const rest = withoutSdp(produced, 'answer', 'answer', 'produce answer')
    assert.equal(rest.outbound.length, 1, safeJson(rest.outbound))
    assert.deepStrictEqual({ ...rest, outbound: [withoutSdp(rest.outbound[0], 'offer', 'offer', 'offer A->B')] }, {
      id: 'A',
      userInfo: { name: 'Alice' },
      constraints: { audio: true, video: true },
      outbound: [{ id: 'B', userInfo: { name: 'Bob' }, constraints: { audio: true, video: true } }]
    })

    // consume, single-answer form; B's own getStats() shows decoded video and received audio
    await B.consumeOne('A', produced.outbound[0].offer)
    const sB = await B.waitDecoding('A')
    assert.equal(sB.video.frameWidth, 320, 'B decodes A\'s 320x240 video')
    await B.waitAudio('A')

    // a late joiner gets A's offer from addUser and answers it with the answers[] form
    const addedC = ok(await call('POST', `/rooms/${room}/users/C`, { body: { userInfo: { name: 'Carol' } } }), 'addUser C')
    const usersC = byId(addedC.users)
    assert.deepStrictEqual({ ...addedC, users: [withoutSdp(usersC[0], 'offer', 'offer', 'offer A->C'), usersC[1]] }, {
      id: 'C',
      userInfo: { name: 'Carol' },
      users: [
        { id: 'A', userInfo: { name: 'Alice' }, constraints: { audio: true, video: true } },
        { id: 'B', userInfo: { name: 'Bob' } }
      ]
    })
    await C.consumeAll(addedC.users)
    await C.waitDecoding('A')
    await C.waitAudio('A')

    // GET /stats (an extension): exactly what media.stats() says
    const expected = { rooms: 3, users: 4, upstreamConnections: 1, downstreamConnections: 2, liveConnections: 3, portsInUse: 3, udpPort: null }
    await waitHttpStats(main.url, expected)
    assert.deepStrictEqual(counts(ok(await call('GET', '/stats'), 'GET /stats')), counts(await main.media.stats()))
    // GET /rooms/:room_id/stats and …/users/:user_id/stats (extensions): media.getStats()
    const roomStats = ok(await call('GET', `/rooms/${room}/stats`), 'room stats')
    assert.deepStrictEqual(roomStats.connections.map((c) => [c.direction, c.userId, c.producerId]),
      [['upstream', 'A', 'A'], ['downstream', 'B', 'A'], ['downstream', 'C', 'A']])
    const userStats = ok(await call('GET', `/rooms/${room}/users/C/stats`), 'user stats')
    assert.deepStrictEqual(userStats.connections.map((c) => [c.direction, c.userId]), [['downstream', 'C']])
    assert.ok(userStats.connections[0].tracks.every((t) => t.packetsSent > 0), 'C is being sent media')
    assertError(await call('GET', `/rooms/${room}/users/nobody/stats`), 404, 'USER_NOT_FOUND')

    // constraints alone: no answer, no offers; video keeps flowing
    const muted = ok(await call('POST', `/rooms/${room}/users/A/produce`, { body: { constraints: { audio: false } } }), 'mute audio')
    assert.deepStrictEqual({ ...muted, outbound: byId(muted.outbound) }, {
      id: 'A',
      userInfo: { name: 'Alice' },
      constraints: { audio: false, video: true },
      outbound: [
        { id: 'B', userInfo: { name: 'Bob' }, constraints: { audio: false, video: true } },
        { id: 'C', userInfo: { name: 'Carol' }, constraints: { audio: false, video: true } }
      ]
    })
    const s1 = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s1.video.framesDecoded + 5 })

    // DELETE …/produce (the spec's clients send an empty JSON object)
    const stopped = ok(await call('DELETE', `/rooms/${room}/users/A/produce`, { body: {} }), 'stopProduce')
    assert.deepStrictEqual({ ...stopped, outbound: byId(stopped.outbound) }, {
      id: 'A',
      userInfo: { name: 'Alice' },
      constraints: { audio: false, video: false },
      outbound: [{ id: 'B', userInfo: { name: 'Bob' } }, { id: 'C', userInfo: { name: 'Carol' } }]
    })
    A.close()
    B.close()
    C.close()
    await waitHttpStats(main.url, { rooms: 3, users: 4, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0, portsInUse: 0, udpPort: null })

    // DELETE /rooms/:room_id/users/:user_id (no body at all)
    const removed = ok(await call('DELETE', `/rooms/${room}/users/C`), 'removeUser C')
    assert.deepStrictEqual({ ...removed, outbound: byId(removed.outbound) }, {
      id: 'C',
      userInfo: { name: 'Carol' },
      outbound: [{ id: 'A', userInfo: { name: 'Alice' } }, { id: 'B', userInfo: { name: 'Bob' } }]
    })

    // DELETE /rooms/:room_id
    assert.deepStrictEqual(ok(await call('DELETE', `/rooms/${room}`), 'deleteRoom'), { count: 2 })
    assert.deepStrictEqual(ok(await call('DELETE', `/rooms/${bare.room_id}`), 'deleteRoom (bare)'), { count: 0 })
    assert.deepStrictEqual(ok(await call('DELETE', `/rooms/${withUser.room_id}`, { body: {} }), 'deleteRoom (with user)'), { count: 1 })
    await waitHttpStats(main.url, { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0, portsInUse: 0, udpPort: null })
  } finally {
    for (const c of [A, B, C]) c.close()
  }
})

test('ids in the path: URL-decoded, any characters the addon allows; userInfo is echoed untouched', T, async () => {
  const room = 'room €/1 ?#'
  const path = `/rooms/${encodeURIComponent(room)}`
  const userInfo = { nested: [1, 'two', null, { deep: true }], s: 'ü' }
  const created = ok(await call('POST', path, { raw: '{"userId": 7, "userInfo": "just a string"}' }), 'createRoom')
  assert.deepStrictEqual(created, { room_id: room, user_id: '7', users: [], userInfo: 'just a string' })
  const added = ok(await call('POST', `${path}/users/${encodeURIComponent('ü ser')}`, { body: { userInfo } }), 'addUser')
  assert.equal(added.id, 'ü ser')
  assert.equal(JSON.stringify(added.userInfo), JSON.stringify(userInfo))
  // a body with no Content-Type, or a text/plain one, is read as JSON all the same
  ok(await call('POST', `${path}/users/u3`, { raw: '{"userInfo": 3}', contentType: null }), 'addUser without Content-Type')
  ok(await call('POST', `${path}/users/u4`, { raw: '{"userInfo": 4}', contentType: 'text/plain;charset=UTF-8' }), 'addUser text/plain')
  assert.deepStrictEqual(ok(await call('DELETE', path), 'deleteRoom'), { count: 4 })
})

// ---------------------------------------------------------------------------------------
// Errors: status codes and the { error: { code, message } } body

test('400 INVALID_ARGUMENT: a body that is not JSON or not an object, bad ids and shapes; nothing created', T, async () => {
  ok(await call('POST', '/rooms/e400', { body: { userId: 'A' } }), 'createRoom')
  const before = ok(await call('GET', '/stats'), 'stats')
  const bad = [
    ['POST', '/rooms/e400/users/B', { raw: '{"userInfo": ' }, 'truncated JSON'],
    ['POST', '/rooms/e400/users/B', { raw: 'userInfo=1', contentType: 'application/x-www-form-urlencoded' }, 'a form body'],
    ['POST', '/rooms/e400/users/B', { raw: 'hello', contentType: 'text/plain' }, 'plain text'],
    ['POST', '/rooms/e400/users/B', { raw: '{}', contentType: 'this is not a media type' }, 'an unparsable Content-Type'],
    ['POST', '/rooms/e400/users/B', { body: [] }, 'a JSON array'],
    ['POST', '/rooms/e400/users/B', { body: 'userInfo' }, 'a JSON string'],
    ['POST', '/rooms/e400/users/B', { body: 42 }, 'a JSON number'],
    ['POST', '/rooms/e400/users/B', { body: null }, 'JSON null'],
    ['POST', '/rooms', { body: [{ userId: 'A' }] }, 'POST /rooms with an array'],
    ['POST', '/rooms/e400-2', { body: { userId: {} } }, 'userId an object'],
    ['POST', '/rooms/e400-2', { raw: '{"userId": [1]}' }, 'userId an array'],
    ['POST', '/rooms/', { body: {} }, 'an empty room id'],
    ['POST', `/rooms/${'r'.repeat(300)}`, { body: {} }, 'a room id over 256 characters'],
    ['POST', '/rooms/e400/users/A/produce', { body: {} }, 'produce with neither offer nor constraints'],
    ['POST', '/rooms/e400/users/A/produce', {}, 'produce with no body'],
    ['POST', '/rooms/e400/users/A/produce', { body: { constraints: 'off' } }, 'produce with constraints a string'],
    ['POST', '/rooms/e400/users/A/consume', { body: {} }, 'consume with neither form'],
    ['POST', '/rooms/e400/users/A/consume', { body: { answers: 'nope' } }, 'consume with answers a string'],
    ['DELETE', '/rooms/e400/users/A', { body: ['A'] }, 'a DELETE with an array body']
  ]
  for (const [method, path, opts, what] of bad) {
    assertError(await call(method, path, opts), 400, 'INVALID_ARGUMENT', `${method} ${path.slice(0, 40)}: ${what}`)
  }
  assert.deepStrictEqual(counts(ok(await call('GET', '/stats'), 'stats')), counts(before), 'the failed calls changed nothing')
  assert.deepStrictEqual(ok(await call('POST', '/rooms/e400/users/B'), 'addUser B'), { id: 'B', userInfo: {}, users: [{ id: 'A', userInfo: {} }] })
  assertError(await call('DELETE', '/rooms/e400-2'), 404, 'ROOM_NOT_FOUND', 'e400-2 was not created')
  assert.deepStrictEqual(ok(await call('DELETE', '/rooms/e400'), 'deleteRoom'), { count: 2 })
})

test('400 INVALID_SDP (an SDP over 64 KiB reaches the addon); 413 for a body over 1 MiB', T, async () => {
  ok(await call('POST', '/rooms/esdp', { body: { userId: 'A' } }), 'createRoom')
  const good = await makeOffer(source)
  const pad = Array.from({ length: 70 }, (_, i) => `a=x-padding-${i}:${'x'.repeat(1000)}`).join('\r\n')
  const huge = good.sdp.replace(/\r\nm=/, `\r\n${pad}\r\nm=`)
  assert.ok(huge.length > 65536 && huge.length < 80000)
  for (const [offer, what] of [
    [{ type: 'offer', sdp: 'this is not an SDP at all' }, 'garbage'],
    [{ type: 'answer', sdp: good.sdp }, 'type answer'],
    [{ type: 'offer', sdp: huge }, 'over 64 KiB']
  ]) {
    assertError(await call('POST', '/rooms/esdp/users/A/produce', { body: { offer } }), 400, 'INVALID_SDP', what)
  }
  const tooBig = JSON.stringify({ offer: { type: 'offer', sdp: good.sdp + 'a=x:'.padEnd(1024 * 1024, 'x') } })
  assertError(await call('POST', '/rooms/esdp/users/A/produce', { raw: tooBig }), 413, 'INVALID_ARGUMENT', 'a body over 1 MiB')
  assertError(await call('DELETE', '/rooms/esdp/users/A/produce'), 409, 'NOT_PRODUCING', 'A is not producing')
  assert.deepStrictEqual(ok(await call('DELETE', '/rooms/esdp'), 'deleteRoom'), { count: 1 })
})

test('404 ROOM_NOT_FOUND, USER_NOT_FOUND, and an unknown route (INVALID_ARGUMENT)', T, async () => {
  ok(await call('POST', '/rooms/e404', { body: { userId: 'A' } }), 'createRoom')
  const offer = await makeOffer(source)
  for (const [method, path, opts] of [
    ['POST', '/rooms/nowhere/users/A', { body: {} }],
    ['POST', '/rooms/nowhere/users/A/produce', { body: { offer } }],
    ['POST', '/rooms/nowhere/users/A/consume', { body: { id: 'B', answer: { type: 'answer', sdp: 'v=0' } } }],
    ['DELETE', '/rooms/nowhere/users/A/produce', {}],
    ['DELETE', '/rooms/nowhere/users/A', {}],
    ['DELETE', '/rooms/nowhere', {}]
  ]) {
    assertError(await call(method, path, opts), 404, 'ROOM_NOT_FOUND', `${method} ${path}`)
  }
  for (const [method, path, opts] of [
    ['POST', '/rooms/e404/users/nobody/produce', { body: { offer } }],
    ['POST', '/rooms/e404/users/nobody/produce', { body: { constraints: { audio: true, video: true } } }],
    ['DELETE', '/rooms/e404/users/nobody/produce', {}],
    ['DELETE', '/rooms/e404/users/nobody', {}]
  ]) {
    assertError(await call(method, path, opts), 404, 'USER_NOT_FOUND', `${method} ${path}`)
  }
  for (const [method, path] of [
    ['GET', '/'], ['GET', '/rooms'], ['GET', '/rooms/e404'], ['PUT', '/rooms/e404'], ['PATCH', '/rooms/e404/users/A'],
    ['POST', '/rooms/e404/users/A/unknown'], ['POST', '/rooms/e404/users'], ['POST', '/stats'], ['DELETE', '/rooms']
  ]) {
    const message = assertError(await call(method, path), 404, 'INVALID_ARGUMENT', `unknown route ${method} ${path}`)
    assert.match(message, new RegExp(`${method} ${path.replace(/\//g, '\\/')}`), 'the message names the route')
  }
  assert.deepStrictEqual(ok(await call('DELETE', '/rooms/e404'), 'deleteRoom'), { count: 1 })
})

test('409 ROOM_EXISTS, USER_EXISTS, NOT_PRODUCING, NO_PENDING_OFFER', T, async () => {
  ok(await call('POST', '/rooms/e409', { body: { userId: 'A', userInfo: { a: 1 } } }), 'createRoom')
  ok(await call('POST', '/rooms/e409/users/B'), 'addUser B')
  const before = ok(await call('GET', '/stats'), 'stats')
  assertError(await call('POST', '/rooms/e409', { body: {} }), 409, 'ROOM_EXISTS', 'the same room id')
  assertError(await call('POST', '/rooms/e409', { body: { userId: 'Z' } }), 409, 'ROOM_EXISTS', 'the same room id, with a user')
  assertError(await call('POST', '/rooms/e409/users/A', { body: { userInfo: { again: true } } }), 409, 'USER_EXISTS', 'A again')
  assertError(await call('POST', '/rooms/e409/users/B'), 409, 'USER_EXISTS', 'B again')
  assertError(await call('DELETE', '/rooms/e409/users/A/produce'), 409, 'NOT_PRODUCING', 'stopProduce of a user who does not produce')
  assertError(await call('POST', '/rooms/e409/users/A/produce', { body: { constraints: { audio: false, video: true } } }), 409, 'NOT_PRODUCING', 'constraints alone')
  const stray = await makeAnswer(source)
  assertError(await call('POST', '/rooms/e409/users/B/consume', { body: { id: 'A', answer: stray } }), 409, 'NO_PENDING_OFFER', '{id, answer}')
  assertError(await call('POST', '/rooms/e409/users/B/consume', { body: { answers: [{ id: 'A', answer: stray }] } }), 409, 'NO_PENDING_OFFER', '{answers}')
  assert.deepStrictEqual(counts(ok(await call('GET', '/stats'), 'stats')), counts(before), 'the failed calls changed nothing')
  assert.deepStrictEqual(ok(await call('POST', '/rooms/e409/users/C'), 'addUser C'),
    { id: 'C', userInfo: {}, users: byId([{ id: 'A', userInfo: { a: 1 } }, { id: 'B', userInfo: {} }]) })
  assert.deepStrictEqual(ok(await call('DELETE', '/rooms/e409'), 'deleteRoom'), { count: 3 })
})

test('503 RESOURCE_EXHAUSTED: a server with one media port, produce needing two', T, async () => {
  const one = await startServe({ listenIp: '127.0.0.1', engine: 'tasks', portRange: { min: 47990, max: 47990 } })
  try {
    const at = (method, path, opts) => request(one.url, method, path, opts)
    ok(await at('POST', '/rooms/r', { body: { userId: 'A' } }), 'createRoom')
    ok(await at('POST', '/rooms/r/users/B'), 'addUser B')
    const offer = await makeOffer(source)
    // upstream A + downstream A->B: two ports needed, one available
    assertError(await at('POST', '/rooms/r/users/A/produce', { body: { offer } }), 503, 'RESOURCE_EXHAUSTED', 'produce')
    await waitHttpStats(one.url, { rooms: 1, users: 2, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0, portsInUse: 0, udpPort: null })
  } finally {
    await one.close()
    handles.delete(one)
  }
})

test('503 SERVER_CLOSED: the MediaServer closed while the HTTP server is still up', T, async () => {
  const srv = await startServe({ listenIp: '127.0.0.1', portRange: { min: 47650, max: 47699 } })
  try {
    const at = (method, path, opts) => request(srv.url, method, path, opts)
    ok(await at('POST', '/rooms/r', { body: { userId: 'A' } }), 'createRoom')
    await srv.media.close()
    for (const [method, path, opts] of [
      ['POST', '/rooms', {}], ['POST', '/rooms/r2', { body: {} }], ['POST', '/rooms/r/users/B', {}],
      ['POST', '/rooms/r/users/A/produce', { body: { constraints: { audio: true, video: true } } }],
      ['DELETE', '/rooms/r/users/A', {}], ['DELETE', '/rooms/r', {}], ['GET', '/stats', {}]
    ]) {
      assertError(await at(method, path, opts), 503, 'SERVER_CLOSED', `${method} ${path}`)
    }
    // the HTTP layer's own answers do not depend on the MediaServer
    assertError(await at('POST', '/rooms/r/users/B', { raw: 'nope' }), 400, 'INVALID_ARGUMENT', 'non-JSON body')
    assertError(await at('GET', '/nowhere'), 404, 'INVALID_ARGUMENT', 'unknown route')
  } finally {
    await srv.close() // the MediaServer is already closed: close() still resolves
    handles.delete(srv)
  }
})

test('500 INTERNAL: an error without a spec code; serve({ media }) uses the given server and leaves it open', T, async () => {
  const failing = Object.fromEntries(['createRoom', 'addUser', 'produce', 'consume', 'stopProduce', 'removeUser', 'deleteRoom', 'stats', 'close']
    .map((m) => [m, async () => { throw new Error(`${m} broke`) }]))
  failing.deleteRoom = async () => { throw Object.assign(new Error('internal error: the call panicked'), { code: 'INTERNAL' }) }
  const broken = await startServe({ media: failing })
  try {
    const message = assertError(await request(broken.url, 'POST', '/rooms/r'), 500, 'INTERNAL', 'an Error without code')
    assert.equal(message, 'createRoom broke')
    assertError(await request(broken.url, 'DELETE', '/rooms/r'), 500, 'INTERNAL', 'an INTERNAL Error')
  } finally {
    await broken.close()
    handles.delete(broken)
  }

  const media = new MediaServer({ listenIp: '127.0.0.1', portRange: { min: 47600, max: 47649 } })
  try {
    const srv = await startServe({ media })
    assert.equal(srv.media, media)
    assert.deepStrictEqual(ok(await request(srv.url, 'POST', '/rooms/kept'), 'createRoom'), { room_id: 'kept', users: [] })
    await srv.close()
    handles.delete(srv)
    await assert.rejects(fetch(`${srv.url}/stats`), 'the HTTP server is closed')
    assert.equal((await media.stats()).rooms, 1, 'the MediaServer passed in stays open')
  } finally {
    await media.close()
  }
})

test('serve() options: validation, a listen error, the MediaServer constructor error', T, async () => {
  const media = new MediaServer({ listenIp: '127.0.0.1' })
  try {
    await assert.rejects(serve({ port: 0, media, listenIp: '127.0.0.1' }), TypeError)
    await assert.rejects(serve({ port: 0, media: {} }), TypeError)
  } finally {
    await media.close()
  }
  await assert.rejects(serve({ port: 65536 }), RangeError)
  await assert.rejects(serve({ port: '0' }), RangeError)
  await assert.rejects(serve({ host: '', port: 0 }), TypeError)
  await assert.rejects(serve({ host: '127.0.0.1', port: 0, listenIp: 'not an ip' }), (err) => err.code === 'INVALID_ARGUMENT')
  await assert.rejects(serve({ host: '127.0.0.1', port: main.port, listenIp: '127.0.0.1' }), (err) => err.code === 'EADDRINUSE')
  assert.equal(ok(await call('GET', '/stats'), 'the main server still answers').upstreamConnections, 0)
})

// ---------------------------------------------------------------------------------------
// Errors of the HTTP layer itself, before any route: the spec's body too

/** Write `text` on a fresh TCP connection and read until the server closes it. */
function exchange (url, text) {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(text))
    let data = ''
    socket.setEncoding('latin1')
    socket.on('data', (d) => { data += d })
    socket.on('error', reject)
    socket.on('close', () => resolve(data))
  })
}

/** A raw HTTP/1.1 response as the `request()` shape (one response, Content-Length framed). */
function parseResponse (data) {
  const head = data.slice(0, data.indexOf('\r\n\r\n'))
  const text = Buffer.from(data.slice(head.length + 4), 'latin1').toString('utf8')
  const headers = Object.fromEntries(head.split('\r\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
  let body
  try { body = JSON.parse(text) } catch {}
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]), contentType: headers['content-type'], headers, body, text }
}

test('a path that is not valid percent-encoding, an unknown method, a request that is not HTTP, headers over 16 KiB: the spec\'s error body', T, async () => {
  const before = counts(ok(await call('GET', '/stats'), 'stats'))
  // node:http sends these paths byte for byte (fetch would re-encode them)
  for (const [method, path] of [
    ['GET', '/rooms/%ZZ/stats'], ['POST', '/rooms/%ZZ'], ['POST', '/rooms/%E0%A4%A/users/x'], ['DELETE', '/rooms/%'],
    ['POST', '/rooms/r/users/%C3%28'], ['DELETE', '/rooms/r/users/u%FF/produce']
  ]) {
    const message = assertError(await rawRequest(main.url, method, path, { headers: { 'content-type': 'application/json' }, raw: '{}' }),
      400, 'INVALID_ARGUMENT', `${method} ${path}`)
    assert.match(message, /percent-encod/, `${method} ${path}: the message says what is wrong`)
  }
  // methods Node parses but no route has: 404 like any unknown route (the spec has no 405)
  for (const method of ['OPTIONS', 'PURGE', 'SEARCH', 'QUERY', 'PROPFIND']) {
    const message = assertError(await rawRequest(main.url, method, '/rooms/e-any'), 404, 'INVALID_ARGUMENT', method)
    assert.match(message, new RegExp(`^no route ${method} /rooms/e-any$`))
  }
  // Node's parser rejects these before there is a request at all
  for (const [text, status, what] of [
    ['GET /stats HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n', 400, 'a header line without a colon'],
    ['BREW /stats HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'a method HTTP does not have'],
    ['POST /rooms/r HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}', 400, 'two Content-Lengths'],
    [`GET /rooms/${'r'.repeat(20000)}/stats HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'a request line over 16 KiB']
  ]) {
    assertError(parseResponse(await exchange(main.url, text)), status, 'INVALID_ARGUMENT', what)
  }
  assert.deepStrictEqual(counts(ok(await call('GET', '/stats'), 'stats')), before, 'none of them reached the MediaServer')
  assertError(await call('DELETE', `/rooms/${encodeURIComponent('%ZZ')}`), 404, 'ROOM_NOT_FOUND', 'no room "%ZZ" was made')
})

test('a Content-Type header that is empty, or absent, is read as JSON (node:http, headers exactly as given)', T, async () => {
  const at = (method, path, opts) => rawRequest(main.url, method, path, opts)
  const A = { id: 'A', userInfo: { via: 'empty' } }
  const B = { id: 'B', userInfo: { via: 'absent' } }
  assert.deepStrictEqual(ok(await at('POST', '/rooms/ctype', { headers: { 'content-type': '' }, raw: '{"userId": "A", "userInfo": {"via": "empty"}}' }), 'empty Content-Type'),
    { room_id: 'ctype', user_id: 'A', users: [], userInfo: A.userInfo })
  assert.deepStrictEqual(ok(await at('POST', '/rooms/ctype/users/B', { raw: '{"userInfo": {"via": "absent"}}' }), 'no Content-Type'),
    { ...B, users: [A] })
  const C = ok(await at('POST', '/rooms/ctype/users/C', { headers: { 'content-type': '', 'transfer-encoding': 'chunked' }, raw: '{"userInfo": 3}' }), 'empty Content-Type, chunked')
  assert.deepStrictEqual({ ...C, users: byId(C.users) }, { id: 'C', userInfo: 3, users: [A, B] })
  // read as JSON, not ignored: an empty body is no body, a body that is not JSON is a 400
  const D = ok(await at('POST', '/rooms/ctype/users/D', { headers: { 'content-type': '' } }), 'empty Content-Type, no body')
  assert.deepStrictEqual({ ...D, users: byId(D.users) }, { id: 'D', userInfo: {}, users: [A, B, { id: 'C', userInfo: 3 }] })
  assertError(await at('POST', '/rooms/ctype/users/E', { headers: { 'content-type': '' }, raw: 'userInfo=1' }), 400, 'INVALID_ARGUMENT', 'empty Content-Type, not JSON')
  assertError(await at('POST', '/rooms/ctype/users/E', { raw: '[1]' }), 400, 'INVALID_ARGUMENT', 'no Content-Type, a JSON array')
  assert.deepStrictEqual(ok(await call('DELETE', '/rooms/ctype'), 'deleteRoom'), { count: 4 })
})

// ---------------------------------------------------------------------------------------
// The token, and the refusal to listen elsewhere without one

/** A 401 in the spec's shape, with the WWW-Authenticate challenge. */
function assertUnauthenticated (res, what) {
  assertError(res, 401, 'UNAUTHENTICATED', what)
  const challenge = typeof res.headers.get === 'function' ? res.headers.get('www-authenticate') : res.headers['www-authenticate']
  assert.equal(challenge, 'Bearer', `${what}: WWW-Authenticate`)
}

/** An address of this machine's own interfaces that is not loopback (undefined if it has none). */
function localAddress () {
  return Object.values(networkInterfaces()).flat().find((a) => !a.internal && a.family === 'IPv4')?.address ??
    Object.values(networkInterfaces()).flat().find((a) => !a.internal && a.family === 'IPv6' && !a.address.startsWith('fe80'))?.address
}

/** A non-loopback address (documentation ranges) that no interface of this machine has: listening on it fails. */
function addressNotHere () {
  const mine = new Set(Object.values(networkInterfaces()).flat().map((a) => a.address))
  const address = ['203.0.113.77', '198.51.100.77', '192.0.2.177'].find((a) => !mine.has(a))
  assert.ok(address, 'an address this machine does not have')
  return address
}

test('a token: every request needs Authorization: Bearer <token>; without it nothing reaches the MediaServer', T, async () => {
  const token = randomBytes(32).toString('hex')
  const srv = await startServe({ token, listenIp: '127.0.0.1', portRange: { min: 47700, max: 47749 } })
  const at = (method, path, opts) => request(srv.url, method, path, opts)
  ok(await at('POST', '/rooms/guarded', { body: { userId: 'A', userInfo: { name: 'Alice' } }, token }), 'createRoom with the token')
  const offer = await makeOffer(source)

  const last = token.at(-1)
  const wrong = {
    'no Authorization header': {},
    'a wrong token of the same length': { token: token.slice(0, -1) + (last === '0' ? '1' : '0') },
    'the token but its last character': { token: token.slice(0, -1) },
    'the token and one character more': { token: token + '0' },
    'a much shorter token': { token: 'x' },
    'the token without a scheme': { headers: { authorization: token } },
    'the token as Basic credentials': { headers: { authorization: `Basic ${Buffer.from(`user:${token}`).toString('base64')}` } },
    'the token with another scheme': { headers: { authorization: `Token ${token}` } },
    'an empty bearer token': { headers: { authorization: 'Bearer' } }
  }
  const requests = [
    ['GET', '/stats', {}],
    ['GET', '/rooms/guarded/stats', {}],
    ['POST', '/rooms', { body: { userId: 'X' } }],
    ['POST', '/rooms/intruder', { body: {} }],
    ['POST', '/rooms/guarded/users/B', { body: { userInfo: { name: 'Mallory' } } }],
    ['POST', '/rooms/guarded/users/A/produce', { body: { offer } }],
    ['POST', '/rooms/guarded/users/A/consume', { body: { id: 'A', answer: { type: 'answer', sdp: 'v=0' } } }],
    ['DELETE', '/rooms/guarded/users/A/produce', {}],
    ['DELETE', '/rooms/guarded/users/A', {}],
    ['DELETE', '/rooms/guarded', {}],
    // before the route and the body are looked at: no 404, 400 or 413 for those without the token
    ['GET', '/nowhere', {}],
    ['POST', '/rooms/guarded/users/B', { raw: '{"userInfo": ' }],
    ['POST', '/rooms/guarded/users/B', { raw: '{}', contentType: 'this is not a media type' }],
    ['POST', '/rooms/guarded/users/B', { raw: JSON.stringify({ userInfo: 'x'.repeat(1024 * 1024 + 1) }) }]
  ]
  for (const [what, auth] of Object.entries(wrong)) {
    for (const [method, path, opts] of requests) {
      const headers = { ...opts.headers, ...auth.headers }
      assertUnauthenticated(await at(method, path, { ...opts, ...auth, headers }), `${what}: ${method} ${path}`)
    }
    // a path that is not valid percent-encoding is answered before routing: still a 401 first
    assertUnauthenticated(await rawRequest(srv.url, 'POST', '/rooms/%ZZ', { headers: auth.token ? { authorization: `Bearer ${auth.token}` } : auth.headers }),
      `${what}: POST /rooms/%ZZ`)
  }
  // nothing changed: the room still holds A alone, not producing; no other room was made
  assert.deepStrictEqual(counts(await srv.media.stats()), { rooms: 1, users: 1, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0, portsInUse: 0, udpPort: null })

  // the right token: every route works, the scheme in any case
  const api = new HttpMediaServer(srv.url, { token })
  assert.deepStrictEqual(await api.addUser('guarded', 'B', { userInfo: { name: 'Bob' } }),
    { id: 'B', userInfo: { name: 'Bob' }, users: [{ id: 'A', userInfo: { name: 'Alice' } }] })
  const produced = await api.produce('guarded', 'A', { offer })
  assertServerSdp(produced.answer, 'answer', 'produce with the token')
  assert.equal(produced.outbound.length, 1)
  assert.equal(ok(await at('GET', '/stats', { headers: { authorization: `bEaReR ${token}` } }), 'stats, scheme in mixed case').upstreamConnections, 1)
  assertError(await at('POST', '/rooms/guarded/users/B', { raw: '{"userInfo": ', token }), 400, 'INVALID_ARGUMENT', 'with the token, a bad body is a 400')
  assertError(await at('GET', '/nowhere', { token }), 404, 'INVALID_ARGUMENT', 'with the token, an unknown route is a 404')
  assertError(await rawRequest(srv.url, 'POST', '/rooms/%ZZ', { headers: { authorization: `Bearer ${token}` } }), 400, 'INVALID_ARGUMENT', 'with the token, a bad path is a 400')
  assert.deepStrictEqual(await api.deleteRoom('guarded'), { count: 2 })
  await srv.close()
  handles.delete(srv)
})

test('serve() refuses an address that is not loopback without a token (before binding anything); token and insecure lift it', T, async () => {
  assert.deepStrictEqual(['127.0.0.1', '127.8.9.10', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST'].filter((h) => !isLoopbackHost(h)), [])
  assert.deepStrictEqual(['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', '128.0.0.1', '::ffff:10.0.0.1', 'fd00::2', 'fe80::1%eth0', 'example.com', 'localhost.example.com', '[::1]', ''].filter(isLoopbackHost), [])

  const refused = (err) => {
    assert.ok(err instanceof Error, String(err))
    assert.equal(err.code, 'INVALID_ARGUMENT', err.stack)
    assert.match(err.message, /refusing to listen on .* without a token: it is not a loopback address/)
    return true
  }
  // the wildcards and one of this machine's own addresses: all of them would bind without the
  // check; a check that let one through closes what it bound and fails
  const local = localAddress()
  for (const host of ['0.0.0.0', '::', ...(local ? [local] : [])]) {
    for (const options of [{}, { insecure: false }, { token: undefined }]) {
      const outcome = await serve({ host, port: 0, listenIp: '127.0.0.1', ...options }).then(async (h) => { await h.close(); return h }, (err) => err)
      assert.ok(!outcome.url, `serve({ host: ${host}, ${safeJson(options)} }) listened on ${outcome.url}`)
      refused(outcome)
    }
  }
  // the same with a MediaServer passed in: refused, and the server is left as it was
  const media = new MediaServer({ listenIp: '127.0.0.1' })
  try {
    await assert.rejects(serve({ host: '0.0.0.0', port: 0, media }), refused)
    assert.equal((await media.stats()).rooms, 0, 'the MediaServer passed in still answers')
  } finally {
    await media.close()
  }

  // token or insecure: the address goes on to listen(), which fails for one this machine does
  // not have (EADDRNOTAVAIL), so nothing is bound (a host that allows non-local binds would
  // listen: that handle is closed at once, no request is sent)
  const elsewhere = addressNotHere()
  for (const options of [{ insecure: true }, { token: randomBytes(16).toString('hex') }]) {
    const outcome = await serve({ host: elsewhere, port: 0, listenIp: '127.0.0.1', ...options }).then(async (h) => { await h.close(); return h }, (err) => err)
    assert.ok(outcome.url || outcome.code === 'EADDRNOTAVAIL', `${safeJson(Object.keys(options))}: ${outcome.stack ?? safeJson(outcome)}`)
  }
  await assert.rejects(serve({ host: elsewhere, port: 0, listenIp: '127.0.0.1' }), refused)

  // loopback needs neither; insecure on loopback changes nothing
  for (const [host, options] of [['localhost', {}], ['127.0.0.2', {}], ['127.0.0.1', { insecure: true }]]) {
    const srv = await startServe({ host, ...options, listenIp: '127.0.0.1' })
    assert.equal(ok(await request(srv.url, 'GET', '/stats'), `${host} ${safeJson(options)}`).rooms, 0)
    await srv.close()
    handles.delete(srv)
  }
})

test('serve() options: token and insecure are checked (INVALID_ARGUMENT), and not passed to the MediaServer', T, async () => {
  for (const token of ['', 'two words', ' leading', 'tab\there', 'é-accent', 'line\nbreak', 42, null, true, ['x']]) {
    await assert.rejects(serve({ port: 0, token }), (err) => err instanceof TypeError && err.code === 'INVALID_ARGUMENT' && /token/.test(err.message),
      `token ${safeJson(token)}`)
  }
  for (const insecure of ['yes', 1, null]) {
    await assert.rejects(serve({ port: 0, insecure }), (err) => err instanceof TypeError && err.code === 'INVALID_ARGUMENT' && /insecure/.test(err.message),
      `insecure ${safeJson(insecure)}`)
  }
  // with media: they are options of serve(), not MediaServer options that clash with it
  const media = new MediaServer({ listenIp: '127.0.0.1' })
  try {
    const token = '!#$%&\'*+-.^_`|~0123456789abcdefXYZ' // every visible ASCII class a token may use
    const srv = await startServe({ media, token, insecure: true })
    assertUnauthenticated(await request(srv.url, 'GET', '/stats'), 'no token')
    assert.equal(ok(await request(srv.url, 'GET', '/stats', { token }), 'stats').rooms, 0)
    await srv.close()
    handles.delete(srv)
  } finally {
    await media.close()
  }
})

// ---------------------------------------------------------------------------------------
// The command

/**
 * `node bin/mediaserver-rs.js serve ...args` with `env` added to an environment without the
 * variables the command reads (HOST, PORT, ANNOUNCED_IP, MEDIASERVER_TOKEN), so that the test
 * runner's own cannot leak in. Returns { child, output(), exited, listening, url() }: `listening`
 * resolves to the URL of the line it prints once it listens; `url()` waits for it, failing as
 * soon as the command exits instead.
 */
function spawnCli (args, env = {}) {
  const base = { ...process.env }
  for (const key of ['HOST', 'PORT', 'ANNOUNCED_IP', 'MEDIASERVER_TOKEN']) delete base[key]
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env } })
  let output = ''
  let onListening
  const listening = new Promise((resolve) => { onListening = resolve })
  const read = (d) => {
    output += d
    const m = /^mediaserver-rs listening on (http:\/\/\S+)$/m.exec(output)
    if (m) onListening(m[1])
  }
  child.stdout.on('data', read)
  child.stderr.on('data', read)
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const url = () => withTimeout(Promise.race([
    listening,
    exited.then(({ code, signal }) => { throw new Error(`the CLI exited (${code ?? signal}): ${output}`) })
  ]), 15000, 'the CLI printing its URL')
  return { child, output: () => output, exited, listening, url }
}

/** Stop a CLI started by spawnCli (by its PID) and assert that it exits 0 on SIGTERM. */
async function stopCli ({ child, exited, output }) {
  process.kill(child.pid, 'SIGTERM')
  const { code, signal } = await withTimeout(exited, 15000, 'the CLI exiting after SIGTERM')
  assert.equal(signal, null, output())
  assert.equal(code, 0, output())
}

/** Kill it by its PID if it is still running (a test's `finally`). */
function killCli ({ child }) {
  if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL')
}

test('the CLI: `mediaserver-rs serve` prints its URL, answers, and exits 0 on SIGTERM', T, async () => {
  const cli = spawnCli(['--host', '127.0.0.1', '--port', '0', '--listen-ip', '127.0.0.1', '--port-min', '47500', '--port-max', '47599'])
  try {
    const url = await cli.url()
    assert.deepStrictEqual(ok(await request(url, 'POST', '/rooms/cli', { body: { userId: 1, userInfo: { via: 'cli' } } }), 'createRoom'),
      { room_id: 'cli', user_id: '1', users: [], userInfo: { via: 'cli' } })
    assertError(await request(url, 'POST', '/rooms/cli'), 409, 'ROOM_EXISTS', 'the same room again')
    await stopCli(cli)
    assert.equal(cli.output().trim().split('\n').length, 1, `it prints one line: ${cli.output()}`)
  } finally {
    killCli(cli)
  }
})

test('the CLI: MEDIASERVER_TOKEN, and --token winning over it', T, async () => {
  const envToken = randomBytes(24).toString('base64url')
  const flagToken = randomBytes(24).toString('base64url')
  const args = ['--host', '127.0.0.1', '--port', '0', '--listen-ip', '127.0.0.1', '--port-min', '47500', '--port-max', '47599']

  const fromEnv = spawnCli(args, { MEDIASERVER_TOKEN: envToken })
  try {
    const url = await fromEnv.url()
    assertUnauthenticated(await request(url, 'POST', '/rooms/cli-env'), 'no token')
    assertUnauthenticated(await request(url, 'POST', '/rooms/cli-env', { token: flagToken }), 'another token')
    assert.deepStrictEqual(ok(await request(url, 'POST', '/rooms/cli-env', { token: envToken }), 'createRoom with the token'),
      { room_id: 'cli-env', users: [] })
    assert.equal(ok(await request(url, 'GET', '/stats', { token: envToken }), 'stats').rooms, 1, 'only the authenticated call made a room')
    await stopCli(fromEnv)
    assert.doesNotMatch(fromEnv.output(), new RegExp(envToken), 'the token is never printed')
  } finally {
    killCli(fromEnv)
  }

  const both = spawnCli([...args, '--token', flagToken], { MEDIASERVER_TOKEN: envToken })
  try {
    const url = await both.url()
    assertUnauthenticated(await request(url, 'GET', '/stats', { token: envToken }), 'the environment\'s token')
    assert.equal(ok(await request(url, 'GET', '/stats', { token: flagToken }), 'stats with the flag\'s token').rooms, 0)
    await stopCli(both)
  } finally {
    killCli(both)
  }
})

test('the CLI refuses a --host that is not loopback without a token, and an empty MEDIASERVER_TOKEN', T, async () => {
  const hosts = ['0.0.0.0', ...(localAddress() ? [localAddress()] : [])]
  for (const host of hosts) {
    const cli = spawnCli(['--host', host, '--port', '0', '--listen-ip', '127.0.0.1'])
    try {
      // a check that let it through would listen (on a port of its choosing): fail on that line at once
      const outcome = await withTimeout(Promise.race([cli.exited, cli.listening.then(() => 'listening')]),
        20000, `the CLI with --host ${host}`)
      assert.notEqual(outcome, 'listening', `--host ${host} without a token listened: ${cli.output()}`)
      assert.equal(outcome.code, 1, cli.output())
      assert.match(cli.output(), new RegExp(`^mediaserver-rs: cannot start: INVALID_ARGUMENT: .*refusing to listen on ${host.replace(/\./g, '\\.')} without a token.*--token or MEDIASERVER_TOKEN.*--insecure`, 'm'))
    } finally {
      killCli(cli)
    }
  }

  // --insecure lets a non-loopback address through to listen(), which fails for one this machine
  // does not have: nothing is bound
  const elsewhere = addressNotHere()
  const insecure = spawnCli(['--host', elsewhere, '--port', '0', '--listen-ip', '127.0.0.1', '--insecure'])
  try {
    const { code } = await withTimeout(insecure.exited, 20000, 'the CLI with --insecure')
    assert.equal(code, 1, insecure.output())
    assert.match(insecure.output(), /^mediaserver-rs: cannot start: EADDRNOTAVAIL: /m)
  } finally {
    killCli(insecure)
  }

  // an empty token (a deployment's unset variable) is refused, not read as "no token"
  const empty = spawnCli(['--host', '127.0.0.1', '--port', '0', '--listen-ip', '127.0.0.1'], { MEDIASERVER_TOKEN: '' })
  try {
    const { code } = await withTimeout(empty.exited, 20000, 'the CLI with an empty MEDIASERVER_TOKEN')
    assert.equal(code, 1, empty.output())
    assert.match(empty.output(), /MEDIASERVER_TOKEN is empty/)
    assert.doesNotMatch(empty.output(), /listening on/)
  } finally {
    killCli(empty)
  }
})

after(async () => {
  for (const h of handles) {
    try { await withTimeout(h.close(), 10000, 'serve().close()') } catch (err) { console.error('closing the HTTP server:', err) }
  }
})
after(closeEverything)
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
