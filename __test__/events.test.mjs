// Events to the backend (`server.on(name, listener)`): connection states of every upstream and
// downstream connection (a killed client's included), constraint changes, rooms that end, and
// offers nobody answered. Media checks read the receiving client's own getStats(). The
// listener methods follow EventEmitter's rules (once, off, removeAllListeners, listenerCount,
// Node's events.once()), a listener that throws is an uncaught exception, and listeners never
// keep the process alive.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { on, once } from 'node:events'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import {
  Client, createServer, closeServer, closeEverything, expectCode, waitFor, sleep, statsOf, safeJson, startCall, withTimeout
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

/** Blocks the JS thread for `ms`: events the server emits meanwhile wait in its queue. */
function blockJsThread (ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

test('EventEmitter\'s rules: on/addListener/once chain, once fires once, off removes the latest registration, removeAllListeners, listenerCount', T, async () => {
  const server = createServer(null)
  const seen = []
  const on = (e) => seen.push(['on', e.roomId])
  const one = (e) => seen.push(['once', e.roomId])
  assert.equal(server.on('roomclosed', on).addListener('roomclosed', on).once('roomclosed', one), server, 'each returns the server')
  assert.equal(server.listenerCount('roomclosed'), 3)
  assert.equal(server.listenerCount('roomclosed', on), 2, 'the same function added twice is two listeners')
  assert.equal(server.listenerCount('roomclosed', one), 1)
  assert.equal(server.listenerCount('offertimeout'), 0)

  // Two rooms end at once: both events are emitted before either is delivered, and the once
  // listener still gets only the first of them. Listeners are called in the order they were
  // added.
  await server.createRoom('a')
  await server.createRoom('b')
  await Promise.all([server.deleteRoom('a'), server.deleteRoom('b')])
  await waitFor(() => seen.length === 5, { message: `five calls, seen ${safeJson(seen)}` })
  // The two deletions run at once on the server's threads: either room may end first.
  const [first, second] = seen[0][1] === 'a' ? ['a', 'b'] : ['b', 'a']
  assert.deepStrictEqual(seen, [['on', first], ['on', first], ['once', first], ['on', second], ['on', second]])
  assert.equal(server.listenerCount('roomclosed', one), 0, 'a once listener is gone after its call')

  // off() and removeListener() take away one registration each, the most recent.
  assert.equal(server.off('roomclosed', on), server)
  assert.equal(server.listenerCount('roomclosed', on), 1)
  assert.equal(server.removeListener('roomclosed', on), server)
  assert.equal(server.listenerCount('roomclosed'), 0)
  server.off('roomclosed', on) // removing a listener that is not there is no error

  // A listener removed is not called even for an event already on its way: the event is
  // emitted while the JS thread is blocked, and off() runs before the thread gets to it.
  const witness = []
  const removed = []
  const removedListener = (e) => removed.push(e)
  server.on('roomclosed', (e) => witness.push(e)).on('roomclosed', removedListener).once('roomclosed', removedListener)
  await server.createRoom('queued')
  const deleting = server.deleteRoom('queued')
  blockJsThread(500)
  server.off('roomclosed', removedListener).off('roomclosed', removedListener)
  await deleting
  await waitFor(() => witness.length === 1, { message: 'the witness listener got the event' })
  assert.deepStrictEqual(removed, [], 'neither removed listener was called')

  // removeAllListeners(name) clears that event only; removeAllListeners() every event.
  const other = () => {}
  server.on('offertimeout', other).on('connectionstatechange', other)
  assert.equal(server.removeAllListeners('roomclosed'), server)
  assert.deepStrictEqual(['roomclosed', 'offertimeout', 'connectionstatechange'].map((n) => server.listenerCount(n)), [0, 1, 1])
  server.removeAllListeners()
  assert.deepStrictEqual(['roomclosed', 'offertimeout', 'connectionstatechange'].map((n) => server.listenerCount(n)), [0, 0, 0])
  await server.createRoom('unheard')
  await server.deleteRoom('unheard')
  await sleep(200)
  assert.equal(witness.length, 1, 'no listener left to call')

  // Names are checked as on() checks them; listeners must be functions.
  for (const call of [
    () => server.once('nosuchevent', () => {}),
    () => server.addListener('nosuchevent', () => {}),
    () => server.removeListener('nosuchevent', () => {}),
    () => server.removeAllListeners('nosuchevent'),
    () => server.listenerCount('nosuchevent'),
    () => server.once('roomclosed', 'not a function'),
    () => server.listenerCount('roomclosed', 'not a function')
  ]) assert.throws(call, (err) => err.code === 'INVALID_ARGUMENT', String(call))
  await closeServer(server)
})

test('Node\'s events.once() and events.on() work on a MediaServer (\'error\' is accepted, never emitted)', T, async () => {
  const server = createServer(null)
  await server.createRoom('awaited')
  const next = once(server, 'roomclosed')
  assert.deepStrictEqual([server.listenerCount('roomclosed'), server.listenerCount('error')], [1, 1], 'events.once listens for error too')
  await server.deleteRoom('awaited')
  assert.deepStrictEqual(await next, [{ type: 'roomclosed', roomId: 'awaited', reason: 'deleted' }])
  assert.deepStrictEqual([server.listenerCount('roomclosed'), server.listenerCount('error')], [0, 0], 'events.once cleaned up')

  const ac = new AbortController()
  const reasons = []
  const iterating = (async () => {
    try {
      for await (const [event] of on(server, 'roomclosed', { signal: ac.signal })) {
        reasons.push(event.reason)
        if (reasons.length === 2) ac.abort()
      }
    } catch (err) {
      if (err.name !== 'AbortError') throw err
    }
  })()
  await server.createRoom('x')
  await server.createRoom('y', { userId: 'u' })
  await server.deleteRoom('x')
  await server.removeUser('y', 'u')
  await withTimeout(iterating, 10000, 'events.on() iteration')
  assert.deepStrictEqual(reasons, ['deleted', 'empty'])
  assert.equal(server.listenerCount('roomclosed'), 0)
  await closeServer(server)
})

/** Runs `script` (CommonJS) in a child node; the addon is `require(process.env.ADDON)`. */
function runScript (script) {
  const addon = fileURLToPath(new URL('../index.js', import.meta.url))
  return spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ADDON: addon }, encoding: 'utf8', timeout: 30000 })
}

