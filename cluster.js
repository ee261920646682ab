'use strict'
// The cluster layer: many MediaServers, one API, coordinated through Redis.
//
// `new MediaServer({ cluster: { redisUrl } })` (index.js) makes a ClusterMediaServer: the native
// MediaServer of this process plus this layer, in JavaScript, on top of the native API (the
// native addon knows nothing of the cluster). What lives in Redis (`<prefix>` is
// `cluster.prefix`, default `mediaserver`):
//
//   <prefix>:rooms               hash   roomId -> the nodeId that holds the room (HSETNX: ids
//                                       are unique cluster-wide)
//   <prefix>:nodes               set    the nodes that registered
//   <prefix>:node:<id>           string the node's heartbeat, its load figure as JSON, with a
//                                       TTL of nodeTimeoutMs: it lapses when the node dies
//   <prefix>:node:<id>:rooms     set    the rooms the node holds (what to close when it dies)
//   <prefix>:rpc:<id>            pub/sub: requests for the node (forwarded calls)
//   <prefix>:reply:<id>          pub/sub: replies to the node's forwarded calls
//   <prefix>:events              pub/sub: every node's events, and the nodes declared lost
//
// Every write is a Lua script (one round trip, atomic). A call for a room this node holds goes
// straight to the native server (no Redis: it keeps working while Redis is down); any other
// room's owner is read from the hash and the call is forwarded to it over pub/sub, so the
// owner's native room is the single source of truth (USER_EXISTS, USER_NOT_FOUND, the SDP with
// the owner's candidates) and the result is the owner's own result object.

const crypto = require('node:crypto')
const os = require('node:os')

/** The events of the native server (`error` is accepted and never emitted). */
const EVENTS = ['connectionstatechange', 'constraintschange', 'roomclosed', 'offertimeout', 'activespeaker', 'audiolevels', 'layerschange', 'error']

/** Methods that name a room as their first argument: forwarded to the room's owner. */
const ROOM_METHODS = new Set(['addUser', 'produce', 'consume', 'stopProduce', 'setPreferredLayers', 'removeUser', 'deleteRoom', 'getStats', 'getRoom'])

/** Which arguments of each method are ids (the rest are bodies), as the native server reads them. */
const ID_ARGS = {
  createRoom: [true, false],
  addUser: [true, true, false],
  produce: [true, true, false],
  consume: [true, true, false],
  stopProduce: [true, true],
  setPreferredLayers: [true, true, true, false],
  removeUser: [true, true],
  deleteRoom: [true],
  getStats: [true, true],
  getRoom: [true]
}

const CLUSTER_KEYS = new Set(['redisUrl', 'nodeId', 'heartbeatMs', 'nodeTimeoutMs', 'prefix'])
const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/
const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** An Error with the API's `code`, as the native server makes them. */
function codeError (code, message) {
  const err = new Error(message)
  err.code = code
  return err
}

function invalid (message) {
  return codeError('INVALID_ARGUMENT', message)
}

function unavailable (message) {
  return codeError('UNAVAILABLE', message)
}

/** The native server's message for a room that does not exist, or already does. */
const roomNotFound = (id) => codeError('ROOM_NOT_FOUND', `room '${id}' does not exist`)
const roomExists = (id) => codeError('ROOM_EXISTS', `room '${id}' already exists`)

/**
 * The id the native server would make of `value` (src/sfu/api.rs parse_id): a string, or an
 * integer of at most 2^53 - 1 in magnitude as its decimal string; not empty, at most 256
 * characters. `null` for anything else: the native server rejects it, with its own message.
 */
function idOf (value) {
  let id
  if (typeof value === 'string') id = value
  else if (typeof value === 'number' && Number.isInteger(value) && Math.abs(value) <= MAX_SAFE) id = String(value)
  else return null
  if (id === '' || [...id].length > 256) return null
  return id
}

/** JSON.stringify as the native server applies it to a body: a non-finite number is an error. */
function finiteReplacer (key, value) {
  if (typeof value === 'number' && !Number.isFinite(value)) throw new RangeError('not finite')
  return value
}

/**
 * The arguments of a call as they travel: ids that are strings or finite numbers as they are,
 * bodies as the JSON the native server would read from them. `null` when an argument cannot
 * travel unchanged (a `NaN`, a boolean id, a body whose getter or `toJSON` throws, ...): the
 * native server of this process then rejects the call itself, with its own error, as it reads
 * every argument before it looks at any room.
 */
