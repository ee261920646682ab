// A seeded, random property test of the whole API: thousands of calls with hostile arguments
// of every JS type, bodies of wrong shapes, and real offers and answers of libwebrtc peers
// (used correctly, for the wrong user or room, or mutated), sequential and in concurrent bursts
// on one room. Invariants, on every call:
//
// - a rejection is an Error whose `code` is in the spec's table, and not INTERNAL (the server
//   has no business answering INTERNAL to any input), nor SERVER_CLOSED from an open server; a
//   synchronous throw (constructor, on, off) carries such a code too; an async method never
//   throws synchronously and always settles;
// - a failed call changes nothing: every room's getRoom() (connection states left out, they
//   move on their own) and the stats() counts are the same after it as before (asserted for
//   the sequential calls only; in a burst, calls on one room run concurrently and only the
//   codes and shapes are checked);
// - a call that succeeds resolves to the spec's exact shape (every key, no other);
// - the process survives (the server runs in this process: a Rust panic that aborted Node
//   would fail this file);
// - at the end, with everything deleted, stats() is back to zero (liveConnections and
//   portsInUse included), this process's open fds are exactly back to their count before the
//   run, and its RSS is within RSS_LIMIT_MB of it. "Before the run" is after the first WARMUP
//   calls (1000, checked like the others), once everything they made is deleted: by then the
//   runtime has made what it makes lazily and the allocator holds its working size for this
//   load (RSS climbs to a plateau over the first few thousand calls; 16000 calls of seed 77
//   stayed within 150-158 MB from call 5000 on), so a leak shows as growth past it.
//
// Seeded: PROPERTY_SEED=<n> replays a run (the seed is printed first, and in every failure).
// Every choice comes from mulberry32; what is not ours is the peers' own randomness (ICE
// credentials, fingerprints, SSRCs) and timing (connection states, the order in which a
// burst's concurrent calls run), so a replay makes the same calls, not byte-identical SDPs.
// PROPERTY_CALLS (5200), PROPERTY_WARMUP (1000) and PROPERTY_SECONDS (150) bound a run (about
// a minute on the project's 2-core machine); PROPERTY_TRACE=1 prints every call before it is
// made (to find the call that killed the process, if one ever does); PROPERTY_PROGRESS=1
// prints RSS and stats() every 500 calls.
//
// The regression tests at the end of the file are the bugs this test found, each reduced to
// the few calls that show it.
//
// The libwebrtc peers run in a child process (property-peers.mjs), so that this process's fds
// and RSS are the server's (and Node's) alone.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import util from 'node:util'
import v8 from 'node:v8'
import vm from 'node:vm'
import { setTimeout as sleep } from 'node:timers/promises'
import { mulberry32, hostile, userInfo, describe, mutateSdp, wrongType, SDP_MUTATIONS } from './property-gen.mjs'

v8.setFlagsFromString('--expose-gc')
const gc = globalThis.gc || vm.runInNewContext('gc')
const require = createRequire(import.meta.url)

const SEED = process.env.PROPERTY_SEED !== undefined && process.env.PROPERTY_SEED !== ''
  ? Number(process.env.PROPERTY_SEED) >>> 0
  : (Date.now() ^ (process.pid << 8)) >>> 0
const CALLS = Number(process.env.PROPERTY_CALLS || 5200)
const MIN_CALLS = Math.min(5000, CALLS)
const MAX_SECONDS = Number(process.env.PROPERTY_SECONDS || 150)
const WARMUP = Number(process.env.PROPERTY_WARMUP || 1000)
const TRACE = process.env.PROPERTY_TRACE === '1'
const CALL_TIMEOUT_MS = 20000
const RSS_LIMIT_MB = 60
// This file's ports (no other test file uses 49300-49379): the property's server, then the regression tests'.
const PORT_RANGE = { min: 49300, max: 49347 }
const LIMITS = { maxRooms: 8, maxUsersPerRoom: 6, maxConnections: 36 }

const CODES = new Set(['INVALID_ARGUMENT', 'INVALID_SDP', 'ROOM_NOT_FOUND', 'USER_NOT_FOUND', 'ROOM_EXISTS', 'USER_EXISTS',
  'NOT_PRODUCING', 'NO_PENDING_OFFER', 'RESOURCE_EXHAUSTED', 'SERVER_CLOSED', 'INTERNAL'])
const EVENTS = ['connectionstatechange', 'constraintschange', 'roomclosed', 'offertimeout']
const STATES = new Set(['new', 'connecting', 'connected', 'disconnected', 'failed', 'closed'])
const DEVICES = ['d0', 'd1', 'd2']
const ROOM_IDS = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', '7', 'Ünï 名前 🎥', 'line\r\nbreak', 'z'.repeat(256)]
const USER_IDS = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5', '1', 'é'.repeat(256), 'x\r\na=candidate:1 1 udp 1 6.6.6.6 6 typ host']

console.log(`property seed=${SEED} (replay: PROPERTY_SEED=${SEED} node --test __test__/property.test.mjs)`)

// ---------------------------------------------------------------------------------------
// Small utilities

const TIMEOUT = Symbol('timeout')
function withTimeout (promise, ms) {
  let timer
  return Promise.race([promise, new Promise((resolve) => { timer = setTimeout(() => resolve(TIMEOUT), ms) })])
    .finally(() => clearTimeout(timer))
}

function openFds () {
  return fs.readdirSync('/proc/self/fd').length
}

async function settleGc () {
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(150)
  }
}

/** The id the server reads from a JS value, or null when it is not an id. */
function normId (v) {
  if (typeof v === 'string') {
    const s = v.toWellFormed ? v.toWellFormed() : v
    return s.length > 0 && [...s].length <= 256 ? s : null
  }
  if (typeof v === 'number' && Number.isInteger(v) && Math.abs(v) < 2 ** 53) return String(v)
  return null
}

/** The id the server reads from a value inside a body: the same rule as for an id argument
 *  (a number's JSON text past 2**53 - 1 is refused, as the number itself is). */
function normBodyId (v) {
  return normId(v)
}

const isPlain = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype
const sortedKeys = (o) => Object.keys(o).sort().join(',')

/** The room with connection states left out (they move on their own). */
function stateless (view) {
  return {
    ...view,
    users: view.users.map((u) => ({ ...u, producer: u.producer && { ...u.producer, state: undefined } })),
    consumers: view.consumers.map((c) => ({ ...c, state: undefined }))
  }
}

const COUNT_KEYS = ['rooms', 'users', 'upstreamConnections', 'downstreamConnections']
const counts = (s) => Object.fromEntries(COUNT_KEYS.map((k) => [k, s[k]]))

// ---------------------------------------------------------------------------------------
// The peers' process

class Peers {
  constructor () {
    this.child = fork(new URL('./property-peers.mjs', import.meta.url), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.next = 0
    this.pending = new Map()
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`the peers' process exited (code ${code}, signal ${signal})`))
      this.pending.clear()
      resolve()
    }))
    this.ready = new Promise((resolve) => {
      this.child.on('message', (msg) => {
        if (msg.ready) return resolve()
        const p = this.pending.get(msg.id)
        if (!p) return
        this.pending.delete(msg.id)
        if (msg.error) p.reject(new Error(`peers: ${msg.error}`))
        else p.resolve(msg.result)
      })
    })
  }

  call (op, args = {}) {
    const id = ++this.next
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(id); reject(new Error(`peers: ${op} timed out`)) }, 30000)
      this.pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      this.child.send({ id, op, ...args })
    })
  }

  async stop () {
    if (this.child.connected) this.child.send({ op: 'exit' })
    const killer = setTimeout(() => { try { this.child.kill('SIGKILL') } catch {} }, 10000)
    await this.exited
    clearTimeout(killer)
  }
}

// ---------------------------------------------------------------------------------------
// The run's state

let server = null
let peers = null
let rng = null
let serverOpen = true
const violations = []
const history = [] // the last calls, as text
const outcomes = new Map() // method -> Map(code|'ok' -> count)
let callCount = 0 // generated API calls made
let checkCount = 0 // calls made to check (getRoom/stats snapshots)
let burstCount = 0
const logCounts = { error: 0, warn: 0 }
const logErrors = []
const events = new Map()
const listeners = [] // [event, fn] registered with on() and not yet removed

const model = {
  rooms: new Map(), // id -> RoomView as getRoom returned it
  offers: new Map(), // `${room}\u0001${consumer}\u0001${producer}` -> the latest server offer (sdp)
  bindings: new Map(), // device -> {room, user}: the device produces as that user
  everRooms: new Set(),
  named: new Set(), // every room id a call named or created
  pool: { clientOffers: [], clientAnswers: [], serverOffers: [], serverAnswers: [] }
}

const offerKey = (room, consumer, producer) => `${room}\u0001${consumer}\u0001${producer}`

function pooled (list, item, max = 12) {
  list.push(item)
  if (list.length > max) list.shift()
}

let peerFailures = 0
/** A call to the peers' process; a failure of theirs is not the server's: `{error}`. */
async function peerCall (op, args) {
  try {
    return await peers.call(op, args)
  } catch (err) {
    peerFailures++
    return { error: String(err.message || err) }
  }
}

function record (method, code) {
  let m = outcomes.get(method)
  if (!m) outcomes.set(method, (m = new Map()))
  m.set(code, (m.get(code) || 0) + 1)
}