test('a listener that throws: an uncaught exception, as a throwing EventEmitter listener is; the other listeners still get the event; listeners keep nothing alive', T, async () => {
  // Nobody handles it: Node prints the listener's error with its stack and exits with 1.
  const crashed = runScript(`
    const { MediaServer } = require(process.env.ADDON)
    const server = new MediaServer({ listenIp: '127.0.0.1' })
    server.on('roomclosed', function throwingListener () { throw new Error('thrown by a listener') })
    server.createRoom('r').then(() => server.deleteRoom('r')).then(() => setTimeout(() => console.log('survived'), 2000))
  `)
  assert.equal(crashed.status, 1, `exit status; stderr: ${crashed.stderr}`)
  assert.match(crashed.stderr, /Error: thrown by a listener\n\s+at throwingListener/)
  assert.doesNotMatch(crashed.stdout, /survived/)

  // With process.on('uncaughtException'): the very value thrown reaches it, and the listeners
  // after the throwing one are still called. Listeners of every kind are left registered and the
  // server is not closed: the process still exits on its own.
  const handled = runScript(`
    const { MediaServer } = require(process.env.ADDON)
    const thrown = new Error('thrown by a listener')
    const caught = []
    const calls = []
    process.on('uncaughtException', (err, origin) => caught.push({ same: err === thrown, origin }))
    const server = new MediaServer({ listenIp: '127.0.0.1' })
    server
      .on('roomclosed', (e) => { calls.push('first ' + e.roomId); throw thrown })
      .on('roomclosed', (e) => calls.push('second ' + e.roomId))
      .once('connectionstatechange', () => {})
      .on('error', () => {})
    server.createRoom('r').then(() => server.deleteRoom('r')).then(() => setTimeout(() => {
      console.log(JSON.stringify({ caught, calls }))
    }, 500))
  `)
  assert.equal(handled.status, 0, `exit status (the process exits on its own); stderr: ${handled.stderr}`)
  assert.deepStrictEqual(JSON.parse(handled.stdout), {
    caught: [{ same: true, origin: 'uncaughtException' }],
    calls: ['first r', 'second r']
  })
})
