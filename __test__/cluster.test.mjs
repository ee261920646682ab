// The cluster (issue 12): three MediaServers, each in its own Node process
// (__test__/cluster-node.mjs), one real redis-server (Debian's package) on a free loopback port
// with persistence off, and real libwebrtc peers in this process whose own getStats() prove
// the media. Each test starts its own Redis and nodes and stops them.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { fork, spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import {
  Client, createServer, closeServer, closeEverything, waitFor, expectCode, sleep, safeJson, byId, withTimeout
} from './helpers.mjs'

const require = createRequire(import.meta.url)
const Redis = require('ioredis')
const nodeScript = fileURLToPath(new URL('./cluster-node.mjs', import.meta.url))
const PREFIX = 'mstest'
const HEARTBEAT_MS = 300
const NODE_TIMEOUT_MS = 2000

const T = { timeout: 90000 }

/** A free TCP port on 127.0.0.1 (the OS picks it; released before redis-server binds it). */
async function freePort () {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** redis-server on `port`, persistence off; resolves once it answers PING. */
async function startRedis (port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  await waitFor(() => spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG',
    { timeout: 10000, interval: 50, message: `redis-server on ${port} answers PING` })
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: proc.pid,
    async kill () {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL')
      await exited
    }
  }
}

const children = new Set()

/** One node process; its methods are the MediaServer's, over IPC. */
class Node {
  constructor (nodeId, child) {
    this.nodeId = nodeId
    this.child = child
    this.events = []
    this.pending = new Map()
    this.seq = 0
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    child.on('message', (msg) => {
      if (msg.event) {
        this.events.push({ ...msg.event, at: Date.now() })
      } else if (msg.id !== undefined) {
        const p = this.pending.get(msg.id)
        this.pending.delete(msg.id)
        if (msg.error) p?.reject(Object.assign(new Error(msg.error.message), { code: msg.error.code }))
        else p?.resolve(msg.value)
      }
    })
    child.once('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`node ${nodeId} exited`))
      this.pending.clear()
    })
    for (const m of ['createRoom', 'addUser', 'produce', 'consume', 'stopProduce', 'setPreferredLayers', 'removeUser', 'deleteRoom', 'getStats', 'getRoom', 'stats']) {
      this[m] = (...args) => this.call(m, args)
    }
  }

  call (method, args) {
    const id = ++this.seq
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.child.send({ id, method, args })
    })
  }

  /** The roomclosed events this node emitted for `roomId`. */
  closed (roomId) {
    return this.events.filter((e) => e.type === 'roomclosed' && e.roomId === roomId)
  }

  async stop () {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await Promise.race([this.call('close', []).catch(() => {}), sleep(5000)])
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    }
    await this.exited
    children.delete(this)
  }
}