const violationKinds = new Map() // a violation's kind (its text without ids) -> {count, first}
const MAX_VIOLATIONS = 200

/** What a violation is about, for grouping: its problem with quoted ids, numbers and SDPs left out. */
function violationKind (call, problem) {
  return `${call.method}: ${problem.split('\n')[0].replace(/'[^']*'|"[^"]*"/g, '…').replace(/\d+/g, 'N').slice(0, 200)}`
}

function violation (call, problem, kind = violationKind(call, problem)) {
  const seen = violationKinds.get(kind)
  if (seen) { seen.count++; violations.push(seen.first); return }
  const text = `property seed=${SEED} call #${call.n} ${call.burst ? `(in burst ${call.burst}, concurrent) ` : ''}` +
    `${call.desc}\n    -> ${problem}\n    the calls before it (latest last):\n${history.slice(-12, -1).map((h) => `      ${h}`).join('\n')}`
  violations.push(text)
  violationKinds.set(kind, { count: 1, first: text })
  console.error(`\nVIOLATION ${text}\n`)
}

function sdpDesc (sdp, from) {
  return `<${from}, ${typeof sdp === 'string' ? sdp.length : '?'} chars>`
}

// ---------------------------------------------------------------------------------------
// Argument generators: each returns {value, desc}

function idValue (id) {
  if (/^(0|[1-9]\d{0,14})$/.test(id) && rng.chance(0.5)) return { value: Number(id), desc: id }
  return { value: id, desc: describe(id) }
}

function roomArg (ctx) {
  if (ctx.room !== undefined && rng.chance(0.9)) return idValue(ctx.room)
  const existing = [...model.rooms.keys()]
  const x = rng.next()
  if (x < 0.65 && existing.length) return idValue(rng.pick(existing))
  if (x < 0.87) return idValue(rng.pick(ROOM_IDS))
  return hostile(rng)
}

function userArg (room, { fresh = 0 } = {}) {
  const users = (room != null && model.rooms.get(room)?.users.map((u) => u.id)) || []
  const x = rng.next()
  if (x < fresh) {
    const free = USER_IDS.filter((u) => !users.includes(u))
    return idValue(free.length ? rng.pick(free) : rng.pick(USER_IDS))
  }
  if (x < 0.7 && users.length) return idValue(rng.pick(users))
  if (x < 0.9) return idValue(rng.pick(USER_IDS))
  return hostile(rng)
}

/** A valid body in an exotic wrapper that JSON.stringify still reads as the body. */
function wrapBody (body, desc) {
  switch (rng.int(6)) {
    case 0: return { value: Object.freeze(body), desc: `Object.freeze(${desc})` }
    case 1: return { value: new Proxy(body, {}), desc: `new Proxy(${desc}, {})` }
    case 2: return { value: { toJSON: () => body }, desc: `{ toJSON: () => ${desc} }` }
    case 3: {
      const o = {}
      for (const k of Object.keys(body)) Object.defineProperty(o, k, { get: () => body[k], enumerable: true })
      return { value: o, desc: `${desc} (getters)` }
    }
    case 4: return { value: Object.assign(Object.create(null), body), desc: `Object.create(null) ∪ ${desc}` }
    default: return { value: Object.assign(Object.create({ inherited: true }), body), desc: `${desc} (with an inherited key)` }
  }
}

function maybeWrap (b) {
  return b.value && typeof b.value === 'object' && rng.chance(0.15) ? wrapBody(b.value, b.desc) : b
}

function constraintsArg () {
  switch (rng.int(9)) {
    case 0: return { value: { audio: rng.chance(0.5) }, desc: null }
    case 1: return { value: { video: rng.chance(0.5) }, desc: null }
    case 2: case 3: return { value: { audio: rng.chance(0.5), video: rng.chance(0.5) }, desc: null }
    case 4: return { value: {}, desc: null }
    case 5: return { value: { audio: null, video: null }, desc: null }
    case 6: { const h = hostile(rng); return { value: { audio: h.value, video: true }, desc: `{ audio: ${h.desc}, video: true }` } }
    case 7: return { value: { audio: 'true', video: 1 }, desc: null }
    default: return hostile(rng)
  }
}

const descOf = (x) => x.desc ?? describe(x.value)

// ---------------------------------------------------------------------------------------
// Call generators. A call: {method, args: [{value, desc}], room (the id it names, or null),
// prep (async, fills args that need the peers), after (async, given the outcome)}.

function pendingOffers (room) {
  const out = []
  for (const [id, view] of model.rooms) {
    if (room !== undefined && id !== room) continue
    for (const c of view.consumers) {
      const sdp = model.offers.get(offerKey(id, c.userId, c.producerId))
      if (c.pendingOffer && sdp) out.push({ room: id, consumer: c.userId, producer: c.producerId, sdp })
    }
  }
  return out
}

function deviceFor (room, user, ctx) {
  for (const [dev, b] of model.bindings) if (b.room === room && b.user === user) return ctx.devices?.has(dev) ? null : dev
  const usable = DEVICES.filter((d) => !ctx.devices?.has(d))
  if (!usable.length) return null
  const free = usable.filter((d) => !model.bindings.has(d))
  return free.length ? rng.pick(free) : rng.pick(usable)
}

/** Records what a successful produce or addUser handed out (offers to answer later). */
function noteOffers (room, items, { producer, consumer }) {
  for (const it of items || []) {
    if (!it?.offer?.sdp) continue
    const c = consumer ?? it.id
    const p = producer ?? it.id
    model.offers.set(offerKey(room, c, p), it.offer.sdp)
    pooled(model.pool.serverOffers, it.offer.sdp)
  }
}

function afterProduce (room, user) {
  return async (outcome) => {
    if (!outcome.ok || room == null || user == null) return
    noteOffers(room, outcome.value.outbound, { producer: user })
    if (outcome.value.answer?.sdp) pooled(model.pool.serverAnswers, outcome.value.answer.sdp)
  }
}

