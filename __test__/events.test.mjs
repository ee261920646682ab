// Events to the backend (`server.on(name, listener)`): connection states of every upstream and
// downstream connection (a killed client's included), constraint changes, rooms that end, and
// offers nobody answered. Media checks read the receiving client's own getStats().

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import {
  Client, createServer, closeServer, closeEverything, expectCode, waitFor, sleep, statsOf, safeJson, startCall
} from './helpers.mjs'

const require = createRequire(import.meta.url)
const { serve } = require('../serve.js')
const T = { timeout: 90000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Records every event of `server`; `find(pred)` waits for a matching one. */
function recorder (server) {
  const events = []
  for (const name of ['connectionstatechange', 'constraintschange', 'roomclosed', 'offertimeout']) {
    server.on(name, (e) => events.push({ ...e, at: Date.now() }))
  }
  return {
    events,
    find: (pred, { timeout = 15000, message = 'event' } = {}) =>
      waitFor(() => events.find(pred), { timeout, message: `${message}; seen: ${safeJson(events)}` }),
    states: (pred) => events.filter((e) => e.type === 'connectionstatechange' && pred(e)).map((e) => e.state)
  }
}

const upstreamOf = (user) => (e) => e.type === 'connectionstatechange' && e.direction === 'upstream' && e.userId === user
const downstreamOf = (user, producer) => (e) =>
  e.type === 'connectionstatechange' && e.direction === 'downstream' && e.userId === user && e.producerId === producer

test('connect, mute and leave: connection states, constraint changes and the room\'s end, as plain objects', T, async () => {
  const server = createServer({ min: 48000, max: 48049 })
  const rec = recorder(server)
  const A = new Client(server, 'ev', 'A')
  const B = new Client(server, 'ev', 'B')
  try {
    await startCall(server, 'ev', A, B)

    const up = await rec.find((e) => upstreamOf('A')(e) && e.state === 'connected', { message: 'A\'s upstream connected' })
    assert.deepStrictEqual(Object.keys(up), ['type', 'roomId', 'userId', 'producerId', 'direction', 'state', 'at'])
    assert.deepStrictEqual({ ...up, at: 0 }, { type: 'connectionstatechange', roomId: 'ev', userId: 'A', producerId: 'A', direction: 'upstream', state: 'connected', at: 0 })
    await rec.find((e) => downstreamOf('B', 'A')(e) && e.state === 'connected', { message: 'B\'s downstream from A connected' })
    const started = await rec.find((e) => e.type === 'constraintschange' && e.userId === 'A')
    assert.deepStrictEqual(started.constraints, { audio: true, video: true })

    // Mute: an event, and no connection changes state.
    const before = rec.events.length
    await server.produce('ev', 'A', { constraints: { video: false } })
    const muted = await rec.find((e, i) => e.type === 'constraintschange' && e.constraints.video === false, { message: 'mute event' })
    assert.deepStrictEqual({ ...muted, at: 0 }, { type: 'constraintschange', roomId: 'ev', userId: 'A', constraints: { audio: true, video: false }, at: 0 })
    const stillConnected = await server.getStats('ev')
    assert.deepStrictEqual(stillConnected.connections.map((c) => [c.direction, c.userId, c.state]),
      [['upstream', 'A', 'connected'], ['downstream', 'B', 'connected']], 'after the mute the server holds the same connections, connected')

    // Leave: A's connections close (upstream, and B's downstream carrying A); then B leaves
    // and the room, now empty, ends.
    await server.removeUser('ev', 'A')
    await rec.find((e) => upstreamOf('A')(e) && e.state === 'closed', { message: 'A\'s upstream closed' })
    await rec.find((e) => downstreamOf('B', 'A')(e) && e.state === 'closed', { message: 'B\'s downstream from A closed' })
    // The removal's two closes are a barrier: one listener's events arrive in the order the server
    // emitted them, and the server emitted any state change the mute caused (a connection it closed
    // or renegotiated) before these closes, as removeUser ran after produce() on the room's queue.
    // So, now that both closes are here, the connection events since the mute must be exactly them.
    assert.deepStrictEqual(rec.events.slice(before).filter((e) => e.type === 'connectionstatechange').map((e) => [e.direction, e.userId, e.state]).sort(),
      [['downstream', 'B', 'closed'], ['upstream', 'A', 'closed']], 'muting changed no connection')
    await server.removeUser('ev', 'B')
    const closed = await rec.find((e) => e.type === 'roomclosed')
    assert.deepStrictEqual({ ...closed, at: 0 }, { type: 'roomclosed', roomId: 'ev', reason: 'empty', at: 0 })
    assert.equal(rec.states(upstreamOf('A')).filter((s) => s === 'closed').length, 1, 'closed is reported once')
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})

test('roomclosed says why: deleteRoom, the last user leaving, close(); off() removes a listener', T, async () => {
  const server = createServer(null)
  const seen = []
  const listener = (e) => seen.push(e)
  const dropped = []
  const droppedListener = (e) => dropped.push(e)
  assert.equal(server.on('roomclosed', listener), server, 'on() returns the server, for chaining')
  server.on('roomclosed', droppedListener).off('roomclosed', droppedListener)
  await server.createRoom('deleted')
  await server.createRoom('emptied', { userId: 'u' })
  await server.createRoom('closed')
  await server.deleteRoom('deleted')
  await server.removeUser('emptied', 'u')
  await closeServer(server)
  await waitFor(() => seen.length === 3, { message: `three roomclosed events, seen ${safeJson(seen)}` })
  assert.deepStrictEqual(seen, [
    { type: 'roomclosed', roomId: 'deleted', reason: 'deleted' },
    { type: 'roomclosed', roomId: 'emptied', reason: 'empty' },
    { type: 'roomclosed', roomId: 'closed', reason: 'serverClosed' }
  ])
  assert.deepStrictEqual(dropped, [], 'a listener removed with off() is not called')
  assert.throws(() => server.on('nosuchevent', () => {}), (err) => err.code === 'INVALID_ARGUMENT')
})

test('an offer never answered: its connection is closed after offerTimeoutMs and reported; the next produce offers again', T, async () => {
  const server = createServer({ min: 48050, max: 48099 }, { offerTimeoutMs: 1500 })
  const rec = recorder(server)
  const A = new Client(server, 'late', 'A')
  const B = new Client(server, 'late', 'B')
  try {
    await server.createRoom('late', { userId: 'A' })
    await server.addUser('late', 'B')
    const sent = Date.now()
    const res = await A.produce({ audio: true, video: true })
    assert.ok(res.outbound[0].offer, 'B was offered A\'s media')
    // B never answers.
    const timedOut = await rec.find((e) => e.type === 'offertimeout', { message: 'offertimeout' })
    assert.deepStrictEqual({ ...timedOut, at: 0 }, { type: 'offertimeout', roomId: 'late', userId: 'B', producerId: 'A', timeoutMs: 1500, at: 0 })
    assert.ok(timedOut.at - sent >= 1400, `the offer timed out after ${timedOut.at - sent} ms, before 1500 ms`)
    await rec.find((e) => downstreamOf('B', 'A')(e) && e.state === 'closed', { message: 'the unanswered downstream closed' })
    const stats = await statsOf(server)
    assert.equal(stats.downstreamConnections, 0, `the server holds no downstream: ${safeJson(stats)}`)
    assert.equal(stats.upstreamConnections, 1, 'the producer is untouched')
    // The stale offer cannot be answered any more.
    const { answer } = await B.handleOffer('A', res.outbound[0].offer)
    await expectCode(server.consume('late', 'B', { id: 'A', answer }), 'NO_PENDING_OFFER')
    B.closeDownstream('A')

    // A produces again: B gets a new connection, answers in time, and decodes.
    const again = await A.reproduce({ audio: true, video: true })
    const offeredBy = Date.now() // the response carries the new offer: it was made by now
    assert.ok(again.outbound[0].offer, 'a new offer for B')
    await B.consumeAll(again.outbound, { from: 'A' })
    await B.waitDecoding('A')
    // An absence, so a window, bounded by the offer's own deadline: the new offer was made by
    // `offeredBy`, so if answering it had not disarmed its timer, the timer would fire by
    // offeredBy + 1500 ms, and the first timeout above reached us at most ~100 ms after its
    // deadline. Wait until a second past that deadline: by then there is still only the first
    // timeout, the server still holds B's downstream, and B is still decoding (a downstream closed
    // by a timeout would stop its frames).
    await sleep(Math.max(0, offeredBy + 1500 + 1000 - Date.now()))
    assert.equal(rec.events.filter((e) => e.type === 'offertimeout').length, 1, 'an answered offer does not time out')
    assert.equal((await statsOf(server)).downstreamConnections, 1)
    const decoded = (await B.inboundStats('A')).video.framesDecoded
    await B.waitDecoding('A', { above: decoded + 5 })
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})

test('a client process killed mid-call: its upstream is reported disconnected, then failed, within 30 s; nobody is removed', { timeout: 120000 }, async () => {
  const http = await serve({ host: '127.0.0.1', port: 0, listenIp: '127.0.0.1', portRange: { min: 48100, max: 48149 } })
  const rec = recorder(http.media)
  const B = new Client(http.media, 'kill', 'B')
  const script = fileURLToPath(new URL('./fixtures/producer-process.mjs', import.meta.url))
  let child
  try {
    await http.media.createRoom('kill', { userId: 'victim' })
    await http.media.addUser('kill', 'B')
    child = spawn(process.execPath, [script, http.url, 'kill', 'victim'], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise((resolve, reject) => {
      let out = ''
      child.stdout.on('data', (d) => { out += d; if (out.includes('CONNECTED')) resolve() })
      child.on('exit', (code) => reject(new Error(`the client process exited (${code}) before connecting`)))
    })
    await rec.find((e) => upstreamOf('victim')(e) && e.state === 'connected', { message: 'the victim\'s upstream connected' })

    const killed = Date.now()
    child.kill('SIGKILL')
    const lost = await rec.find((e) => upstreamOf('victim')(e) && e.state === 'disconnected', { timeout: 30000, message: 'disconnected' })
    const failed = await rec.find((e) => upstreamOf('victim')(e) && e.state === 'failed', { timeout: 30000, message: 'failed' })
    console.log(`killed client: disconnected after ${lost.at - killed} ms, failed after ${failed.at - killed} ms`)
    assert.ok(failed.at - killed < 30000)
    const stats = await statsOf(http.media)
    assert.equal(stats.users, 2, 'the addon removes nobody on its own: the backend decides')
  } finally {
    child?.kill('SIGKILL')
    B.close()
    await http.close()
  }
})