async function startNode (redis, nodeId, { heartbeatMs = HEARTBEAT_MS, nodeTimeoutMs = NODE_TIMEOUT_MS } = {}) {
  const options = {
    listenIp: '127.0.0.1',
    workers: 1,
    cluster: { redisUrl: redis.url, nodeId, heartbeatMs, nodeTimeoutMs, prefix: PREFIX }
  }
  const child = fork(nodeScript, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const node = new Node(nodeId, child)
  children.add(node)
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${nodeId} not ready within 15 s`)), 15000)
    child.on('message', (msg) => { if (msg.ready) { clearTimeout(timer); resolve() } })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`node ${nodeId} exited (${code}) before it was ready`)) })
  })
  return node
}

/** Redis, three nodes A, B, C, and a Redis client for this test to read the directory. */
async function startCluster (timing) {
  const redis = await startRedis(await freePort())
  const nodes = await Promise.all(['A', 'B', 'C'].map((id) => startNode(redis, id, timing)))
  // (it sees Redis go away in the outage test: its errors are expected there)
  const dir = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 }).on('error', () => {})
  await dir.connect()
  // every node sees the three before the test starts placing rooms
  for (const n of nodes) {
    await waitFor(async () => (await n.stats()).nodes.length === 3, { timeout: 5000, message: `${n.nodeId} sees three nodes` })
  }
  const cluster = {
    redis,
    nodes,
    byId: Object.fromEntries(nodes.map((n) => [n.nodeId, n])),
    dir,
    /** The directory: roomId -> nodeId. */
    rooms: () => dir.hgetall(`${PREFIX}:rooms`),
    async stop () {
      cluster.dir.disconnect()
      await Promise.all(nodes.map((n) => n.stop()))
      await cluster.redis.kill()
    }
  }
  return cluster
}

/** Creates rooms through `via` until each of `owners` holds one; returns { nodeId: roomId }. */
async function roomsOn (cluster, via, owners, prefix) {
  const found = {}
  for (let i = 0; i < 12 && owners.some((o) => !found[o]); i++) {
    const roomId = `${prefix}-${i}`
    await via.createRoom(roomId)
    const owner = await cluster.dir.hget(`${PREFIX}:rooms`, roomId)
    if (owners.includes(owner) && !found[owner]) found[owner] = roomId
  }
  for (const o of owners) assert.ok(found[o], `no room placed on ${o}: ${safeJson(await cluster.rooms())}`)
  return found
}

/** A result with every SDP replaced, and every array of `{id}` sorted by id: what must match exactly. */
function normalized (value) {
  if (Array.isArray(value)) {
    const items = value.map(normalized)
    return items.every((x) => x && typeof x === 'object' && 'id' in x) ? byId(items) : items
  }
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, k === 'sdp' ? `<${typeof value[k]}>` : normalized(value[k])]))
  }
  return value
}

/**
 * The shape of a value: its keys and the types of its leaves (arrays: the distinct shapes of
 * their items). A number that may be null (a round-trip time not measured yet) is one type.
 */
function shape (value) {
  if (Array.isArray(value)) return [...new Set(value.map((v) => JSON.stringify(shape(v))))].sort().map((s) => JSON.parse(s))
  if (value === null || typeof value === 'number') return 'number or null'
  if (typeof value === 'object') return Object.fromEntries(Object.keys(value).sort().map((k) => [k, shape(value[k])]))
  return typeof value
}

/** The consumer's decoded video frames, every 250 ms: fails as soon as they stop growing for a second. */
function watchFlow (consumer, producerId) {
  let stop = false
  let failure = null
  const samples = []
  const done = (async () => {
    let last = (await consumer.inboundStats(producerId)).video.framesDecoded
    let lastGrowth = Date.now()
    while (!stop) {
      await sleep(250)
      const frames = (await consumer.inboundStats(producerId)).video.framesDecoded
      samples.push(frames)
      if (frames > last) { last = frames; lastGrowth = Date.now() }
      if (Date.now() - lastGrowth > 1000) {
        failure = new Error(`${consumer.userId}'s video from ${producerId} stopped: frames ${samples.slice(-8).join(' -> ')}`)
        return
      }
    }
  })()
  return {
    async end () {
      stop = true
      await done
      if (failure) throw failure
      return samples
    }
  }
}

/** Every producer's outbound items relayed to their users, each answered through the user's own node. */
async function produceAndDeliver (clients, producerId) {
  const res = await clients[producerId].produce({ audio: true, video: true })
  await Promise.all(res.outbound.map((o) => clients[o.id].consumeAll([o], { from: producerId })))
  return res
}

test('without the cluster option, no Redis client is loaded and the object is the native one', () => {
  const script = `
    const { MediaServer } = require(process.argv[1])
    const m = new MediaServer({ listenIp: '127.0.0.1' })
    const loaded = Object.keys(require.cache).filter((p) => /ioredis|cluster\\.js$/.test(p))
    console.log(JSON.stringify({ loaded, ctor: Object.getPrototypeOf(m).constructor.name, ok: m instanceof MediaServer }))
    m.close()`
  const r = spawnSync(process.execPath, ['-e', script, fileURLToPath(new URL('../index.js', import.meta.url))], { encoding: 'utf8', timeout: 20000 })
  assert.equal(r.status, 0, r.stderr)
  assert.deepStrictEqual(JSON.parse(r.stdout), { loaded: [], ctor: 'MediaServer', ok: true })
})