const gen = {
  createRoom (ctx) {
    const idKind = rng.weighted({ none: 1, null: 1, id: 7, hostile: 2 })
    const id = idKind === 'none' ? null : idKind === 'null' ? { value: null, desc: 'null' } : idKind === 'id' ? roomArg(ctx) : hostile(rng)
    const bodyKind = rng.weighted({ absent: 2, empty: 1, user: 5, userInfo: 4, userInfoAlone: 1, hostile: 2, hostileUser: 1 })
    const room = id ? normId(id.value) : null
    let body = null
    if (bodyKind === 'empty') body = { value: {}, desc: '{}' }
    else if (bodyKind === 'user' || bodyKind === 'userInfo') {
      const u = userArg(room, { fresh: 0.5 })
      if (bodyKind === 'user') body = { value: { userId: u.value }, desc: `{ userId: ${u.desc} }` }
      else {
        const info = userInfo(rng)
        body = { value: { userId: u.value, userInfo: info.value }, desc: `{ userId: ${u.desc}, userInfo: ${info.desc} }` }
      }
      body = maybeWrap(body)
    } else if (bodyKind === 'userInfoAlone') {
      const info = userInfo(rng)
      body = { value: { userInfo: info.value }, desc: `{ userInfo: ${info.desc} }` }
    } else if (bodyKind === 'hostile') body = hostile(rng)
    else if (bodyKind === 'hostileUser') {
      const h = hostile(rng)
      body = { value: { userId: h.value }, desc: `{ userId: ${h.desc} }` }
    }
    const args = id === null && body === null ? [] : [id ?? { value: undefined, desc: 'undefined' }, ...(body ? [body] : [])]
    return { method: 'createRoom', args, room, generatedId: !room && (idKind === 'none' || idKind === 'null') }
  },

  addUser (ctx) {
    const r = roomArg(ctx)
    const room = normId(r.value)
    const u = userArg(room, { fresh: 0.6 })
    const kind = rng.weighted({ absent: 3, empty: 1, info: 4, null: 1, hostile: 2 })
    const args = [r, u]
    if (kind === 'empty') args.push({ value: {}, desc: '{}' })
    else if (kind === 'info') { const i = userInfo(rng); args.push(maybeWrap({ value: { userInfo: i.value }, desc: `{ userInfo: ${i.desc} }` })) }
    else if (kind === 'null') args.push({ value: null, desc: 'null' })
    else if (kind === 'hostile') args.push(hostile(rng))
    const user = normId(u.value)
    return {
      method: 'addUser',
      args,
      room,
      after: async (o) => { if (o.ok && room != null) noteOffers(room, o.value.users, { consumer: user }) }
    }
  },

  produce (ctx) {
    const kind = rng.weighted({ correct: 6, misuse: 5, mutated: 5, constraints: 3, hostile: 3, serverSdp: 1 })
    if (kind === 'correct') {
      // A device offers for a user of a room, and gets the answer: real media flows.
      const rooms = ctx.room !== undefined ? [ctx.room] : [...model.rooms.keys()]
      const room = rooms.length ? rng.pick(rooms) : null
      const users = room != null ? (model.rooms.get(room)?.users ?? []).map((u) => u.id).filter((u) => !ctx.users?.has(u)) : []
      const kinds = rng.weighted({ both: 6, audio: 1, video: 1 })
      const extra = rng.chance(0.25) ? constraintsArg() : null
      const user = users.length ? rng.pick(users) : null
      const dev = user != null ? deviceFor(room, user, ctx) : null
      if (dev != null) {
        ctx.devices?.add(dev)
        ctx.users?.add(user)
        const call = {
          method: 'produce',
          args: [idValue(room), idValue(user), { value: null, desc: null }],
          room,
          async prep () {
            const bound = model.bindings.get(dev)
            if (bound && (bound.room !== room || bound.user !== user)) {
              model.bindings.delete(dev)
              await peerCall('upClose', { dev })
            }
            const offer = await peerCall('offer', { dev, audio: kinds !== 'video', video: kinds !== 'audio' })
            if (offer.error) { offer.type = 'offer'; offer.sdp = `v=0\r\n(the peer could not offer: ${offer.error})`; delete offer.error }
            pooled(model.pool.clientOffers, offer.sdp)
            const body = { offer }
            if (extra) body.constraints = extra.value
            call.args[2] = { value: body, desc: `{ offer: ${sdpDesc(offer.sdp, `a real offer of ${dev} (${kinds})`)}${extra ? `, constraints: ${descOf(extra)}` : ''} }` }
          },
          async after (o) {
            await afterProduce(room, user)(o)
            if (o.ok) {
              model.bindings.set(dev, { room, user })
              await peerCall('upAnswer', { dev, sdp: o.value.answer.sdp })
            } else {
              await peerCall('upRollback', { dev })
            }
          }
        }
        return call
      }
      // nobody to produce as: fall through to constraints
    }
    const r = roomArg(ctx)
    const room = normId(r.value)
    const u = userArg(room)
    const user = normId(u.value)
    const call = { method: 'produce', args: [r, u, null], room, after: afterProduce(room, user) }
    if (kind === 'misuse' || kind === 'mutated' || kind === 'serverSdp') {
      const fresh = kind !== 'serverSdp' && (rng.chance(0.25) || model.pool.clientOffers.length === 0)
      const dev = rng.pick(DEVICES)
      const pick = rng.u32()
      const mutate = kind === 'mutated' ? (rng.chance(0.8) ? 'sdp' : 'type') : null
      const sub = mulberry32(rng.u32())
      const extra = rng.chance(0.2) ? constraintsArg() : null
      const busy = ctx.devices?.has(dev)
      if (fresh && !busy) ctx.devices?.add(dev)
      call.prep = async () => {
        let sdp, from
        if (kind === 'serverSdp') {
          const list = [...model.pool.serverOffers, ...model.pool.serverAnswers]
          sdp = list.length ? list[pick % list.length] : 'v=0\r\n'
          from = list.length ? 'an SDP the server made' : 'no server SDP yet: "v=0\\r\\n"'
        } else if (fresh && !busy && !model.bindings.has(dev)) {
          sdp = (await peerCall('offer', { dev, audio: true, video: pick % 5 !== 0 })).sdp ?? 'v=0\r\n'
          await peerCall('upRollback', { dev })
          pooled(model.pool.clientOffers, sdp)
          from = `a fresh real offer of ${dev}`
        } else {
          const list = model.pool.clientOffers
          sdp = list.length ? list[pick % list.length] : 'v=0\r\n'
          from = list.length ? 'a real offer used before' : 'no real offer yet: "v=0\\r\\n"'
        }
        let type = 'offer'
        if (mutate === 'sdp') { const m = mutateSdp(sdp, sub); sdp = m.sdp; from += `, ${m.desc}` }
        if (mutate === 'type') type = wrongType('offer', sub)
        const body = { offer: { type, sdp } }
        if (extra) body.constraints = extra.value
        call.args[2] = { value: body, desc: `{ offer: { type: ${JSON.stringify(type)}, sdp: ${sdpDesc(sdp, from)} }${extra ? `, constraints: ${descOf(extra)}` : ''} }` }
      }
      return call
    }
    if (kind === 'constraints' || kind === 'correct') {
      const c = constraintsArg()
      call.args[2] = maybeWrap({ value: { constraints: c.value }, desc: `{ constraints: ${descOf(c)} }` })
      return call
    }
    // hostile bodies
    const h = hostile(rng)
    const h2 = hostile(rng)
    const shapes = [
      () => h,
      () => ({ value: { offer: h.value }, desc: `{ offer: ${h.desc} }` }),
      () => ({ value: { offer: { type: h.value, sdp: h2.value } }, desc: `{ offer: { type: ${h.desc}, sdp: ${h2.desc} } }` }),
      () => ({ value: { offer: { type: 'offer', sdp: h.value } }, desc: `{ offer: { type: "offer", sdp: ${h.desc} } }` }),
      () => ({ value: { offer: null, constraints: h.value }, desc: `{ offer: null, constraints: ${h.desc} }` }),
      () => ({ value: { offer: { type: 'offer', sdp: 'v=0\r\n' } }, desc: '{ offer: { type: "offer", sdp: "v=0\\r\\n" } }' }),
      () => ({ value: {}, desc: '{}' }),
      () => ({ value: { offer: { type: 'offer' } }, desc: '{ offer: { type: "offer" } }' }),
      () => ({ value: [{ offer: h.value }], desc: `[{ offer: ${h.desc} }]` })
    ]
    call.args[2] = rng.pick(shapes)()
    if (rng.chance(0.1)) call.args.pop() // no body at all
    return call
  },

  consume (ctx) {
    const kind = rng.weighted({ correct: 5, misuse: 4, mutated: 4, mixed: 2, stale: 2, hostile: 4 })
    const pending = pendingOffers(ctx.room)
    if ((kind === 'correct' || kind === 'mutated' || kind === 'mixed') && pending.length) {
      // Answers made by the peers for offers the server handed out, all for one consumer.
      const first = rng.pick(pending)
      const same = pending.filter((p) => p.room === first.room && p.consumer === first.consumer)
      const items = kind === 'mixed' ? same : rng.chance(0.3) ? same : [first]
      const form = items.length > 1 || rng.chance(0.3) ? 'answers' : 'single'
      const bad = kind === 'correct' ? (rng.chance(0.1) ? 'reversed' : null) : rng.int(items.length)
      const badMode = rng.weighted({ sdp: 5, type: 1, id: 1 })
      const sub = mulberry32(rng.u32())
      const call = {
        method: 'consume',
        args: [idValue(first.room), idValue(first.consumer), null],
        room: first.room,
        async prep () {
          const made = await Promise.all(items.map((p) => peerCall('answer', { key: offerKey(p.room, p.consumer, p.producer), sdp: p.sdp })))
          const answers = []
          const descs = []
          made.forEach((m, i) => {
            const p = items[i]
            let sdp = m.sdp ?? `v=0\r\n(the peer could not answer: ${m.error})`
            let from = `the real answer of ${describe(p.consumer)} to ${describe(p.producer)}'s offer`
            let type = 'answer'
            let id = p.producer
            if (bad === i) {
              if (badMode === 'sdp') { const mu = mutateSdp(sdp, sub); sdp = mu.sdp; from += `, ${mu.desc}` }
              if (badMode === 'type') type = wrongType('answer', sub)
              if (badMode === 'id') { const others = model.rooms.get(p.room)?.users.map((u) => u.id).filter((u) => u !== p.producer) ?? []; id = others.length ? others[sub.int(others.length)] : 'nobody' }
            }
            if (m.sdp && bad !== i) pooled(model.pool.clientAnswers, { ...p, sdp: m.sdp })
            answers.push({ id, answer: { type, sdp } })
            descs.push(`{ id: ${describe(id)}, answer: { type: ${JSON.stringify(type)}, sdp: ${sdpDesc(sdp, from)} } }`)
          })
          if (bad === 'reversed') { answers.reverse(); descs.reverse() }
          call.args[2] = form === 'answers'
            ? { value: { answers }, desc: `{ answers: [${descs.join(', ')}] }` }
            : { value: answers[0], desc: descs[0] }
        }
      }
      return call
    }
    const r = roomArg(ctx)
    const room = normId(r.value)
    const u = userArg(room)
    const call = { method: 'consume', args: [r, u, null], room }
    if (kind !== 'hostile') {
      // A real answer used before or made for another pair, maybe mutated, maybe for the wrong producer.
      const pick = rng.u32()
      const mutate = rng.chance(kind === 'mutated' ? 0.9 : 0.2)
      const sub = mulberry32(rng.u32())
      const p = userArg(room)
      const form = rng.chance(0.3) ? 'answers' : 'single'
      const sameTarget = kind === 'stale' && rng.chance(0.7)
      call.prep = async () => {
        const list = model.pool.clientAnswers
        const a = list.length ? list[pick % list.length] : { sdp: 'v=0\r\n', room: null }
        let sdp = a.sdp
        let from = list.length ? 'a real answer used before' : 'no real answer yet: "v=0\\r\\n"'
        if (mutate) { const m = mutateSdp(sdp, sub); sdp = m.sdp; from += `, ${m.desc}` }
        let id = p
        if (sameTarget && a.room != null) {
          call.args[0] = idValue(a.room)
          call.args[1] = { value: a.consumer, desc: describe(a.consumer) }
          call.room = a.room
          id = { value: a.producer, desc: describe(a.producer) }
          from = `the answer ${describe(a.consumer)} gave ${describe(a.producer)} before`
        }
        const item = { id: id.value, answer: { type: 'answer', sdp } }
        const itemDesc = `{ id: ${id.desc}, answer: { type: "answer", sdp: ${sdpDesc(sdp, from)} } }`
        call.args[2] = form === 'answers' ? { value: { answers: [item] }, desc: `{ answers: [${itemDesc}] }` } : { value: item, desc: itemDesc }
      }
      return call
    }
    const h = hostile(rng)
    const h2 = hostile(rng)
    const shapes = [
      () => h,
      () => ({ value: {}, desc: '{}' }),
      () => ({ value: { id: h.value }, desc: `{ id: ${h.desc} }` }),
      () => ({ value: { answer: h.value }, desc: `{ answer: ${h.desc} }` }),
      () => ({ value: { id: h.value, answer: { type: 'answer', sdp: 'v=0\r\n' } }, desc: `{ id: ${h.desc}, answer: { type: "answer", sdp: "v=0\\r\\n" } }` }),
      () => ({ value: { id: 'u0', answer: { type: h.value, sdp: h2.value } }, desc: `{ id: "u0", answer: { type: ${h.desc}, sdp: ${h2.desc} } }` }),
      () => ({ value: { answers: h.value }, desc: `{ answers: ${h.desc} }` }),
      () => ({ value: { answers: [] }, desc: '{ answers: [] }' }),
      () => ({ value: { answers: [h.value] }, desc: `{ answers: [${h.desc}] }` }),
      () => ({ value: { answers: [{ id: 'u0', answer: h.value }] }, desc: `{ answers: [{ id: "u0", answer: ${h.desc} }] }` }),
      () => {
        const a = { id: 'u1', answer: { type: 'answer', sdp: 'v=0\r\n' } }
        return { value: { answers: [a, a] }, desc: '{ answers: [a, a] } (the same producer twice)' }
      }
    ]
    call.args[2] = rng.pick(shapes)()
    if (rng.chance(0.1)) call.args.pop()
    return call
  },

  stopProduce (ctx) {
    const r = roomArg(ctx)
    const room = normId(r.value)
    const producers = (room != null && model.rooms.get(room)?.users.filter((u) => u.producer).map((u) => u.id)) || []
    const u = producers.length && rng.chance(0.6) ? idValue(rng.pick(producers)) : userArg(room)
    const args = [r, u]
    if (rng.chance(0.05)) args.push(hostile(rng))
    return { method: 'stopProduce', args, room }
  },

  removeUser (ctx) {
    const r = roomArg(ctx)
    const room = normId(r.value)
    return { method: 'removeUser', args: [r, userArg(room)], room }
  },

  deleteRoom (ctx) {
    const r = roomArg(ctx)
    return { method: 'deleteRoom', args: rng.chance(0.03) ? [] : [r], room: normId(r.value) }
  },

  getRoom (ctx) {
    const r = roomArg(ctx)
    return { method: 'getRoom', args: [r], room: normId(r.value) }
  },

  getStats (ctx) {
    const r = roomArg(ctx)
    const room = normId(r.value)
    const args = [r]
    const k = rng.int(4)
    if (k === 1) args.push(userArg(room))
    if (k === 2) args.push(hostile(rng))
    if (k === 3) args.push({ value: null, desc: 'null' })
    return { method: 'getStats', args, room }
  },

  stats () {
    const args = rng.chance(0.2) ? [hostile(rng)] : []
    return { method: 'stats', args, room: null }
  },

  onOff () {
    const method = rng.chance(0.6) ? 'on' : 'off'
    const event = rng.chance(0.75) ? { value: rng.pick(EVENTS), desc: null } : rng.chance(0.5) ? hostile(rng) : { value: rng.pick(['ROOMCLOSED', 'roomclosed ', '', 'error', 'close', 'newListener']), desc: null }
    if (event.desc === null) event.desc = describe(event.value)
    let listener
    if (method === 'off' && listeners.length && rng.chance(0.6)) {
      const [ev, fn] = rng.pick(listeners)
      listener = { value: fn, desc: `listener #${fn.n} (registered for ${ev})` }
    } else if (rng.chance(0.8)) {
      const n = listeners.length + 1
      const kinds = [
        () => { const fn = (e) => { events.set(e?.type, (events.get(e?.type) || 0) + 1) }; return fn },
        () => { const fn = async (e) => { events.set(e?.type, (events.get(e?.type) || 0) + 1) }; return fn },
        () => new Proxy((e) => { events.set(e?.type, (events.get(e?.type) || 0) + 1) }, {}),
        () => function (e) { events.set(e?.type, (events.get(e?.type) || 0) + 1) }.bind(null)
      ]
      const fn = rng.pick(kinds)()
      try { fn.n = n } catch {}
      listener = { value: fn, desc: `a new listener #${n}` }
    } else {
      listener = hostile(rng)
      if (typeof listener.value === 'function') listener = { value: 5, desc: '5' } // a function would be a valid listener
    }
    const args = [event, listener]
    return {
      method,
      args,
      room: null,
      sync: true,
      run: () => server[method](event.value, listener.value),
      after: async (o) => {
        if (!o.ok) return
        if (method === 'on') listeners.push([event.value, listener.value])
        else {
          for (let i = listeners.length - 1; i >= 0; i--) {
            if (listeners[i][0] === event.value && listeners[i][1] === listener.value) listeners.splice(i, 1)
          }
        }
      }
    }
  },

  ctor () {
    const KEYS = ['listenIp', 'listenIps', 'announcedIp', 'portRange', 'udpPort', 'enableTcp', 'maxRooms', 'maxUsersPerRoom',
      'maxConnections', 'offerTimeoutMs', 'maxUserInfoBytes', 'onLog', 'logLevel', 'unknownOption']
    const kind = rng.weighted({ hostile: 4, keys: 4, valid: 2 })
    let options
    if (kind === 'hostile') options = hostile(rng)
    else if (kind === 'keys') {
      const o = { listenIp: '127.0.0.1' }
      const descs = []
      for (let i = rng.range(1, 3); i > 0; i--) {
        const key = rng.pick(KEYS)
        let v = hostile(rng)
        // A valid onLog or logLevel would take over this process's logging: only invalid ones.
        if (key === 'onLog' && (typeof v.value === 'function' || v.value == null)) v = { value: 5, desc: '5' }
        if (key === 'logLevel' && (typeof v.value === 'string' || v.value == null)) v = { value: 5, desc: '5' }
        if (key === 'listenIps' || key === 'listenIp') delete o.listenIp
        o[key] = v.value
        descs.push(`${key}: ${v.desc}`)
      }
      options = { value: o, desc: `{ listenIp: "127.0.0.1", ${descs.join(', ')} }` }
    } else {
      options = rng.pick([
        { value: undefined, desc: 'undefined' },
        { value: null, desc: 'null' },
        { value: {}, desc: '{}' },
        { value: { listenIp: '127.0.0.1' }, desc: '{ listenIp: "127.0.0.1" }' },
        { value: { listenIp: '127.0.0.1', udpPort: 0 }, desc: '{ listenIp: "127.0.0.1", udpPort: 0 }' },
        { value: Object.freeze({ listenIp: '127.0.0.1', maxRooms: 1, offerTimeoutMs: null }), desc: 'Object.freeze({ listenIp: "127.0.0.1", maxRooms: 1, offerTimeoutMs: null })' },
        { value: { toJSON: () => ({ listenIps: ['127.0.0.1', { ip: '127.0.0.1' }] }) }, desc: '{ toJSON: () => ({ listenIps: ["127.0.0.1", { ip: "127.0.0.1" }] }) } (a repeated address)' }
      ])
    }
    const { MediaServer } = require('../index.js')
    const follow = rng.range(1, 3)
    return {
      method: 'new MediaServer',
      args: [options],
      room: null,
      sync: true,
      run: () => new MediaServer(options.value),
      after: async (o) => {
        if (!o.ok) return
        await exerciseSecondServer(o.value, follow)
      }
    }
  }
}