function wireArgs (method, args) {
  const kinds = ID_ARGS[method]
  const out = []
  let last = -1
  for (let i = 0; i < args.length && i < kinds.length; i++) {
    const value = args[i]
    if (value === undefined) { out.push(null); continue }
    last = i
    if (kinds[i]) {
      if (value === null || typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) out.push(value)
      else return null
    } else {
      if (value === null) { out.push(null); continue }
      let text
      try { text = JSON.stringify(value, finiteReplacer) } catch { return null }
      if (text === undefined) return null
      out.push(JSON.parse(text))
    }
  }
  // `undefined` is absent, `null` is null: only trailing absent arguments exist in this API
  for (let i = 0; i <= last; i++) if (args[i] === undefined) return null
  return out.slice(0, last + 1)
}

/** The Lua scripts: each is one round trip and runs atomically. ARGV[1] is always the prefix. */
const SCRIPTS = {
  // ARGV: prefix, roomId, nodeId, takeOver ('1': the entry may name this node already: stale)
  // -> 1 claimed, 0 taken
  claimRoom: `
local p, room, me = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. ':rooms', room)
if cur and not (cur == me and ARGV[4] == '1') then return 0 end
redis.call('HSET', p .. ':rooms', room, me)
redis.call('SADD', p .. ':node:' .. me .. ':rooms', room)
return 1`,
  // ARGV: prefix, roomId, nodeId -> 1 if the directory named this node
  releaseRoom: `
local p, room, me = ARGV[1], ARGV[2], ARGV[3]
redis.call('SREM', p .. ':node:' .. me .. ':rooms', room)
if redis.call('HGET', p .. ':rooms', room) == me then redis.call('HDEL', p .. ':rooms', room) return 1 end
return 0`,
  // ARGV: prefix, nodeId, instance, info, ttlMs, roomId... -> the rooms another node holds
  // The node and its rooms from its own state: entries of rooms it no longer holds are dropped.
  // If the node id was last registered by another instance (the process restarted before its
  // heartbeat lapsed), that instance's rooms are lost: one message tells every node, as a reap.
  register: `
local p, me, inst, info, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local mine = p .. ':node:' .. me .. ':rooms'
local prev = redis.call('GET', p .. ':node:' .. me .. ':instance')
local keep = {}
for i = 6, #ARGV do keep[ARGV[i]] = true end
local lost = {}
for _, room in ipairs(redis.call('SMEMBERS', mine)) do
  if not keep[room] and redis.call('HGET', p .. ':rooms', room) == me then
    redis.call('HDEL', p .. ':rooms', room)
    table.insert(lost, room)
  end
end
if prev and prev ~= inst and #lost > 0 then
  redis.call('PUBLISH', p .. ':events', cjson.encode({ k = 'closed', n = me, inst = prev, reason = 'nodeLost', rooms = lost, by = me }))
end
redis.call('DEL', mine)
local conflicts = {}
for i = 6, #ARGV do
  local room = ARGV[i]
  local cur = redis.call('HGET', p .. ':rooms', room)
  if cur and cur ~= me then
    table.insert(conflicts, room)
  else
    redis.call('HSET', p .. ':rooms', room, me)
    redis.call('SADD', mine, room)
  end
end
redis.call('SET', p .. ':node:' .. me .. ':instance', inst)
redis.call('SET', p .. ':node:' .. me, info, 'PX', ttl)
redis.call('SADD', p .. ':nodes', me)
return conflicts`,
  // ARGV: prefix, nodeId, instance, info, ttlMs, reap ('1' or '0')
  // -> { state, id1, info1, rooms1, ... }; state 1: the node was not in the set (the directory
  // lost it: register again), 2: another instance registered this node id since (two servers
  // with one id), else 0
  // The heartbeat. With reap, every node whose heartbeat lapsed is removed, with its rooms,
  // and one message per lost node goes to the events channel: whichever node runs this first
  // does it, exactly once.
  heartbeat: `
local p, me, inst, info, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = 0
local owner = redis.call('GET', p .. ':node:' .. me .. ':instance')
if owner and owner ~= inst then
  state = 2
else
  redis.call('SET', p .. ':node:' .. me, info, 'PX', ttl)
  state = redis.call('SADD', p .. ':nodes', me)
end
local out = { state }
for _, id in ipairs(redis.call('SMEMBERS', p .. ':nodes')) do
  local beat = redis.call('GET', p .. ':node:' .. id)
  if beat then
    table.insert(out, id)
    table.insert(out, beat)
    table.insert(out, redis.call('SCARD', p .. ':node:' .. id .. ':rooms'))
  elseif ARGV[6] == '1' then
    local set = p .. ':node:' .. id .. ':rooms'
    local lost = {}
    for _, room in ipairs(redis.call('SMEMBERS', set)) do
      if redis.call('HGET', p .. ':rooms', room) == id then
        redis.call('HDEL', p .. ':rooms', room)
        table.insert(lost, room)
      end
    end
    local was = redis.call('GET', p .. ':node:' .. id .. ':instance')
    redis.call('DEL', set, p .. ':node:' .. id .. ':instance')
    redis.call('SREM', p .. ':nodes', id)
    redis.call('PUBLISH', p .. ':events', cjson.encode({ k = 'closed', n = id, inst = was or '', reason = 'nodeLost', rooms = lost, by = me }))
  end
end
return out`,
  // ARGV: prefix, nodeId, reason, instance: the node leaves (close()); its rooms closed for every node
  leave: `
local p, me = ARGV[1], ARGV[2]
local set = p .. ':node:' .. me .. ':rooms'
local closed = {}
for _, room in ipairs(redis.call('SMEMBERS', set)) do
  if redis.call('HGET', p .. ':rooms', room) == me then
    redis.call('HDEL', p .. ':rooms', room)
    table.insert(closed, room)
  end
end
redis.call('DEL', set, p .. ':node:' .. me)
if redis.call('GET', p .. ':node:' .. me .. ':instance') == ARGV[4] then redis.call('DEL', p .. ':node:' .. me .. ':instance') end
redis.call('SREM', p .. ':nodes', me)
redis.call('PUBLISH', p .. ':events', cjson.encode({ k = 'closed', n = me, inst = ARGV[4], reason = ARGV[3], rooms = closed, by = me }))
return #closed`
}