test('the cluster class has every method of the native class, and forwards every event the native server emits', () => {
  const { ClusterMediaServer } = require('../cluster.js')
  const native = require('../binding.js').MediaServer
  const own = (C) => Object.getOwnPropertyNames(C.prototype).filter((m) => m !== 'constructor' && !m.startsWith('_')).sort()
  assert.deepStrictEqual(own(ClusterMediaServer).filter((m) => m !== 'nodeId'), own(native))
  // the native server names its events in the message for an unknown one
  const probe = new native({ listenIp: '127.0.0.1', workers: 1 })
  let names
  try { probe.on('no-such-event', () => {}) } catch (err) { names = /\(events: ([^)]*)\)/.exec(err.message)[1].split(', ') }
  probe.close()
  const source = require('node:fs').readFileSync(require.resolve('../cluster.js'), 'utf8')
  const listed = JSON.parse(/const EVENTS = (\[[^\]]*\])/.exec(source)[1].replaceAll("'", '"'))
  assert.deepStrictEqual(listed, names)
})

test('a cluster MediaServer: the listener methods\' rules, SERVER_CLOSED after close(), and close() leaves Redis and lets the process exit', T, async () => {
  const redis = await startRedis(await freePort())
  const dir = new Redis(redis.url).on('error', () => {})
  try {
    const script = `
      const events = require('node:events')
      const { MediaServer } = require(process.argv[1])
      const out = []
      ;(async () => {
        const m = new MediaServer({ listenIp: '127.0.0.1', workers: 1, cluster: { redisUrl: process.argv[2], nodeId: 'solo', prefix: '${PREFIX}' } })
        out.push(m instanceof MediaServer)
        const seen = []
        const f = () => seen.push('f')
        m.on('roomclosed', f).once('roomclosed', () => seen.push('once')).addListener('roomclosed', f)
        out.push(m.listenerCount('roomclosed'), m.listenerCount('roomclosed', f))
        for (const bad of [() => m.on('nope', f), () => m.on('roomclosed'), () => m.listenerCount('roomclosed', 5)]) {
          try { bad(); out.push('no throw') } catch (e) { out.push(e.code + ': ' + e.message) }
        }
        m.off('roomclosed', f)
        const next = events.once(m, 'roomclosed')
        out.push(await m.createRoom('r', { userId: 'u' }))
        out.push(await m.removeUser('r', 'u'))
        out.push((await next)[0], [...seen], m.listenerCount('roomclosed'))
        await m.createRoom('kept')
        await m.close()
        for (const call of [() => m.createRoom('z'), () => m.getRoom('kept'), () => m.close()]) {
          await call().then(() => out.push('resolved'), (e) => out.push(e.code + ': ' + e.message))
        }
        console.log(JSON.stringify(out))
      })()`
    const t0 = Date.now()
    const r = spawnSync(process.execPath, ['-e', script, fileURLToPath(new URL('../index.js', import.meta.url)), redis.url], { encoding: 'utf8', timeout: 20000 })
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal}: ${r.stderr}`)
    assert.ok(Date.now() - t0 < 10000, 'the process exits by itself once close() resolved')
    const closedMsg = 'SERVER_CLOSED: the media server was closed'
    assert.deepStrictEqual(JSON.parse(r.stdout), [
      true, 3, 2,
      "INVALID_ARGUMENT: unknown event 'nope' (events: connectionstatechange, constraintschange, roomclosed, offertimeout, activespeaker, audiolevels, layerschange, error)",
      'INVALID_ARGUMENT: the listener must be a function',
      'INVALID_ARGUMENT: the listener must be a function',
      { room_id: 'r', user_id: 'u', users: [], userInfo: {} },
      { id: 'u', userInfo: {}, outbound: [] },
      { type: 'roomclosed', roomId: 'r', reason: 'empty', nodeId: 'solo' },
      ['f', 'once'],
      1,
      closedMsg, closedMsg, closedMsg
    ])
    // it left the directory, and its Redis connections are gone
    assert.deepStrictEqual(await dir.keys(`${PREFIX}:*`), [])
    const clients = await dir.client('LIST')
    assert.ok(!/name=mediaserver:solo/.test(clients), clients)
  } finally {
    dir.disconnect()
    await redis.kill()
  }
})

test('users who join one room through three nodes all decode each other, with the single-server results and errors', T, async () => {
  const cluster = await startCluster()
  const { A, B, C } = cluster.byId
  const single = createServer(null, { workers: 1 })
  const room = 'meet'
  const via = { a: A, b: B, c: C }
  const clients = Object.fromEntries(['a', 'b', 'c'].map((u) => [u, new Client(via[u], room, u)]))
  const singleClients = Object.fromEntries(['a', 'b', 'c'].map((u) => [u, new Client(single, 'solo', u)]))
  try {
    /** The same scenario on the cluster (users on three nodes) and on one server. */
    const run = async (srv, roomId, cl, viaOf) => {
      const r = {}
      r.create = await viaOf('a').createRoom(roomId, { userId: 'a', userInfo: { name: 'Ann' } })
      r.addB = await viaOf('b').addUser(roomId, 'b', { userInfo: { name: 'Bo' } })
      r.addC = await viaOf('c').addUser(roomId, 'c', { userInfo: { name: 'Cy' } })
      r.produce = {}
      for (const u of ['a', 'b', 'c']) r.produce[u] = await produceAndDeliver(cl, u)
      return r
    }
    const got = await run(null, room, clients, (u) => via[u])
    const want = await run(single, 'solo', singleClients, () => single)

    // the media: each of the six pairs decodes video and receives audio, on its own peers' stats
    // (on the single server too, so that both are in the same state when their stats are compared)
    const pairs = ['a', 'b', 'c'].flatMap((c) => ['a', 'b', 'c'].filter((p) => p !== c).map((p) => [c, p]))
    await Promise.all(pairs.map(async ([c, p]) => {
      const s = await clients[c].waitDecoding(p)
      assert.equal(s.video.frameWidth, 320, `${c} decodes ${p}'s video`)
      await clients[c].waitAudio(p)
      await singleClients[c].waitDecoding(p)
    }))
    // the room lives on one node: its SDP carries that node's candidates, its native room holds
    // every user and connection
    const owner = cluster.byId[await cluster.dir.hget(`${PREFIX}:rooms`, room)]
    assert.ok(owner, 'the room is in the directory')
    const ownerStats = await owner.stats()
    assert.deepStrictEqual([ownerStats.rooms, ownerStats.users, ownerStats.upstreamConnections, ownerStats.downstreamConnections], [1, 3, 3, 6])

    // every result as one server gives it (SDP aside: candidates and fingerprints differ)
    assert.deepStrictEqual(normalized({ ...got.create, room_id: 'X' }), normalized({ ...want.create, room_id: 'X' }))
    assert.deepStrictEqual(normalized(got.addB), normalized(want.addB))
    assert.deepStrictEqual(normalized(got.addC), normalized(want.addC))
    for (const u of ['a', 'b', 'c']) assert.deepStrictEqual(normalized(got.produce[u]), normalized(want.produce[u]), `produce ${u}`)

    // a late joiner through C: every producer's offer; then the other results, each through another node
    const steps = async (viaOf, roomId) => {
      const r = {}
      r.addD = await viaOf('c').addUser(roomId, 'd', { userInfo: [1, 'two'] })
      r.removeD = await viaOf('a').removeUser(roomId, 'd')
      r.mute = await viaOf('b').produce(roomId, 'b', { constraints: { audio: false } })
      r.room = await viaOf('b').getRoom(roomId)
      r.stats = await viaOf('c').getStats(roomId)
      r.userStats = await viaOf('a').getStats(roomId, 'b')
      r.layers = await viaOf('c').setPreferredLayers(roomId, 'a', 'b', { spatialLayer: 0 }).catch((e) => ({ code: e.code, message: e.message }))
      r.stop = await viaOf('a').stopProduce(roomId, 'c')
      r.roomExists = await viaOf('b').createRoom(roomId).catch((e) => ({ code: e.code, message: e.message }))
      r.userExists = await viaOf('c').addUser(roomId, 'a').catch((e) => ({ code: e.code, message: e.message }))
      r.userExists2 = await viaOf('b').addUser(roomId, 'c').catch((e) => ({ code: e.code, message: e.message }))
      r.userNotFound = await viaOf('c').stopProduce(roomId, 'nobody').catch((e) => ({ code: e.code, message: e.message }))
      r.userNotFound2 = await viaOf('b').consume(roomId, 'nobody', { id: 'a', answer: { type: 'answer', sdp: 'v=0' } }).catch((e) => ({ code: e.code, message: e.message }))
      r.roomNotFound = await viaOf('a').addUser(`${roomId}-nowhere`, 'x').catch((e) => ({ code: e.code, message: e.message }))
      r.invalid = await viaOf('b').addUser(roomId, 1.5).catch((e) => ({ code: e.code, message: e.message }))
      r.serverStats = await viaOf('c').stats()
      r.delete = await viaOf('b').deleteRoom(roomId)
      return r
    }
    const got2 = await steps((u) => via[u], room)
    const want2 = await steps(() => single, 'solo')
    for (const c of Object.values(singleClients)) c.close()
    for (const key of ['addD', 'removeD', 'mute', 'layers', 'stop', 'delete']) {
      assert.deepStrictEqual(normalized(got2[key]), normalized(want2[key]), key)
    }
    for (const key of ['room', 'stats', 'userStats']) {
      assert.deepStrictEqual(shape({ ...got2[key], roomId: 'X' }), shape({ ...want2[key], roomId: 'X' }), `${key}: shape`)
    }
    assert.equal(got2.room.users.length, 3)
    const room2 = (s) => s.replaceAll("'solo", "'meet")
    for (const key of ['roomExists', 'userExists', 'userExists2', 'userNotFound', 'userNotFound2', 'roomNotFound', 'invalid']) {
      assert.deepStrictEqual(got2[key], { ...want2[key], message: room2(want2[key].message) }, key)
    }
    assert.equal(got2.roomExists.code, 'ROOM_EXISTS')
    assert.equal(got2.userExists.code, 'USER_EXISTS')
    assert.equal(got2.userNotFound.code, 'USER_NOT_FOUND')
    assert.equal(got2.userNotFound2.code, 'USER_NOT_FOUND')
    // stats(): the single server's keys, plus the node's id and the cluster's live nodes
    const { nodeId, nodes, redisConnected, ...base } = got2.serverStats
    assert.deepStrictEqual(shape(base), shape(want2.serverStats))
    assert.equal(nodeId, 'C')
    assert.equal(redisConnected, true)
    assert.deepStrictEqual(nodes.map((n) => n.nodeId), ['A', 'B', 'C'])

    // every node emits the room's events, each carrying the owner's nodeId
    for (const n of cluster.nodes) {
      const closed = await waitFor(() => n.closed(room).length > 0 && n.closed(room), { timeout: 5000, message: `${n.nodeId} hears roomclosed` })
      assert.deepStrictEqual(closed.map(({ at, ...e }) => e), [{ type: 'roomclosed', roomId: room, reason: 'deleted', nodeId: owner.nodeId }])
      const changes = n.events.filter((e) => e.type === 'constraintschange' && e.roomId === room)
      assert.ok(changes.some((e) => e.userId === 'b' && e.constraints.audio === false && e.nodeId === owner.nodeId),
        `${n.nodeId} hears b's mute from ${owner.nodeId}: ${safeJson(changes)}`)
    }
    assert.equal(await cluster.dir.hget(`${PREFIX}:rooms`, room), null, 'the deleted room left the directory')
    // the id is free again, cluster-wide
    assert.deepStrictEqual(await C.createRoom(room), { room_id: room, users: [] })
  } finally {
    for (const c of [...Object.values(clients), ...Object.values(singleClients)]) c.close()
    await closeServer(single)
    await cluster.stop()
  }
})