/** A server made by a generated constructor call: a few calls, close(), then SERVER_CLOSED. */
async function exerciseSecondServer (srv, follow) {
  const calls = [
    ['stats', []],
    ['createRoom', ['second', { userId: 'a', userInfo: { x: 1 } }]],
    ['addUser', ['second', 'b']],
    ['getRoom', ['second']],
    ['deleteRoom', ['second']]
  ]
  const run = async (label, method, args, expect) => {
    const call = { n: ++callCount, desc: `(second server) ${label}${method}(${args.map((a) => describe(a)).join(', ')})`, method, args: [] }
    history.push(call.desc)
    const o = await invoke(call, () => srv[method](...args))
    record(`(second server) ${method}`, o.ok ? 'ok' : o.error?.code)
    if (expect === 'SERVER_CLOSED') {
      if (o.ok || o.error?.code !== 'SERVER_CLOSED') violation(call, `expected SERVER_CLOSED after close(), got ${o.ok ? `a result ${util.inspect(o.value)}` : `${o.error?.code}: ${o.error?.message}`}`)
      return
    }
    if (o.ok) checkShape(call, method, o.value, { args: args.map((value) => ({ value })), srv })
    else checkError(call, o, { open: true })
  }
  for (const [method, args] of calls.slice(0, follow + 1)) await run('', method, args)
  await run('', 'close', [])
  for (const [method, args] of calls.slice(0, follow)) await run('after close: ', method, args, 'SERVER_CLOSED')
  await run('after close: ', 'close', [], 'SERVER_CLOSED')
}