/** cjson encodes an empty Lua table as `{}`: a list either way. */
const listOf = (value) => (Array.isArray(value) ? value : value && typeof value === 'object' ? Object.values(value) : [])

/** The cluster options, checked; throws INVALID_ARGUMENT. */
function clusterOptions (cluster) {
  if (cluster === null || typeof cluster !== 'object' || Array.isArray(cluster)) {
    throw invalid('option cluster must be an object ({ redisUrl, nodeId?, heartbeatMs?, nodeTimeoutMs?, prefix? })')
  }
  for (const key of Object.keys(cluster)) {
    if (!CLUSTER_KEYS.has(key)) throw invalid(`unknown option 'cluster.${key}' (known: ${[...CLUSTER_KEYS].join(', ')})`)
  }
  const { redisUrl, nodeId = crypto.randomUUID(), heartbeatMs = 2000, nodeTimeoutMs = 10000, prefix = 'mediaserver' } = cluster
  if (typeof redisUrl !== 'string' || !/^rediss?:\/\//.test(redisUrl)) {
    throw invalid('option cluster.redisUrl must be a redis:// or rediss:// URL')
  }
  if (typeof nodeId !== 'string' || !NODE_ID.test(nodeId)) {
    throw invalid('option cluster.nodeId must be 1 to 64 characters of A-Z, a-z, 0-9, ".", "_" and "-"')
  }
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9._:-]{1,64}$/.test(prefix)) {
    throw invalid('option cluster.prefix must be 1 to 64 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"')
  }
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 50 || heartbeatMs > 60000) {
    throw invalid('option cluster.heartbeatMs must be an integer from 50 to 60000')
  }
  if (!Number.isInteger(nodeTimeoutMs) || nodeTimeoutMs < 2 * heartbeatMs || nodeTimeoutMs > 600000) {
    throw invalid('option cluster.nodeTimeoutMs must be an integer of at least twice heartbeatMs, at most 600000')
  }
  return { redisUrl, nodeId, heartbeatMs, nodeTimeoutMs, prefix }
}

/**
 * The load figure placement compares: connections, rooms (read live from the directory, so a
 * burst of createRoom spreads before the next heartbeat), and forwarded packets per second (a
 * hundred count as one connection). CPU is a gate, not a term: a node whose process uses more
 * than 90 % of the machine's cores gets a new room only when every node does.
 */
function loadOf (node) {
  return node.connections + node.rooms + node.packetsPerSecond / 100
}

