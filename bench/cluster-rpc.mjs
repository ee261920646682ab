// What the cluster layer costs and how fast it reacts. Run by hand, from the repository root:
//
//   node bench/cluster-rpc.mjs [--calls 2000] [--kills 3] [--redis-url redis://127.0.0.1:6379]
//
// Without --redis-url it starts its own redis-server (Debian's package, persistence off) on a
// free loopback port and stops it at the end. Node A runs in this process (its calls are timed
// here, with no IPC in between); node B runs in its own process (__test__/cluster-node.mjs).
//
// 1. Latency: the same call on a room A holds (local: the native call only) and on a room B holds
//    (forwarded: directory lookup, request and reply over Redis pub/sub, B's native call),
//    sequentially, p50/p99/mean: getRoom (read), addUser+removeUser (a write and its undo), and
//    createRoom+deleteRoom placed on A vs on B.
// 2. Redis operations per call: INFO commandstats before and after the forwarded calls, minus
//    what the heartbeats did over the same time (measured on an idle period first). Both the
//    commands Redis executed (Lua scripts' inner commands included) and the client round trips.
// 3. Dead-node detection: B is killed with SIGKILL, the time until A emits roomclosed nodeLost
//    for B's room; --kills times with the defaults (heartbeatMs 2000, nodeTimeoutMs 10000) and
//    with the tests' (300, 2000).

import { fork, spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import net from 'node:net'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const require = createRequire(import.meta.url)
const { MediaServer } = require('../index.js')
const Redis = require('ioredis')
const nodeScript = fileURLToPath(new URL('../__test__/cluster-node.mjs', import.meta.url))

const { values: args } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    kills: { type: 'string', default: '3' },
    'redis-url': { type: 'string' }
  }
})
const CALLS = Number(args.calls)
const KILLS = Number(args.kills)
const PREFIX = `bench${process.pid}`

async function freePort () {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

let redisProc = null
let redisUrl = args['redis-url']
if (!redisUrl) {
  const port = await freePort()
  redisProc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  redisUrl = `redis://127.0.0.1:${port}`
  for (let i = 0; spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG'; i++) {
    if (i > 100) throw new Error('redis-server did not start')
    await sleep(50)
  }
}
const admin = new Redis(redisUrl)

function startB (timing) {
  const options = { listenIp: '127.0.0.1', workers: 1, cluster: { redisUrl, nodeId: 'B', prefix: PREFIX, ...timing } }
  const child = fork(nodeScript, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  return new Promise((resolve, reject) => {
    child.on('message', (msg) => { if (msg.ready) resolve(child) })
    child.once('exit', (code) => reject(new Error(`node B exited (${code})`)))
  })
}

function startA (timing) {
  return new MediaServer({ listenIp: '127.0.0.1', workers: 1, cluster: { redisUrl, nodeId: 'A', prefix: PREFIX, ...timing } })
}

async function waitReady (media, nodes) {
  for (;;) {
    const s = await media.stats()
    if (s.redisConnected && s.nodes.length === nodes) return
    await sleep(20)
  }
}

/** Rooms through A until one is on A and one on B: { A: roomId, B: roomId }. */
async function roomOnEach (media, tag) {
  const found = {}
  for (let i = 0; !(found.A && found.B); i++) {
    const id = `${tag}-${i}`
    await media.createRoom(id)
    const owner = await admin.hget(`${PREFIX}:rooms`, id)
    found[owner] ??= id
  }
  return found
}

function summary (ms) {
  const s = [...ms].sort((a, b) => a - b)
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))]
  const mean = s.reduce((a, b) => a + b, 0) / s.length
  return { p50: at(0.5), p99: at(0.99), mean }
}

const fmt = (x) => x.toFixed(3)

async function timeCalls (fn) {
  for (let i = 0; i < Math.min(200, CALLS / 10); i++) await fn(i) // warm-up
  const ms = []
  for (let i = 0; i < CALLS; i++) {
    const t0 = performance.now()
    await fn(i)
    ms.push(performance.now() - t0)
  }
  return summary(ms)
}

async function commandStats () {
  const text = await admin.info('commandstats')
  const out = {}
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2])
  return out
}

function delta (before, after) {
  const out = {}
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0)
    if (d > 0 && k !== 'info') out[k] = d
  }
  return out
}

// ---------------------------------------------------------------------------------------
// 1 and 2: latency and Redis operations

const timing = { heartbeatMs: 2000, nodeTimeoutMs: 10000 }
let b = await startB(timing)
const a = startA(timing)
await waitReady(a, 2)
const rooms = await roomOnEach(a, 'lat')