// ---------------------------------------------------------------------------------------
// Running a call and checking it

async function invoke (call, fn) {
  if (TRACE) fs.writeSync(2, `property call #${call.n}: ${call.desc}\n`)
  let result
  try {
    result = fn()
  } catch (error) {
    return { ok: false, error, sync: true }
  }
  if (call.sync) return { ok: true, value: result }
  if (!(result instanceof Promise)) return { ok: true, value: result, notPromise: true }
  result.catch(() => {}) // settled late, after a timeout: not an unhandled rejection
  try {
    const value = await withTimeout(result, CALL_TIMEOUT_MS)
    if (value === TIMEOUT) return { ok: false, timeout: true }
    return { ok: true, value }
  } catch (error) {
    return { ok: false, error }
  }
}

function checkError (call, o, { open = serverOpen } = {}) {
  if (o.timeout) return violation(call, `did not settle within ${CALL_TIMEOUT_MS} ms`)
  const err = o.error
  const what = o.sync ? 'threw' : 'rejected with'
  if (!call.sync && o.sync) violation(call, `threw synchronously instead of returning a rejected promise: ${util.inspect(err)}`)
  if (!(err instanceof Error)) return violation(call, `${what} a value that is not an Error: ${util.inspect(err)}`)
  if (!CODES.has(err.code)) return violation(call, `${what} an Error whose code ${util.inspect(err.code)} is not in the spec's table: ${err.message}`, `${call.method}: code ${String(err.code)} not in the table`)
  if (err.code === 'INTERNAL') return violation(call, `${what} INTERNAL: ${err.message}`, `${call.method}: INTERNAL: ${err.message.replace(/'[^']*'/g, '…').replace(/\d+/g, 'N').slice(0, 120)}`)
  if (err.code === 'SERVER_CLOSED' && open) return violation(call, `${what} SERVER_CLOSED from an open server: ${err.message}`)
  if (typeof err.message !== 'string' || err.message.length === 0) violation(call, `${what} ${err.code} with no message`)
}

const SDP_KEYS = 'sdp,type'
function checkDescription (problems, where, d, type) {
  if (!isPlain(d) || sortedKeys(d) !== SDP_KEYS) return problems.push(`${where} is not {type, sdp}: ${util.inspect(d, { depth: 1 })}`)
  if (d.type !== type) problems.push(`${where}.type is ${util.inspect(d.type)}, not ${type}`)
  if (typeof d.sdp !== 'string' || !d.sdp.startsWith('v=0')) problems.push(`${where}.sdp is not an SDP`)
}
function checkConstraints (problems, where, c) {
  if (!isPlain(c) || sortedKeys(c) !== 'audio,video' || typeof c.audio !== 'boolean' || typeof c.video !== 'boolean') {
    problems.push(`${where} is not {audio: boolean, video: boolean}: ${util.inspect(c)}`)
  }
}
function checkKeys (problems, where, o, required, optional = []) {
  if (!isPlain(o)) return problems.push(`${where} is not a plain object: ${util.inspect(o, { depth: 1 })}`)
  const keys = Object.keys(o)
  for (const k of required) if (!keys.includes(k)) problems.push(`${where} lacks "${k}"`)
  for (const k of keys) if (!required.includes(k) && !optional.includes(k)) problems.push(`${where} has the key "${k}", which the spec does not`)
}
function checkPeers (problems, where, items, { offer = 'optional', constraints = 'optional' } = {}) {
  if (!Array.isArray(items)) return problems.push(`${where} is not an array`)
  items.forEach((it, i) => {
    const w = `${where}[${i}]`
    const required = ['id', 'userInfo']
    const optional = []
    for (const [k, mode] of [['offer', offer], ['constraints', constraints]]) {
      if (mode === 'required') required.push(k)
      if (mode === 'optional') optional.push(k)
    }
    checkKeys(problems, w, it, required, optional)
    if (typeof it?.id !== 'string') problems.push(`${w}.id is not a string`)
    if (it?.offer !== undefined) checkDescription(problems, `${w}.offer`, it.offer, 'offer')
    if (it?.constraints !== undefined) checkConstraints(problems, `${w}.constraints`, it.constraints)
  })
}
function nonNegInt (problems, where, v) {
  if (!Number.isInteger(v) || v < 0) problems.push(`${where} is not a non-negative integer: ${util.inspect(v)}`)
}
const num = (v) => typeof v === 'number' && Number.isFinite(v)
const numOrNull = (v) => v === null || num(v)

/** The JSON the server read of a body (the call succeeded, so it has one). */
function bodyJson (arg) {
  try { return arg === undefined || arg.value === undefined ? undefined : JSON.parse(JSON.stringify(arg.value)) } catch { return undefined }
}

function checkShape (call, method, v, { args = call.args, srv = server } = {}) {
  const p = []
  const id = (i) => (args[i] ? normId(args[i].value) : null)
  switch (method) {
    case 'createRoom': {
      const body = bodyJson(args[1]) ?? {}
      const withUser = body && body.userId != null
      checkKeys(p, 'result', v, withUser ? ['room_id', 'user_id', 'users', 'userInfo'] : ['room_id', 'users'])
      if (typeof v?.room_id !== 'string') p.push('room_id is not a string')
      else if (id(0) != null && v.room_id !== id(0)) p.push(`room_id ${util.inspect(v.room_id)} is not the id asked for (${util.inspect(id(0))})`)
      else if (id(0) == null && !/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(v.room_id)) p.push(`room_id ${v.room_id} is not a UUID v4`)
      if (!Array.isArray(v?.users) || v.users.length !== 0) p.push('users is not []')
      if (withUser && v?.user_id !== normBodyId(body.userId)) p.push(`user_id ${util.inspect(v?.user_id)} is not ${normBodyId(body.userId)}`)
      break
    }
    case 'addUser':
      checkKeys(p, 'result', v, ['id', 'userInfo', 'users'])
      if (v?.id !== id(1)) p.push(`id ${util.inspect(v?.id)} is not ${util.inspect(id(1))}`)
      checkPeers(p, 'users', v?.users)
      for (const [i, u] of (v?.users || []).entries()) if ((u.offer === undefined) !== (u.constraints === undefined)) p.push(`users[${i}] has an offer without constraints or constraints without an offer`)
      break
    case 'produce': {
      const body = bodyJson(args[2]) ?? {}
      const withOffer = body.offer != null
      checkKeys(p, 'result', v, withOffer ? ['answer', 'id', 'userInfo', 'constraints', 'outbound'] : ['id', 'userInfo', 'constraints', 'outbound'])
      if (withOffer) checkDescription(p, 'answer', v?.answer, 'answer')
      if (v?.id !== id(1)) p.push(`id ${util.inspect(v?.id)} is not ${util.inspect(id(1))}`)
      checkConstraints(p, 'constraints', v?.constraints)
      checkPeers(p, 'outbound', v?.outbound, { offer: withOffer ? 'optional' : 'absent', constraints: 'required' })
      break
    }
    case 'consume':
      if (!isPlain(v) || sortedKeys(v) !== 'status' || v.status !== 'connected') p.push(`not { status: "connected" }: ${util.inspect(v)}`)
      break
    case 'stopProduce':
      checkKeys(p, 'result', v, ['id', 'userInfo', 'constraints', 'outbound'])
      if (v?.constraints?.audio !== false || v?.constraints?.video !== false || sortedKeys(v?.constraints ?? {}) !== 'audio,video') p.push(`constraints are not { audio: false, video: false }: ${util.inspect(v?.constraints)}`)
      checkPeers(p, 'outbound', v?.outbound, { offer: 'absent', constraints: 'absent' })
      break
    case 'removeUser':
      checkKeys(p, 'result', v, ['id', 'userInfo', 'outbound'])
      if (v?.id !== id(1)) p.push(`id ${util.inspect(v?.id)} is not ${util.inspect(id(1))}`)
      checkPeers(p, 'outbound', v?.outbound, { offer: 'absent', constraints: 'absent' })
      break
    case 'deleteRoom':
      checkKeys(p, 'result', v, ['count'])
      nonNegInt(p, 'count', v?.count)
      if (call.expectCount !== undefined && v?.count !== call.expectCount) p.push(`count is ${v?.count}, but the room held ${call.expectCount} users`)
      break
    case 'getRoom':
      checkRoomView(p, v, id(0))
      break
    case 'getStats':
      checkKeys(p, 'result', v, ['roomId', 'connections'])
      if (v?.roomId !== id(0)) p.push(`roomId ${util.inspect(v?.roomId)} is not ${util.inspect(id(0))}`)
      if (!Array.isArray(v?.connections)) p.push('connections is not an array')
      for (const [i, c] of (v?.connections || []).entries()) checkConnectionStats(p, `connections[${i}]`, c)
      break
    case 'stats':
      checkKeys(p, 'result', v, ['rooms', 'users', 'upstreamConnections', 'downstreamConnections', 'liveConnections', 'portsInUse', 'forwardedPackets', 'forwardedBytes', 'udpPort'])
      for (const k of ['rooms', 'users', 'upstreamConnections', 'downstreamConnections', 'liveConnections', 'portsInUse', 'forwardedPackets', 'forwardedBytes']) nonNegInt(p, k, v?.[k])
      if (!(v?.udpPort === null || Number.isInteger(v?.udpPort))) p.push(`udpPort is ${util.inspect(v?.udpPort)}`)
      break
    case 'on': case 'off':
      if (v !== srv) p.push(`${method}() did not return the server: ${util.inspect(v)}`)
      break
    case 'new MediaServer':
      if (!(v instanceof require('../index.js').MediaServer)) p.push('the constructor did not make a MediaServer')
      break
    case 'close':
      if (v !== undefined && v !== null) p.push(`close() resolved to ${util.inspect(v)}`)
      break
  }
  if (p.length) violation(call, `the result is not the spec's shape: ${p.join('; ')}\n    result: ${util.inspect(v, { depth: 4, maxStringLength: 80 })}`)
}