class ClusterMediaServer {
  /**
   * @param {Function} Native the native MediaServer class
   * @param {object} options the constructor's options, `cluster` included
   */
  constructor (Native, options) {
    let config, rest
    try {
      config = clusterOptions(options.cluster)
      rest = { ...options }
      delete rest.cluster
    } catch (err) {
      if (err && err.code === 'INVALID_ARGUMENT') throw err
      throw invalid(`options cannot be read: ${err}`)
    }
    const native = new Native(rest)
    this._native = native
    this._config = config
    this.nodeId = config.nodeId
    /** This process's incarnation of the node id (a restarted node has a new one). */
    this._instance = crypto.randomUUID()
    const p = config.prefix
    this._keys = {
      rooms: `${p}:rooms`,
      events: `${p}:events`,
      rpc: (id) => `${p}:rpc:${id}`,
      reply: (id) => `${p}:reply:${id}`
    }
    /** The rooms this node holds (what it serves without Redis). */
    this._local = new Set()
    /** Listener registrations: { event, fn, once }, in order. */
    this._listeners = []
    /** Forwarded calls waiting for their reply: id -> { resolve, reject, node, timer }. */
    this._pending = new Map()
    this._seq = 0
    this._closed = false
    this._closing = null
    this._nodes = [] // the live nodes, as of the last heartbeat
    this._lastSample = { at: performance.now(), cpu: process.cpuUsage(), packets: 0 }
    this._load = { connections: 0, packetsPerSecond: 0, cpu: 0 }
    this._cmdReady = false
    this._subReady = false
    this._registered = false
    this._readySince = 0
    this._everReady = false
    this._lastError = null
    this._waiters = [] // calls waiting for the first connection

    for (const event of EVENTS) {
      if (event === 'error') continue
      native.on(event, (e) => this._onNativeEvent(e))
    }

    // Loaded here only: without `cluster`, no Redis client is ever required.
    const Redis = require('ioredis')
    const common = {
      // fail at once while disconnected (UNAVAILABLE), never queue a call for later
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      commandTimeout: Math.max(1000, Math.min(config.nodeTimeoutMs, 5000)),
      connectTimeout: Math.max(1000, Math.min(config.nodeTimeoutMs, 10000)),
      // reconnect quickly: a node re-registers as soon as Redis is back
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 10), Math.max(200, config.heartbeatMs)),
      lazyConnect: false
    }
    try {
      this._cmd = new Redis(config.redisUrl, { ...common, connectionName: `mediaserver:${config.nodeId}` })
      this._sub = new Redis(config.redisUrl, { ...common, autoResubscribe: false, connectionName: `mediaserver:${config.nodeId}:sub` })
    } catch (err) {
      // nothing is left running after a throw
      this._cmd?.disconnect()
      native.close().catch(() => {})
      throw invalid(`option cluster.redisUrl cannot be used: ${err && err.message ? err.message : err}`)
    }
    for (const [name, source] of Object.entries(SCRIPTS)) this._cmd.defineCommand(name, { numberOfKeys: 0, lua: source })

    this._cmd.on('error', (err) => this._noteError(err))
    this._sub.on('error', (err) => this._noteError(err))
    this._cmd.on('ready', () => {
      this._cmdReady = true
      this._registered = false
      this._heartbeat()
    })
    this._cmd.on('close', () => {
      this._cmdReady = false
      this._registered = false
      this._settleWaiters()
    })
    this._sub.on('ready', () => {
      this._sub.subscribe(this._keys.rpc(this.nodeId), this._keys.reply(this.nodeId), this._keys.events).then(() => {
        this._subReady = true
        this._checkReady()
        this._heartbeat()
      }, (err) => this._noteError(err))
    })
    this._sub.on('close', () => {
      this._subReady = false
      // a reply can no longer arrive
      this._failPending(() => unavailable('Redis connection lost while the call was forwarded; its outcome is unknown'))
      this._settleWaiters()
    })
    this._sub.on('message', (channel, message) => this._onMessage(channel, message))

    this._timer = setInterval(() => this._heartbeat(), config.heartbeatMs)
  }

  // ------------------------------------------------------------------------------------
  // Redis state

  get _ready () {
    return this._cmdReady && this._subReady && this._registered
  }

  _noteError (err) {
    this._lastError = err
    this._settleWaiters()
  }

  _checkReady () {
    if (this._ready) {
      if (!this._readySince) this._readySince = Date.now()
      this._everReady = true
      this._settleWaiters()
    } else {
      this._readySince = 0
    }
  }

  /** Settles the calls that wait for the first connection: once ready, or once it failed. */
  _settleWaiters () {
    if (!this._ready) this._readySince = 0
    if (this._waiters.length === 0) return
    if (!this._ready && !this._lastError && !this._closed) return
    const waiters = this._waiters
    this._waiters = []
    for (const w of waiters) w()
  }

  /**
   * Resolves once Redis can be used; rejects with UNAVAILABLE at once when it cannot (before
   * the first connection, a call waits for its outcome).
   */
  async _needRedis () {
    if (this._closed) return this._serverClosed()
    if (this._ready) return
    if (!this._everReady && !this._lastError) {
      await new Promise((resolve) => this._waiters.push(resolve))
      if (this._closed) return this._serverClosed()
      if (this._ready) return
    }
    const why = this._lastError ? `: ${this._lastError.message}` : ''
    throw unavailable(`Redis is unreachable (${this._redisUrlForHumans()})${why}; only calls for the rooms this node holds work`)
  }

  _redisUrlForHumans () {
    try {
      const url = new URL(this._config.redisUrl)
      url.password = ''
      url.username = ''
      return url.toString()
    } catch { return 'the configured URL' }
  }

  /** A Redis command's failure as the caller sees it. */
  _redisFailed (err) {
    if (err && ['ROOM_EXISTS', 'ROOM_NOT_FOUND', 'SERVER_CLOSED', 'UNAVAILABLE'].includes(err.code)) return err
    return unavailable(`Redis command failed: ${err && err.message ? err.message : err}`)
  }

  async _redis (command, ...args) {
    try {
      return await this._cmd[command](...args)
    } catch (err) {
      throw this._redisFailed(err)
    }
  }

  /** This node's load figure, sampled from the native stats() and the process's CPU time. */
  async _sampleLoad () {
    const stats = await this._native.stats()
    const now = performance.now()
    const cpu = process.cpuUsage()
    const last = this._lastSample
    const seconds = Math.max((now - last.at) / 1000, 0.001)
    const cpuSeconds = (cpu.user - last.cpu.user + cpu.system - last.cpu.system) / 1e6
    const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
    this._load = {
      connections: stats.upstreamConnections + stats.downstreamConnections,
      packetsPerSecond: Math.max(0, Math.round((stats.forwardedPackets - last.packets) / seconds)),
      cpu: Math.round(Math.min(1, cpuSeconds / seconds / cores) * 1000) / 1000
    }
    this._lastSample = { at: now, cpu, packets: stats.forwardedPackets }
    return this._load
  }

  _info () {
    return JSON.stringify({ ...this._load, at: Date.now() })
  }

  /** Registers this node and the rooms it holds, from its own state (at every (re)connection). */
  async _register () {
    if (this._closed) return
    const rooms = [...this._local]
    const conflicts = await this._cmd.register(this._config.prefix, this.nodeId, this._instance, this._info(), this._config.nodeTimeoutMs, ...rooms)
    for (const room of listOf(conflicts)) {
      process.emitWarning(`mediaserver-rs cluster: room '${room}' of node ${this.nodeId} is held by another node in the directory; calls through other nodes go there`)
    }
    this._registered = true
    await this._beat()
    this._checkReady()
  }

  async _heartbeat () {
    if (this._closed || !this._cmdReady || this._beating) return
    this._beating = true
    try {
      // not registered yet, or the directory lost this node: register everything again, once
      // subscribed (so that no request, and no message the registration causes, is missed)
      if (!this._registered) {
        if (this._subReady) await this._register()
      } else {
        await this._beat()
      }
    } catch (err) {
      this._noteError(err)
    } finally {
      this._beating = false
    }
  }

  /** One heartbeat: refreshes this node's key, reads the live nodes, reaps the lapsed ones. */
  async _beat () {
    try { await this._sampleLoad() } catch {}
    // Reap lapsed nodes only after being connected for a whole node timeout: after Redis
    // comes back, every node has that long to re-register before it could be declared lost.
    const reap = this._readySince && Date.now() - this._readySince >= this._config.nodeTimeoutMs ? '1' : '0'
    const out = await this._cmd.heartbeat(this._config.prefix, this.nodeId, this._instance, this._info(), this._config.nodeTimeoutMs, reap)
    const nodes = []
    for (let i = 1; i + 2 < out.length; i += 3) {
      let info = {}
      try { info = JSON.parse(out[i + 1]) } catch {}
      nodes.push({
        nodeId: out[i],
        rooms: Number(out[i + 2]),
        connections: Number(info.connections) || 0,
        packetsPerSecond: Number(info.packetsPerSecond) || 0,
        cpu: Number(info.cpu) || 0
      })
    }
    nodes.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0))
    this._nodes = nodes
    // the node was missing from the set: Redis lost its data (restarted without persistence,
    // flushed), or this node was declared lost; the next beat registers everything again
    if (out[0] === 1) {
      this._registered = false
      this._checkReady()
    } else if (out[0] === 2 && !this._warnedTaken) {
      this._warnedTaken = true
      process.emitWarning(`mediaserver-rs cluster: another server registered the node id ${this.nodeId} since this one did; ` +
        'every node needs its own id')
    }
  }

  // ------------------------------------------------------------------------------------
  // Events

  _emit (event) {
    for (const entry of this._listeners.filter((l) => l.event === event.type)) {
      // removed meanwhile (by an earlier listener): not called, as the native server does
      if (!this._listeners.includes(entry)) continue
      if (entry.once) this._listeners.splice(this._listeners.indexOf(entry), 1)
      try {
        entry.fn.call(this, event)
      } catch (err) {
        process.nextTick(() => { throw err })
      }
    }
  }

  _onNativeEvent (e) {
    if (e && e.type === 'roomclosed' && typeof e.roomId === 'string') this._forget(e.roomId)
    const event = { ...e, nodeId: this.nodeId }
    this._emit(event)
    // close() tells the others itself, in the leave script
    if (e.type === 'roomclosed' && e.reason === 'serverClosed') return
    if (this._cmdReady && !this._closed) {
      this._cmd.publish(this._keys.events, JSON.stringify({ k: 'e', n: this.nodeId, e })).catch(() => {})
    }
  }

  _onMessage (channel, message) {
    let msg
    try { msg = JSON.parse(message) } catch { return }
    if (channel === this._keys.rpc(this.nodeId)) return this._serve(msg)
    if (channel === this._keys.reply(this.nodeId)) return this._onReply(msg)
    if (channel !== this._keys.events || this._closed) return
    if (msg.k === 'e') {
      if (msg.n === this.nodeId) return
      this._emit({ ...msg.e, nodeId: msg.n })
    } else if (msg.k === 'closed') {
      const reason = msg.reason
      if (msg.n === this.nodeId && msg.inst === this._instance) {
        // declared lost while alive (cut off from Redis too long): re-register on the next beat
        if (reason === 'nodeLost') this._registered = false
        return
      }
      // (a message about this node id but another instance: the rooms of this id's previous
      // process, lost; told here too, as every node tells it)
      if (reason === 'nodeLost' && msg.by !== msg.n) {
        this._failPending((entry) => entry.node === msg.n &&
          unavailable(`node ${msg.n}, which held the room, was lost during the call; its outcome is unknown`))
      }
      for (const roomId of listOf(msg.rooms)) {
        this._emit({ type: 'roomclosed', roomId: String(roomId), reason, nodeId: msg.n })
      }
    }
  }

  /** Drops a room this node no longer holds from the directory (best effort: re-registration fixes the rest). */
  _forget (roomId) {
    if (!this._local.delete(roomId)) return Promise.resolve()
    // closing: the leave script drops every room of this node and tells the other nodes
    if (!this._cmdReady || this._closed) return Promise.resolve()
    return this._cmd.releaseRoom(this._config.prefix, roomId, this.nodeId).catch(() => {})
  }

  // ------------------------------------------------------------------------------------
  // Forwarding

  _failPending (reasonFor) {
    for (const [id, entry] of this._pending) {
      const err = reasonFor(entry)
      if (!err) continue
      this._pending.delete(id)
      clearTimeout(entry.timer)
      entry.reject(err)
    }
  }

  _onReply (msg) {
    const entry = this._pending.get(msg.i)
    if (!entry) return
    this._pending.delete(msg.i)
    clearTimeout(entry.timer)
    if (msg.error) entry.reject(codeError(msg.error.code, msg.error.message))
    else entry.resolve(msg.v)
  }

  /** Forwards a call to `node` and resolves to its result. */
  async _forward (node, method, args) {
    const id = `${this.nodeId}:${++this._seq}`
    const request = JSON.stringify({ i: id, f: this.nodeId, m: method, a: args })
    const timeoutMs = Math.max(15000, this._config.nodeTimeoutMs + 2 * this._config.heartbeatMs)
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id)
        reject(unavailable(`node ${node} did not answer within ${timeoutMs} ms`))
      }, timeoutMs)
      this._pending.set(id, { resolve, reject, node, timer })
    })
    const fail = (err) => {
      const entry = this._pending.get(id)
      if (!entry) return
      this._pending.delete(id)
      clearTimeout(entry.timer)
      entry.reject(err)
    }
    try {
      const receivers = await this._cmd.publish(this._keys.rpc(node), request)
      if (receivers === 0) fail(unavailable(`node ${node}, which holds the room, is not connected to Redis`))
    } catch (err) {
      fail(this._redisFailed(err))
    }
    return reply
  }

  /** A request from another node: run it here, publish the reply. */
  async _serve (msg) {
    let reply
    try {
      if (this._closed) await this._serverClosed()
      const value = msg.m === 'createRoom'
        ? await this._createHere(msg.a[0], msg.a[1])
        : ROOM_METHODS.has(msg.m) ? await this._runLocal(msg.m, msg.a) : Promise.reject(invalid(`unknown method ${msg.m}`))
      reply = { i: msg.i, v: value }
    } catch (err) {
      reply = { i: msg.i, error: { code: typeof err?.code === 'string' ? err.code : 'INTERNAL', message: String(err?.message ?? err) } }
    }
    if (this._cmdReady) this._cmd.publish(this._keys.reply(msg.f), JSON.stringify(reply)).catch(() => {})
  }

  /** A call on this node's native server, with the directory kept in step when a room ends. */
  async _runLocal (method, args) {
    const result = await this._native[method](...args)
    if (method === 'deleteRoom') {
      await this._forget(idOf(args[0]))
    } else if (method === 'removeUser') {
      // the last user out deletes the room
      const room = idOf(args[0])
      if (this._local.has(room)) {
        await this._native.getRoom(room).then(() => {}, (err) => {
          if (err && err.code === 'ROOM_NOT_FOUND') return this._forget(room)
        })
      }
    }
    return result
  }

  /** createRoom on this node: claims the id in the directory, then creates the native room. */
  async _createHere (roomId, body) {
    if (this._local.has(roomId)) throw roomExists(roomId)
    await this._needRedis()
    let claimed
    try {
      claimed = await this._cmd.claimRoom(this._config.prefix, roomId, this.nodeId, '1')
    } catch (err) {
      throw this._redisFailed(err)
    }
    if (claimed !== 1) throw roomExists(roomId)
    try {
      const result = await this._native.createRoom(roomId, body)
      this._local.add(roomId)
      return result
    } catch (err) {
      await this._cmd.releaseRoom(this._config.prefix, roomId, this.nodeId).catch(() => {})
      throw err
    }
  }

  /** The node that should get a new room: the least loaded live node (this one on a tie). */
  _place () {
    const nodes = this._nodes.filter((n) => n.nodeId !== this.nodeId)
    const self = this._nodes.find((n) => n.nodeId === this.nodeId) ??
      { nodeId: this.nodeId, rooms: this._local.size, ...this._load }
    self.rooms = this._local.size
    self.connections = this._load.connections
    self.packetsPerSecond = this._load.packetsPerSecond
    self.cpu = this._load.cpu
    const candidates = [self, ...nodes]
    const cool = candidates.filter((n) => n.cpu <= 0.9)
    const pool = cool.length > 0 ? cool : candidates
    let best = pool[0]
    for (const n of pool) if (loadOf(n) < loadOf(best)) best = n
    return best.nodeId
  }

  /** Reads the live room counts of the placement candidates (one round trip). */
  async _refreshRoomCounts () {
    if (this._nodes.length === 0) return
    const pipeline = this._cmd.pipeline()
    for (const n of this._nodes) pipeline.scard(`${this._config.prefix}:node:${n.nodeId}:rooms`)
    const results = await pipeline.exec()
    results.forEach(([err, count], i) => { if (!err && this._nodes[i]) this._nodes[i].rooms = Number(count) })
  }

  async _serverClosed () {
    // the native server's own error (SERVER_CLOSED, its message)
    await this._native.stats()
    throw codeError('SERVER_CLOSED', 'the media server was closed')
  }

  // ------------------------------------------------------------------------------------
  // The API

  async createRoom (roomId, body) {
    if (this._closed) return this._native.createRoom(...arguments)
    const args = [...arguments]
    if (roomId === undefined || roomId === null) args[0] = crypto.randomUUID()
    const id = idOf(args[0])
    const wire = wireArgs('createRoom', args)
    // an argument the native server rejects: its own error, from its own checks
    if (id === null || wire === null) return this._native.createRoom(...arguments)
    await this._needRedis()
    try { await this._refreshRoomCounts() } catch (err) { throw this._redisFailed(err) }
    const target = this._place()
    if (target === this.nodeId) return this._createHere(id, wire[1] ?? undefined)
    return this._forward(target, 'createRoom', [id, wire[1] ?? undefined])
  }

  async _route (method, args) {
    if (this._closed) return this._native[method](...args)
    const room = idOf(args[0])
    const wire = wireArgs(method, args)
    if (room === null || wire === null || this._local.has(room)) return this._runLocal(method, args)
    await this._needRedis()
    const owner = await this._redis('hget', this._keys.rooms, room)
    if (owner === null) throw roomNotFound(room)
    if (owner === this.nodeId) return this._runLocal(method, args)
    return this._forward(owner, method, wire)
  }

  addUser (...args) { return this._route('addUser', args) }
  produce (...args) { return this._route('produce', args) }
  consume (...args) { return this._route('consume', args) }
  stopProduce (...args) { return this._route('stopProduce', args) }
  setPreferredLayers (...args) { return this._route('setPreferredLayers', args) }
  removeUser (...args) { return this._route('removeUser', args) }
  deleteRoom (...args) { return this._route('deleteRoom', args) }
  getStats (...args) { return this._route('getStats', args) }
  getRoom (...args) { return this._route('getRoom', args) }

  /** The native stats(), plus this node's id, the cluster's live nodes and Redis's state. */
  async stats () {
    const stats = await this._native.stats()
    const nodes = this._nodes.map((n) => ({ ...n }))
    const self = nodes.find((n) => n.nodeId === this.nodeId)
    if (self) Object.assign(self, { rooms: this._local.size }, this._load)
    return { ...stats, nodeId: this.nodeId, redisConnected: this._ready, nodes }
  }

  metrics (...args) { return this._native.metrics(...args) }

  async close () {
    if (this._closing) return this._native.close()
    this._closed = true
    this._closing = (async () => {
      clearInterval(this._timer)
      this._failPending(() => codeError('SERVER_CLOSED', 'the media server was closed'))
      this._settleWaiters()
      try {
        await this._native.close()
      } finally {
        this._local.clear()
        if (this._cmdReady) {
          await this._cmd.leave(this._config.prefix, this.nodeId, 'serverClosed', this._instance).catch(() => {})
        }
        await Promise.all([this._cmd, this._sub].map((c) => quit(c)))
      }
    })()
    return this._closing
  }

  // ------------------------------------------------------------------------------------
  // Listeners: EventEmitter's methods, checked as the native server checks them

  _check (event, listener, needListener) {
    // the native server's own check and message for the name
    this._native.listenerCount(event)
    if ((needListener || listener !== undefined) && typeof listener !== 'function') throw invalid('the listener must be a function')
  }

  on (event, listener) {
    this._check(event, listener, true)
    this._listeners.push({ event, fn: listener, once: false })
    return this
  }

  addListener (event, listener) { return this.on(event, listener) }

  once (event, listener) {
    this._check(event, listener, true)
    this._listeners.push({ event, fn: listener, once: true })
    return this
  }

  off (event, listener) {
    this._check(event, listener, true)
    for (let i = this._listeners.length - 1; i >= 0; i--) {
      const l = this._listeners[i]
      if (l.event === event && l.fn === listener) {
        this._listeners.splice(i, 1)
        break
      }
    }
    return this
  }

  removeListener (event, listener) { return this.off(event, listener) }

  removeAllListeners (event) {
    if (event === undefined) {
      this._listeners = []
    } else {
      this._check(event, undefined, false)
      this._listeners = this._listeners.filter((l) => l.event !== event)
    }
    return this
  }

  listenerCount (event, listener) {
    this._check(event, listener, false)
    return this._listeners.filter((l) => l.event === event && (listener === undefined || l.fn === listener)).length
  }
}

/** QUIT (waits for the replies owed), or a hard disconnect when Redis is not there. */
async function quit (client) {
  if (client.status === 'ready') {
    const timer = setTimeout(() => client.disconnect(), 1000)
    try { await client.quit() } catch {} finally { clearTimeout(timer) }
  }
  client.disconnect()
}

module.exports = { ClusterMediaServer, clusterOptions }