console.log(`Redis ${redisUrl}, ${CALLS} sequential calls each, node A in this process, node B in its own\n`)
console.log('| call | local (room on A) p50 / p99 / mean ms | forwarded (room on B) p50 / p99 / mean ms | added p50 / p99 ms |')
console.log('| --- | --- | --- | --- |')
const rows = [
  ['getRoom', (room) => () => a.getRoom(room)],
  ['addUser + removeUser', (room) => async (i) => { await a.addUser(room, `u${i}`); await a.removeUser(room, `u${i}`) }],
  ['createRoom + deleteRoom', null]
]
for (const [name, make] of rows) {
  let local, forwarded
  if (make) {
    // keep one user in each room so that removeUser never deletes it
    await a.addUser(rooms.A, 'keeper').catch(() => {})
    await a.addUser(rooms.B, 'keeper').catch(() => {})
    local = await timeCalls(make(rooms.A))
    forwarded = await timeCalls(make(rooms.B))
  } else {
    // placement spreads new rooms (each one counts in the load figure): CALLS rooms are
    // created, then deleted, each call timed and counted by where its room landed
    const byOwner = { A: [], B: [] }
    const created = []
    for (let i = 0; i < CALLS; i++) {
      const id = `place-${i}`
      const t0 = performance.now()
      await a.createRoom(id)
      const ms = performance.now() - t0
      created.push({ id, ms, owner: await admin.hget(`${PREFIX}:rooms`, id) })
    }
    for (const room of created) {
      const t0 = performance.now()
      await a.deleteRoom(room.id)
      byOwner[room.owner].push(room.ms + performance.now() - t0)
    }
    local = summary(byOwner.A)
    forwarded = summary(byOwner.B)
  }
  console.log(`| ${name} | ${fmt(local.p50)} / ${fmt(local.p99)} / ${fmt(local.mean)} | ${fmt(forwarded.p50)} / ${fmt(forwarded.p99)} / ${fmt(forwarded.mean)} | ${fmt(forwarded.p50 - local.p50)} / ${fmt(forwarded.p99 - local.p99)} |`)
}

// Redis operations per forwarded call, heartbeats subtracted
const idleMs = 4000
let s0 = await commandStats()
let t0 = performance.now()
await sleep(idleMs)
const idle = delta(s0, await commandStats())
const idleRate = Object.fromEntries(Object.entries(idle).map(([k, v]) => [k, v / (performance.now() - t0)]))
const opsRows = []
for (const [name, fn] of [
  ['getRoom, forwarded', () => a.getRoom(rooms.B)],
  ['getRoom, local', () => a.getRoom(rooms.A)],
  ['addUser, forwarded', (i) => a.addUser(rooms.B, `ops${i}`)],
  ['createRoom (placed anywhere)', (i) => a.createRoom(`ops-room-${i}`)]
]) {
  const n = 500
  s0 = await commandStats()
  t0 = performance.now()
  for (let i = 0; i < n; i++) await fn(i)
  const elapsed = performance.now() - t0
  const d = delta(s0, await commandStats())
  const perCall = {}
  for (const [k, v] of Object.entries(d)) {
    const x = (v - (idleRate[k] ?? 0) * elapsed) / n
    if (x > 0.05) perCall[k] = Math.round(x * 100) / 100
  }
  // a forwarded call's reply is the owner's PUBLISH; createRoom's SCARDs are one pipeline, its
  // HSET/SADD run inside the claim script (EVALSHA)
  const roundTrips = ['hget', 'publish', 'evalsha', 'eval'].reduce((sum, k) => sum + (perCall[k] ?? 0), 0) + (perCall.scard ? 1 : 0)
  opsRows.push(`| ${name} | ${Object.entries(perCall).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'} | ${roundTrips.toFixed(2)} |`)
}
console.log('\nRedis commands per call (INFO commandstats; Lua scripts\' inner commands included; heartbeats subtracted)\n')
console.log('| call | commands executed per call | round trips to Redis, both nodes together |')
console.log('| --- | --- | --- |')
for (const r of opsRows) console.log(r)

await a.close()
b.kill('SIGKILL')
await new Promise((resolve) => b.once('exit', resolve))
await admin.flushdb()

// ---------------------------------------------------------------------------------------
// 3: dead-node detection

console.log('\nDead-node detection: SIGKILL of B -> roomclosed nodeLost on A\n')
console.log('| heartbeatMs / nodeTimeoutMs | runs (ms) | mean ms |')
console.log('| --- | --- | --- |')
for (const timing of [{ heartbeatMs: 2000, nodeTimeoutMs: 10000 }, { heartbeatMs: 300, nodeTimeoutMs: 2000 }]) {
  const runs = []
  for (let k = 0; k < KILLS; k++) {
    await admin.flushdb()
    b = await startB(timing)
    const media = startA(timing)
    await waitReady(media, 2)
    // A reaps only after a whole nodeTimeoutMs connected (the grace after a reconnection)
    await sleep(timing.nodeTimeoutMs + timing.heartbeatMs)
    const room = (await roomOnEach(media, `kill${k}`)).B
    const lost = new Promise((resolve) => media.on('roomclosed', (e) => { if (e.roomId === room && e.reason === 'nodeLost') resolve(performance.now()) }))
    const killedAt = performance.now()
    b.kill('SIGKILL')
    runs.push(Math.round(await lost - killedAt))
    await media.close()
  }
  console.log(`| ${timing.heartbeatMs} / ${timing.nodeTimeoutMs} | ${runs.join(', ')} | ${Math.round(runs.reduce((x, y) => x + y, 0) / runs.length)} |`)
}

admin.disconnect()
if (redisProc) redisProc.kill('SIGKILL')
setImmediate(() => process.exit(0))