function checkRoomView (p, v, roomId) {
  checkKeys(p, 'result', v, ['roomId', 'users', 'consumers'])
  if (roomId != null && v?.roomId !== roomId) p.push(`roomId ${util.inspect(v?.roomId)} is not ${util.inspect(roomId)}`)
  for (const [i, u] of (v?.users || []).entries()) {
    checkKeys(p, `users[${i}]`, u, ['id', 'userInfo', 'producer'])
    if (u?.producer !== null) {
      checkKeys(p, `users[${i}].producer`, u?.producer, ['constraints', 'codecs', 'state'])
      checkConstraints(p, `users[${i}].producer.constraints`, u?.producer?.constraints)
      if (!STATES.has(u?.producer?.state)) p.push(`users[${i}].producer.state ${u?.producer?.state}`)
    }
  }
  for (const [i, c] of (v?.consumers || []).entries()) {
    checkKeys(p, `consumers[${i}]`, c, ['producerId', 'userId', 'state', 'pendingOffer', 'codecs'])
    if (typeof c?.pendingOffer !== 'boolean') p.push(`consumers[${i}].pendingOffer is not a boolean`)
    if (!STATES.has(c?.state)) p.push(`consumers[${i}].state ${c?.state}`)
  }
}

const INBOUND = ['kind', 'codec', 'ssrc', 'packetsReceived', 'bytesReceived', 'packetsLost', 'jitter', 'nackCount', 'pliCount', 'firCount']
const OUTBOUND = ['kind', 'codec', 'ssrc', 'packetsSent', 'bytesSent', 'retransmittedPacketsSent', 'nackCount', 'pliCount', 'firCount', 'packetsLost', 'fractionLost', 'jitter', 'roundTripTime', 'layers']
function checkConnectionStats (p, w, c) {
  checkKeys(p, w, c, ['direction', 'userId', 'producerId', 'state', 'transport', 'tracks'])
  if (!['upstream', 'downstream'].includes(c?.direction)) p.push(`${w}.direction ${c?.direction}`)
  if (!STATES.has(c?.state)) p.push(`${w}.state ${c?.state}`)
  const t = c?.transport
  checkKeys(p, `${w}.transport`, t, ['packetsSent', 'packetsDropped', 'packetsReceived', 'bytesSent', 'bytesReceived', 'bitrateSent', 'bitrateReceived', 'selectedCandidatePair'])
  for (const k of ['packetsSent', 'packetsDropped', 'packetsReceived', 'bytesSent', 'bytesReceived', 'bitrateSent', 'bitrateReceived']) if (!num(t?.[k])) p.push(`${w}.transport.${k} is not a number`)
  const pair = t?.selectedCandidatePair
  if (pair != null) {
    checkKeys(p, `${w}.transport.selectedCandidatePair`, pair, ['local', 'remote', 'roundTripTime', 'availableOutgoingBitrate'])
    if (!numOrNull(pair.roundTripTime) || !numOrNull(pair.availableOutgoingBitrate)) p.push(`${w}.transport.selectedCandidatePair numbers`)
    for (const side of ['local', 'remote']) {
      if (pair[side] !== null || side === 'local') checkKeys(p, `${w}.transport.selectedCandidatePair.${side}`, pair[side], ['address', 'port', 'protocol', 'candidateType'])
    }
  }
  for (const [i, tr] of (c?.tracks || []).entries()) {
    checkKeys(p, `${w}.tracks[${i}]`, tr, c?.direction === 'upstream' ? INBOUND : OUTBOUND)
    if (!['audio', 'video'].includes(tr?.kind)) p.push(`${w}.tracks[${i}].kind ${tr?.kind}`)
  }
}

// ---------------------------------------------------------------------------------------
// Snapshots: what the server holds, for "a failed call changes nothing"

async function check (fn) {
  checkCount++
  return fn()
}

/** stats() counts and getRoom() of every room in `ids` ('absent' for a room that is not there).
 *  Maps and arrays, not objects keyed by id: "__proto__" is a room id like any other. */
async function snapshot (ids) {
  const s = await check(() => server.stats())
  const rooms = new Map()
  const views = new Map()
  for (const id of ids) {
    model.named.add(id)
    try {
      const view = await check(() => server.getRoom(id))
      views.set(id, view)
      rooms.set(id, stateless(view))
    } catch (err) {
      if (err?.code !== 'ROOM_NOT_FOUND') throw new Error(`getRoom(${describe(id)}) to check the room failed: ${err?.code}: ${err?.message}`)
      rooms.set(id, 'absent')
    }
  }
  return { counts: counts(s), rooms, views }
}

/** The model follows what the server holds; a device whose user no longer produces is closed. */
async function adopt (snap) {
  for (const [id, view] of snap.views) {
    if (!model.rooms.has(id)) model.everRooms.add(id)
    model.rooms.set(id, view)
  }
  for (const [id, r] of snap.rooms) if (r === 'absent') model.rooms.delete(id)
  for (const [dev, b] of [...model.bindings]) {
    const producing = model.rooms.get(b.room)?.users.some((u) => u.id === b.user && u.producer)
    if (!producing) {
      model.bindings.delete(dev)
      await peerCall('upClose', { dev })
    }
  }
}

function roomIdsToWatch (call, extra = []) {
  const ids = new Set(model.rooms.keys())
  if (call.room != null) ids.add(call.room)
  for (const id of extra) if (id != null) ids.add(id)
  return [...ids]
}

function firstDifference (a, b, path = '') {
  if (Object.is(a, b)) return null
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return `${path || 'value'}: ${util.inspect(a, { depth: 2 })} -> ${util.inspect(b, { depth: 2 })}`
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = firstDifference(a[k], b[k], `${path}${Array.isArray(a) ? `[${k}]` : `.${k}`}`)
    if (d) return d
  }
  return null
}

function describeCall (call) {
  if (call.method === 'new MediaServer') return `new MediaServer(${call.args.map(descOf).join(', ')})`
  return `${call.method}(${call.args.map(descOf).join(', ')})`
}

function callFn (call) {
  return call.run ?? (() => server[call.method](...call.args.map((a) => a.value)))
}

async function runSequential (call) {
  if (call.prep) await call.prep()
  call.n = ++callCount
  call.desc = describeCall(call)
  if (call.method === 'deleteRoom' && call.room != null && model.rooms.has(call.room)) call.expectCount = model.rooms.get(call.room).users.length
  const ids = roomIdsToWatch(call)
  const before = await snapshot(ids)
  const o = await invoke(call, callFn(call))
  history.push(`#${call.n} ${call.desc} -> ${o.ok ? 'ok' : o.timeout ? 'TIMEOUT' : o.error?.code ?? util.inspect(o.error)}`)
  if (history.length > 50) history.shift()
  record(call.method, o.ok ? 'ok' : o.timeout ? 'TIMEOUT' : String(o.error?.code))
  if (o.ok) {
    if (o.notPromise) violation(call, `returned ${util.inspect(o.value)} instead of a promise`)
    checkShape(call, call.method, o.value)
  } else {
    checkError(call, o)
  }
  const created = call.method === 'createRoom' && o.ok && typeof o.value?.room_id === 'string' ? o.value.room_id : null
  const after = await snapshot(roomIdsToWatch(call, [created]))
  if (!o.ok && !o.timeout) {
    const b = { counts: before.counts, rooms: ids.map((id) => [id, before.rooms.get(id)]) }
    const a = { counts: after.counts, rooms: ids.map((id) => [id, after.rooms.get(id)]) }
    if (!util.isDeepStrictEqual(a, b)) {
      const diff = (firstDifference(b, a) ?? `${util.inspect(b, { depth: 6 })} -> ${util.inspect(a, { depth: 6 })}`)
        .replace(/^\.rooms\[(\d+)\]\[1\]/, (_m, i) => `room ${describe(ids[Number(i)])}: `)
      violation(call, `the call failed (${o.error?.code}: ${o.error?.message}) but changed the server: ${diff}`)
    }
  }
  if (call.after) await call.after(o)
  await adopt(after)
}