test('twenty rooms created through one node land on all three', T, async () => {
  const cluster = await startCluster()
  const { A, C } = cluster.byId
  try {
    for (let i = 0; i < 20; i++) assert.deepStrictEqual(await A.createRoom(`spread-${i}`), { room_id: `spread-${i}`, users: [] })
    const dir = await cluster.rooms()
    assert.equal(Object.keys(dir).length, 20)
    const counts = {}
    for (const n of cluster.nodes) counts[n.nodeId] = (await n.stats()).rooms
    console.log(`twenty rooms through A: ${safeJson(counts)}`)
    for (const n of cluster.nodes) {
      assert.ok(counts[n.nodeId] > 0, `no room on ${n.nodeId}: ${safeJson(counts)}`)
      assert.equal(counts[n.nodeId], Object.values(dir).filter((o) => o === n.nodeId).length, `${n.nodeId}'s rooms are the directory's`)
    }
    // empty rooms weigh one each: placement alternates, 7/7/6
    assert.ok(Math.max(...Object.values(counts)) - Math.min(...Object.values(counts)) <= 1, safeJson(counts))
    // a room id without an id given: a UUID v4, placed like any other
    const made = await C.createRoom()
    assert.match(made.room_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    // every room answers through every node
    for (const [roomId] of Object.entries(dir)) {
      for (const n of cluster.nodes) assert.equal((await n.getRoom(roomId)).roomId, roomId)
    }
  } finally {
    await cluster.stop()
  }
})

test('a node killed with SIGKILL: the others emit roomclosed nodeLost for its rooms, calls get ROOM_NOT_FOUND, other rooms\' media flows on', T, async () => {
  const cluster = await startCluster()
  const { A, B, C } = cluster.byId
  const clients = []
  try {
    const rooms = await roomsOn(cluster, A, ['A', 'B'], 'kill')
    const alive = rooms.A
    const doomed = rooms.B
    // media in the surviving room: the producer joins through C, the consumer through B (the
    // node that dies), so the room's calls were forwarded and its media goes straight to A
    const p = new Client(C, alive, 'p')
    const q = new Client(B, alive, 'q')
    clients.push(p, q)
    await C.addUser(alive, 'p')
    await B.addUser(alive, 'q')
    await produceAndDeliver({ p, q }, 'p')
    await q.waitDecoding('p')
    // and a user in the doomed room
    await C.addUser(doomed, 'r', { userInfo: { on: 'B' } })

    const flow = watchFlow(q, 'p')
    const killedAt = Date.now()
    B.child.kill('SIGKILL')
    await B.exited
    for (const n of [A, C]) {
      const [e] = await waitFor(() => n.closed(doomed).length > 0 && n.closed(doomed), { timeout: 15000, message: `${n.nodeId} emits roomclosed for ${doomed}` })
      const { at, ...event } = e
      assert.deepStrictEqual(event, { type: 'roomclosed', roomId: doomed, reason: 'nodeLost', nodeId: 'B' })
      console.log(`${n.nodeId}: roomclosed nodeLost ${at - killedAt} ms after SIGKILL (nodeTimeoutMs ${NODE_TIMEOUT_MS}, heartbeatMs ${HEARTBEAT_MS})`)
      assert.ok(at - killedAt < 15000)
    }
    await expectCode(A.getRoom(doomed), 'ROOM_NOT_FOUND')
    await expectCode(C.addUser(doomed, 's'), 'ROOM_NOT_FOUND')
    await expectCode(C.removeUser(doomed, 'r'), 'ROOM_NOT_FOUND')
    // the other rooms of B went too; A's stay
    const dir = await cluster.rooms()
    assert.ok(!Object.values(dir).includes('B'), `B's rooms left the directory: ${safeJson(dir)}`)
    assert.equal(dir[alive], 'A')
    for (const n of [A, C]) {
      await waitFor(async () => (await n.stats()).nodes.map((x) => x.nodeId).join() === 'A,C',
        { timeout: 2 * HEARTBEAT_MS + 1000, message: `${n.nodeId}'s stats().nodes are A and C` })
    }
    // the media of the room on A never stopped, and calls for it work through C
    await sleep(1000)
    const samples = await flow.end()
    assert.ok(samples.length >= 8, `sampled ${samples.length} times`)
    assert.equal((await C.getRoom(alive)).users.length, 2)
    // once per node, not once per reaper: a second look finds no duplicate
    for (const n of [A, C]) assert.equal(n.closed(doomed).length, 1, `${n.nodeId}: ${safeJson(n.closed(doomed))}`)
  } finally {
    for (const c of clients) c.close()
    await cluster.stop()
  }
})

test('a node restarted under its id before its heartbeat lapsed: the others close its old rooms (nodeLost) at once', T, async () => {
  // a heartbeat that would take 20 s to lapse: an event in less proves the restart told it
  const timing = { heartbeatMs: 300, nodeTimeoutMs: 20000 }
  const cluster = await startCluster(timing)
  const { A, B, C } = cluster.byId
  try {
    const { B: old } = await roomsOn(cluster, A, ['B'], 'restart')
    await C.addUser(old, 'u')
    B.child.kill('SIGKILL')
    await B.exited
    const killedAt = Date.now()
    const B2 = await startNode(cluster.redis, 'B', timing)
    cluster.nodes[cluster.nodes.indexOf(B)] = B2
    for (const n of [A, C, B2]) {
      const [e] = await waitFor(() => n.closed(old).length > 0 && n.closed(old), { timeout: 10000, message: `${n.nodeId} emits roomclosed for ${old}` })
      const { at, ...event } = e
      assert.deepStrictEqual(event, { type: 'roomclosed', roomId: old, reason: 'nodeLost', nodeId: 'B' })
      assert.ok(at - killedAt < 10000, `${at - killedAt} ms`)
    }
    await expectCode(A.getRoom(old), 'ROOM_NOT_FOUND')
    await expectCode(B2.addUser(old, 'v'), 'ROOM_NOT_FOUND')
    // the new B is a node like the others: it is live, and takes rooms
    await waitFor(async () => (await A.stats()).nodes.map((n) => n.nodeId).join() === 'A,B,C', { timeout: 5000, message: 'A sees A, B, C' })
    const { B: fresh } = await roomsOn(cluster, A, ['B'], 'restart-new')
    assert.equal((await C.getRoom(fresh)).roomId, fresh)
    for (const n of [A, C, B2]) assert.equal(n.closed(old).length, 1)
  } finally {
    await cluster.stop()
  }
})

test('Redis stopped for 10 s: local calls and media work, Redis-needing calls get UNAVAILABLE, then the directory is rebuilt', T, async () => {
  const cluster = await startCluster()
  const { A, B, C } = cluster.byId
  const clients = []
  try {
    const rooms = await roomsOn(cluster, A, ['A', 'B', 'C'], 'outage')
    const local = rooms.A
    const p = new Client(A, local, 'p')
    const q = new Client(A, local, 'q')
    const late = new Client(A, local, 'late')
    clients.push(p, q, late)
    await A.addUser(local, 'p')
    await A.addUser(local, 'q')
    await produceAndDeliver({ p, q }, 'p')
    await q.waitDecoding('p')
    const before = await cluster.rooms()

    const flow = watchFlow(q, 'p')
    await cluster.redis.kill()
    const downAt = Date.now()
    for (const n of [A, B, C]) {
      await waitFor(async () => !(await n.stats()).redisConnected, { timeout: 5000, message: `${n.nodeId} sees Redis gone` })
    }
    // calls that need Redis: rejected at once
    for (const [n, call] of [[A, () => A.createRoom('during-outage')], [B, () => B.getRoom(local)], [C, () => C.addUser(rooms.B, 'x')]]) {
      const t0 = performance.now()
      const err = await expectCode(call(), 'UNAVAILABLE')
      const ms = performance.now() - t0
      assert.ok(ms < 500, `${n.nodeId}: UNAVAILABLE after ${Math.round(ms)} ms (${err.message})`)
    }
    // local calls: a user joins room A through A and decodes its producer
    const joined = await A.addUser(local, 'late', { userInfo: { when: 'outage' } })
    assert.deepStrictEqual(joined.users.map((u) => u.id).sort(), ['p', 'q'])
    await late.consumeAll(joined.users)
    await late.waitDecoding('p')
    assert.equal((await A.getRoom(local)).users.length, 3)
    // and C deletes its own room meanwhile: it must not come back
    assert.deepStrictEqual(await C.deleteRoom(rooms.C), { count: 0 })
    const waitMs = 10000 - (Date.now() - downAt)
    if (waitMs > 0) await sleep(waitMs)
    await expectCode(B.createRoom('still-down'), 'UNAVAILABLE')

    // Redis returns on the same port, empty (persistence is off): the nodes rebuild the directory
    const redis = await startRedis(cluster.redis.port)
    cluster.redis = redis
    const upAt = Date.now()
    const dir = new Redis(redis.url).on('error', () => {})
    cluster.dir.disconnect()
    cluster.dir = dir
    const expected = { ...before }
    delete expected[rooms.C]
    await waitFor(async () => {
      const [r, n] = await Promise.all([dir.hgetall(`${PREFIX}:rooms`), dir.smembers(`${PREFIX}:nodes`)])
      try {
        assert.deepStrictEqual(r, expected)
        assert.deepStrictEqual(n.sort(), ['A', 'B', 'C'])
        return true
      } catch { return false }
    }, { timeout: 10000, message: 'every node and room back in the directory' })
    console.log(`directory rebuilt ${Date.now() - upAt} ms after Redis restarted`)
    await flow.end()
    // forwarded calls and placement work again
    assert.equal((await B.getRoom(local)).users.length, 3)
    assert.equal((await C.getRoom(rooms.B)).roomId, rooms.B)
    await expectCode(B.getRoom(rooms.C), 'ROOM_NOT_FOUND')
    assert.deepStrictEqual(await B.createRoom('after-outage'), { room_id: 'after-outage', users: [] })
    await expectCode(C.createRoom(local), 'ROOM_EXISTS')
    for (const n of [A, B, C]) {
      await waitFor(async () => (await n.stats()).nodes.length === 3, { timeout: 5000, message: `${n.nodeId} sees three nodes again` })
    }
  } finally {
    for (const c of clients) c.close()
    await cluster.stop()
  }
})

test('the HTTP server scales out the same way: serve --redis-url --node-id, 409 across nodes, 503 UNAVAILABLE without Redis', T, async () => {
  const redis = await startRedis(await freePort())
  const bin = fileURLToPath(new URL('../bin/mediaserver-rs.js', import.meta.url))
  const servers = []
  const start = async (nodeId) => {
    const proc = spawn(process.execPath, [bin, 'serve', '--port', '0', '--listen-ip', '127.0.0.1', '--redis-url', redis.url, '--node-id', nodeId], {
      stdio: ['ignore', 'ignore', 'pipe']
    })
    const exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
    servers.push({ proc, exited })
    let err = ''
    const url = await new Promise((resolve, reject) => {
      proc.stderr.on('data', (d) => {
        err += d
        const m = /listening on (http:\/\/\S+)/.exec(err)
        if (m) resolve(m[1])
      })
      proc.once('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)))
    })
    return { url, proc, exited }
  }
  const http = async (method, url) => {
    const res = await fetch(url, { method })
    return { status: res.status, body: await res.json() }
  }
  try {
    const [h1, h2] = [await start('h1'), await start('h2')]
    assert.deepStrictEqual(await http('POST', `${h1.url}/rooms/lobby`), { status: 200, body: { room_id: 'lobby', users: [] } })
    assert.deepStrictEqual(await http('POST', `${h2.url}/rooms/lobby`),
      { status: 409, body: { error: { code: 'ROOM_EXISTS', message: "room 'lobby' already exists" } } })
    assert.deepStrictEqual(await http('POST', `${h2.url}/rooms/lobby/users/u1`), { status: 200, body: { id: 'u1', userInfo: {}, users: [] } })
    assert.deepStrictEqual(await http('POST', `${h1.url}/rooms/lobby/users/u1`),
      { status: 409, body: { error: { code: 'USER_EXISTS', message: "user 'u1' is already in room 'lobby'" } } })
    const stats = await waitFor(async () => {
      const { body } = await http('GET', `${h2.url}/stats`)
      return body.nodes.length === 2 && body
    }, { timeout: 10000, message: 'h2 sees two nodes' })
    assert.equal(stats.nodeId, 'h2')
    assert.deepStrictEqual(stats.nodes.map((n) => n.nodeId), ['h1', 'h2'])
    await redis.kill()
    const { status, body } = await waitFor(async () => {
      const r = await http('POST', `${h1.url}/rooms/another`)
      return r.status !== 200 && r
    }, { timeout: 5000, message: 'createRoom fails without Redis' })
    assert.equal(status, 503)
    assert.equal(body.error.code, 'UNAVAILABLE')
    for (const s of servers) s.proc.kill('SIGTERM')
    assert.deepStrictEqual(await Promise.all(servers.map((s) => withTimeout(s.exited, 10000, 'serve exits on SIGTERM'))), [0, 0])
  } finally {
    for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL')
    await redis.kill()
  }
})

after(async () => {
  for (const n of [...children]) await n.stop().catch(() => {})
  await closeEverything()
})
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