async function runBurst () {
  const rooms = [...model.rooms.keys()]
  if (!rooms.length) return
  const room = rng.pick(rooms)
  const id = ++burstCount
  const ctx = { room, devices: new Set(), users: new Set() }
  const size = rng.range(20, 50)
  const calls = []
  let deletes = 0
  for (let i = 0; i < size; i++) {
    let kind = rng.weighted({ produce: 6, consume: 5, addUser: 4, removeUser: 2, stopProduce: 2, getRoom: 2, getStats: 2, stats: 1, deleteRoom: 1, createRoom: 1, onOff: 1 })
    if (kind === 'deleteRoom' && deletes++ > 0) kind = 'getRoom'
    const call = gen[kind](ctx)
    call.burst = id
    calls.push(call)
  }
  await Promise.all(calls.map((c) => c.prep?.()))
  for (const c of calls) {
    c.n = ++callCount
    c.desc = describeCall(c)
  }
  const results = await Promise.all(calls.map((c) => invoke(c, callFn(c))))
  history.push(`burst ${id}: ${calls.length} concurrent calls on room ${describe(room)}`)
  calls.forEach((c, i) => {
    const o = results[i]
    record(c.method, o.ok ? 'ok' : o.timeout ? 'TIMEOUT' : String(o.error?.code))
    if (o.ok) {
      if (o.notPromise) violation(c, `returned ${util.inspect(o.value)} instead of a promise`)
      checkShape(c, c.method, o.value)
    } else {
      checkError(c, o)
    }
  })
  for (const [i, c] of calls.entries()) if (c.after) await c.after(results[i])
  const named = calls.map((c, i) => c.method === 'createRoom' && results[i].ok ? results[i].value?.room_id : c.room)
  await adopt(await snapshot([...new Set([...model.rooms.keys(), room, ...named.filter((id) => typeof id === 'string')])]))
}

// ---------------------------------------------------------------------------------------
// The test

test(`property: random API calls with hostile inputs and real peers (seed ${SEED})`, { timeout: (MAX_SECONDS + 120) * 1000 }, async () => {
  try {
    await propertyRun()
  } catch (err) {
    // Whatever stopped the run (a check call that failed, the peers' process), with the seed
    // and the last calls made.
    if (err instanceof Error && !String(err.message).startsWith('property seed=')) {
      err.message = `property seed=${SEED} (replay: PROPERTY_SEED=${SEED}), after call #${callCount}: ${err.message}\n  the last calls:\n${history.slice(-8).map((h) => `    ${h}`).join('\n')}`
    }
    throw err
  }
})

async function propertyRun () {
  const { MediaServer } = require('../index.js')
  rng = mulberry32(SEED)
  server = new MediaServer({
    listenIp: '127.0.0.1',
    portRange: PORT_RANGE,
    ...LIMITS,
    // Offers wait for their answers forever: an offer timeout would change a room between a
    // call's snapshots by itself.
    offerTimeoutMs: null,
    onLog: (r) => {
      if (r.level === 'error' || r.level === 'warn') logCounts[r.level]++
      if (r.level === 'error' && logErrors.length < 10) logErrors.push(`${r.target}: ${r.message} ${JSON.stringify(r.fields)}`)
    }
  })
  peers = new Peers()
  await peers.ready

  const zero = { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0, portsInUse: 0 }
  const atZero = async () => {
    const s = await server.stats()
    return util.isDeepStrictEqual({ ...counts(s), liveConnections: s.liveConnections, portsInUse: s.portsInUse }, zero) ? s : null
  }
  /** Deletes every room the run named, closes the peers, removes the listeners, waits for zero. */
  const cleanUp = async (when) => {
    for (const id of new Set([...model.rooms.keys(), ...model.everRooms, ...model.named])) {
      try { await server.deleteRoom(id) } catch (err) { if (err.code !== 'ROOM_NOT_FOUND') violation({ n: '-', method: 'deleteRoom', desc: `deleteRoom(${describe(id)}) ${when}` }, `${err.code}: ${err.message}`) }
    }
    model.rooms.clear()
    model.bindings.clear()
    model.offers.clear()
    await peers.call('closeAll')
    for (const [ev, fn] of listeners.splice(0)) server.off(ev, fn)
    let ok = null
    for (let i = 0; i < 300 && !(ok = await atZero()); i++) await sleep(100)
    if (!ok) {
      const s = await server.stats()
      return [`stats() did not return to zero within 30 s after everything was deleted ${when}: ${JSON.stringify({ ...counts(s), liveConnections: s.liveConnections, portsInUse: s.portsInUse })}`]
    }
    return []
  }

  const t0 = performance.now()
  const deadline = t0 + MAX_SECONDS * 1000
  let nextBurst = rng.range(60, 140)
  let nextProgress = 0
  const runCalls = async (until) => {
    while (callCount < until && performance.now() < deadline && violations.length < MAX_VIOLATIONS) {
      if (callCount >= nextBurst) {
        await runBurst()
        nextBurst = callCount + rng.range(60, 140)
        continue
      }
      if (process.env.PROPERTY_PROGRESS && callCount >= nextProgress) {
        nextProgress += 500
        const st = await server.stats()
        const m = process.memoryUsage()
        console.log(`property progress: calls=${callCount} rss=${(m.rss / 2 ** 20).toFixed(1)} heapUsed=${(m.heapUsed / 2 ** 20).toFixed(1)} stats=${JSON.stringify(st)}`)
      }
      const kind = rng.weighted({ createRoom: 10, addUser: 11, produce: 20, consume: 18, stopProduce: 5, removeUser: 5, deleteRoom: 2, getRoom: 5, getStats: 5, stats: 2, onOff: 5, ctor: 2 })
      await runSequential(gen[kind]({}))
    }
  }

  // The first WARMUP calls also set the baseline of fds and RSS: once they are done and
  // everything is deleted, the process has made every lazily made part of the runtime and
  // reached the allocator's working size for this load; a leak shows as growth past it.
  await runCalls(Math.min(WARMUP, CALLS))
  const warmCalls = callCount
  const problems = await cleanUp('after the warm-up calls')
  await settleGc()
  const fd0 = openFds()
  const rss0 = process.memoryUsage().rss

  await runCalls(CALLS)
  const seconds = (performance.now() - t0) / 1000

  // The real peers did carry media (else the "correct" calls tested little).
  const forwarded = (await server.stats()).forwardedPackets
  if (!(forwarded > 100)) problems.push(`only ${forwarded} packets were forwarded: the real peers' media never flowed`)
  // Everything deleted: stats() back to zero, fds back to their count, RSS near it.
  problems.push(...await cleanUp('at the end'))
  await settleGc()
  let fd1 = openFds()
  for (let i = 0; i < 100 && fd1 !== fd0; i++) {
    await sleep(100)
    fd1 = openFds()
  }
  await settleGc()
  const rss1 = process.memoryUsage().rss
  if (fd1 !== fd0) problems.push(`open fds did not return to their count before the run: ${fd0} -> ${fd1}`)
  const mb = (b) => (b / 2 ** 20).toFixed(1)
  if (rss1 - rss0 > RSS_LIMIT_MB * 2 ** 20) problems.push(`RSS grew by ${mb(rss1 - rss0)} MB over ${callCount - warmCalls} calls (limit ${RSS_LIMIT_MB} MB)`)

  const byCode = new Map()
  for (const m of outcomes.values()) for (const [code, n] of m) byCode.set(code, (byCode.get(code) || 0) + n)
  console.log(`property seed=${SEED} calls=${callCount} (${burstCount} bursts) in ${seconds.toFixed(1)} s, plus ${checkCount} check calls; ` +
    `fds ${fd0} -> ${fd1}, RSS ${mb(rss0)} -> ${mb(rss1)} MB (from call ${warmCalls} to the end); ${forwarded} packets forwarded; peer failures ${peerFailures}; server log: ${logCounts.error} errors, ${logCounts.warn} warnings; ` +
    `events received: ${JSON.stringify(Object.fromEntries(events))}`)
  console.log(`property outcomes: ${[...byCode].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c}=${n}`).join(' ')}`)
  for (const [method, m] of [...outcomes].sort()) console.log(`  ${method}: ${[...m].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c}=${n}`).join(' ')}`)
  if (logErrors.length) console.log(`property: server error logs (first ${logErrors.length}):\n  ${logErrors.join('\n  ')}`)

  if (violationKinds.size) {
    console.log(`property seed=${SEED}: ${violations.length} violations of ${violationKinds.size} kinds:`)
    for (const [kind, { count }] of violationKinds) console.log(`  ${count} x ${kind}`)
  }
  for (const p of problems) console.log(`property seed=${SEED}: ${p}`)
  const failures = []
  if (violations.length) failures.push(`${violations.length} violation(s) of ${violationKinds.size} kind(s); the first of each:\n\n${[...violationKinds.values()].map((v) => v.first).join('\n\n')}`)
  failures.push(...problems)
  if (callCount < MIN_CALLS) failures.push(`only ${callCount} calls within ${MAX_SECONDS} s (at least ${MIN_CALLS} wanted)`)
  assert.ok(failures.length === 0, `property seed=${SEED} (replay: PROPERTY_SEED=${SEED}): ${failures.join('\n\n')}`)
}

// ---------------------------------------------------------------------------------------
// Regression tests: the bugs this property test found, each as the smallest sequence that
// shows it (real libwebrtc peers, through the same peers' process).


/** The four answer mutations that pass the server's own checks of an answer but that webrtc-rs
 *  refuses in setRemoteDescription, after it has already moved the connection on. */
const REFUSED_BY_THE_STACK = ['fingerprint value empty', 'candidate garbled', 'mids removed', 'extmap ids out of range']

let regressionServer = null
async function regressionSetup () {
  if (!peers) {
    peers = new Peers()
    await peers.ready
  }
  if (!regressionServer) {
    const { MediaServer } = require('../index.js')
    regressionServer = new MediaServer({ listenIp: '127.0.0.1', portRange: { min: 49350, max: 49379 }, offerTimeoutMs: null })
  }
  return regressionServer
}

/** A rejection with a spec code that is not INTERNAL; returns the error. */
async function expectSpecRejection (promise, what) {
  let err = null
  try { await promise } catch (e) { err = e }
  assert.ok(err, `${what}: resolved, expected a rejection`)
  assert.ok(err instanceof Error && CODES.has(err.code) && err.code !== 'INTERNAL', `${what}: rejected with ${err?.code}: ${err?.message}`)
  return err
}

let regressionRoom = 0
/** `p` produces with a real peer, `c` (and `c2` when asked) joins: returns the offers and the
 *  real answers of the consumers. */
async function producingRoom (srv, { producers = ['p'], consumers = ['c'] } = {}) {
  const room = `regression-${++regressionRoom}`
  await srv.createRoom(room, { userId: producers[0] })
  for (const p of producers.slice(1)) await srv.addUser(room, p)
  for (const p of producers) {
    const offer = await peers.call('offer', { dev: `${room}-${p}` })
    const res = await srv.produce(room, p, { offer })
    const applied = await peers.call('upAnswer', { dev: `${room}-${p}`, sdp: res.answer.sdp })
    assert.ok(applied.ok, `the peer applies the server's answer: ${applied.error}`)
  }
  const answers = {}
  for (const c of consumers) {
    const joined = await srv.addUser(room, c)
    answers[c] = []
    for (const u of joined.users.filter((x) => x.offer)) {
      const answer = await peers.call('answer', { key: `${room}-${c}-${u.id}`, sdp: u.offer.sdp })
      assert.ok(answer.sdp, `the peer answers: ${answer.error}`)
      answers[c].push({ id: u.id, answer: { type: 'answer', sdp: answer.sdp } })
    }
  }
  return { room, answers }
}

/** The value `promise` resolves to; a rejection fails with its code and message. */
async function mustResolve (promise, what) {
  try {
    return await promise
  } catch (err) {
    assert.fail(`${what}: rejected with ${err?.code}: ${err?.message}`)
  }
}

/** Runs `body(room)` on a room made by `producingRoom`, and deletes the room whatever happens. */
async function inRoom (srv, options, body) {
  const made = await producingRoom(srv, options)
  try {
    await body(made)
  } finally {
    await srv.deleteRoom(made.room).catch(() => {})
  }
}

const pendingOf = async (srv, room) => (await srv.getRoom(room)).consumers.map((c) => `${c.producerId}->${c.userId}:${c.pendingOffer}`)

for (const mutation of REFUSED_BY_THE_STACK) {
  test(`regression (property seed 1): an answer webrtc-rs refuses (${mutation}) changes nothing: the right answer is accepted after it`, { timeout: 60000 }, async () => {
    const srv = await regressionSetup()
    await inRoom(srv, {}, async ({ room, answers }) => {
      const right = answers.c[0]
      const wrong = { id: 'p', answer: { type: 'answer', sdp: SDP_MUTATIONS[mutation](right.answer.sdp, mulberry32(1)) } }
      const before = stateless(await srv.getRoom(room))
      await expectSpecRejection(srv.consume(room, 'c', wrong), `consume with an answer whose ${mutation}`)
      assert.deepStrictEqual(stateless(await srv.getRoom(room)), before, 'the failed consume changed the room')
      // Before ed25f93: INTERNAL "a pending offer without a local description".
      assert.deepStrictEqual(await mustResolve(srv.consume(room, 'c', right), 'the right answer after the refused one'), { status: 'connected' })
      assert.deepStrictEqual(await pendingOf(srv, room), ['p->c:false'])
    })
  })
}

test('regression (property seeds 1, 2): after an answer webrtc-rs refused (extmap id 999), the producer\'s next produce works and keeps the consumer\'s downstream', { timeout: 60000 }, async () => {
  const srv = await regressionSetup()
  await inRoom(srv, {}, async ({ room, answers }) => {
    const wrong = { id: 'p', answer: { type: 'answer', sdp: SDP_MUTATIONS['extmap ids out of range'](answers.c[0].answer.sdp) } }
    await expectSpecRejection(srv.consume(room, 'c', wrong), 'consume with extmap ids of 999')
    const offer = await peers.call('offer', { dev: `${room}-p` })
    // Before ed25f93: INTERNAL "creating an offer: parse extmap: 999 -- extmap key must be in
    // the range 1-255", and the failed call closed the consumer's downstream.
    let res, err
    try { res = await srv.produce(room, 'p', { offer }) } catch (e) { err = e }
    assert.ok(!err, `re-produce after the refused answer: ${err?.code}: ${err?.message}; downstreams now ${JSON.stringify(await pendingOf(srv, room))}`)
    assert.ok(res.outbound.find((o) => o.id === 'c')?.offer, 'the consumer gets a new offer on its downstream')
    assert.deepStrictEqual(await pendingOf(srv, room), ['p->c:true'])
  })
})

test('regression (property seeds 1, 2): consume with answers[] whose second answer webrtc-rs refuses applies none of them', { timeout: 60000 }, async () => {
  const srv = await regressionSetup()
  await inRoom(srv, { producers: ['p1', 'p2'] }, async ({ room, answers }) => {
    assert.equal(answers.c.length, 2)
    const refused = { id: answers.c[1].id, answer: { type: 'answer', sdp: SDP_MUTATIONS['candidate garbled'](answers.c[1].answer.sdp) } }
    const before = stateless(await srv.getRoom(room))
    await expectSpecRejection(srv.consume(room, 'c', { answers: [answers.c[0], refused] }), 'consume with a refused second answer')
    // Before ed25f93: the first answer was applied (its pendingOffer went from true to false).
    assert.deepStrictEqual(stateless(await srv.getRoom(room)), before, 'the failed consume changed the room')
  })
})

test('regression (property seed 882563241): an answer whose video section names a payload type it never maps is refused and changes nothing', { timeout: 60000 }, async () => {
  const srv = await regressionSetup()
  await inRoom(srv, {}, async ({ room, answers }) => {
    // The video m= line still lists the RTX payload type; its a=rtpmap and a=fmtp are gone (the
    // property test's answer was truncated just before them).
    const right = answers.c[0]
    const sdp = right.answer.sdp.replace(/a=rtpmap:(\d+) rtx\/90000\r\n(a=fmtp:\1 [^\r]*\r\n)?/g, '')
    assert.notEqual(sdp, right.answer.sdp, 'the answer has an RTX payload type to unmap')
    const before = stateless(await srv.getRoom(room))
    const statsBefore = counts(await srv.stats())
    await expectSpecRejection(srv.consume(room, 'c', { id: 'p', answer: { type: 'answer', sdp } }), 'consume with an unmapped payload type')
    // Fails today (after ed25f93): INVALID_SDP "the answer was refused: payload type not found",
    // and the failed call closes the consumer's downstream (downstreamConnections 1 -> 0).
    assert.deepStrictEqual(counts(await srv.stats()), statsBefore, 'the failed consume changed stats()')
    assert.deepStrictEqual(stateless(await srv.getRoom(room)), before, 'the failed consume changed the room')
    assert.deepStrictEqual(await mustResolve(srv.consume(room, 'c', right), 'the right answer after the refused one'), { status: 'connected' })
  })
})

test('regression (property seed 884486898): a producer\'s re-produce with a one-section offer that declares no SSRC does not answer INTERNAL nor close its connections', { timeout: 60000 }, async () => {
  const srv = await regressionSetup()
  await inRoom(srv, {}, async ({ room }) => {
    // An audio-only offer of another peer connection, its a=ssrc lines removed (one media
    // section: the server's checks let an offer without SSRCs through).
    const other = await peers.call('offer', { dev: `${room}-other`, audio: true, video: false })
    await peers.call('upClose', { dev: `${room}-other` })
    const sdp = SDP_MUTATIONS['ssrc lines removed'](other.sdp)
    const before = stateless(await srv.getRoom(room))
    const statsBefore = counts(await srv.stats())
    let res, err
    try { res = await srv.produce(room, 'p', { offer: { type: 'offer', sdp } }) } catch (e) { err = e }
    // Fails today: INTERNAL "applying the answer: no trackStreams found for SSRC", and the
    // failed call closes the producer's upstream and the consumer's downstream.
    if (err) {
      assert.ok(CODES.has(err.code) && err.code !== 'INTERNAL', `re-produce: ${err.code}: ${err.message}`)
      assert.deepStrictEqual(counts(await srv.stats()), statsBefore, `the failed re-produce (${err.code}) changed stats()`)
      assert.deepStrictEqual(stateless(await srv.getRoom(room)), before, 'the failed re-produce changed the room')
    } else {
      assert.ok(res.answer, 'the re-produce that succeeded has an answer')
    }
  })
})

after(async () => {
  try { if (server && serverOpen) { serverOpen = false; await server.close() } } catch {}
  try { if (regressionServer) await regressionServer.close() } catch {}
  if (peers) await peers.stop()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})
