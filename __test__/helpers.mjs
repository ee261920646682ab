// Test harness: real WebRTC clients (@roamhq/wrtc, Google's libwebrtc) that talk to the
// MediaServer addon the way a browser behind a backend would.
//
// Facts this relies on (see shared/testing/PEERS.md):
// - media comes from nonstandard.RTCVideoSource / RTCAudioSource that we feed ourselves;
// - signalling is non-trickle: after setLocalDescription we wait for gathering to complete
//   and send pc.localDescription;
// - once a source track has existed the process cannot exit normally: every test file ends
//   with `after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))` after
//   closing every connection (see `closeEverything`).

import { createRequire } from 'node:module'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'

const require = createRequire(import.meta.url)
export const wrtc = require('@roamhq/wrtc')
const { RTCPeerConnection } = wrtc
const { RTCVideoSource, RTCAudioSource } = wrtc.nonstandard

export { sleep }

// ---------------------------------------------------------------------------------------
// The addon

let addon = null
/** The addon's exports (`require('../index.js')`), loaded on first use. */
export function loadAddon () {
  if (!addon) addon = require('../index.js')
  return addon
}

const servers = new Set()
/**
 * A MediaServer bound to 127.0.0.1 with the given port range; remembered so that
 * `closeEverything` closes it.
 */
export function createServer (portRange, extra = {}) {
  const { MediaServer } = loadAddon()
  const opts = { listenIp: '127.0.0.1', ...extra }
  if (portRange) opts.portRange = portRange
  const server = new MediaServer(opts)
  servers.add(server)
  return server
}

export async function closeServer (server) {
  servers.delete(server)
  try { await server.close() } catch (err) { if (err?.code !== 'SERVER_CLOSED') throw err }
}

// ---------------------------------------------------------------------------------------
// Small utilities

/**
 * Poll `fn` (sync or async) until it returns a truthy value; return that value.
 * Throws after `timeout` ms with `message` and the last value / error seen.
 */
export async function waitFor (fn, { timeout = 10000, interval = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let last, lastErr
  for (;;) {
    try {
      last = await fn()
      lastErr = undefined
      if (last) return last
    } catch (err) {
      lastErr = err
    }
    if (Date.now() >= deadline) {
      const detail = lastErr ? `last error: ${lastErr.stack || lastErr}` : `last value: ${safeJson(last)}`
      throw new Error(`waitFor timed out after ${timeout} ms: ${message}; ${detail}`)
    }
    await sleep(interval)
  }
}

/**
 * Wait until a counter has stopped: poll `read()` (sync or async) every `interval` ms until
 * `key(value)` is the same on `reads` consecutive polls, and return `{ first, last }`, the
 * samples that open and close that still run (so a caller can check that something else moved
 * meanwhile). A counter that keeps moving never satisfies it: the wait throws after `timeout`
 * ms, with the values it saw. That is what lets it prove "stopped", provided the caller starts it
 * once the event that should stop the counter has happened (the server reported the connection
 * closed, the mute applied) and `interval` is long enough for a live flow to move the counter
 * many times: audio is 50 packets and the tests' video 30 frames a second, so the default
 * (3 reads 500 ms apart: a second without change) would see some 50 audio packets or 30 frames.
 */
export async function waitSteady (read, { key = (v) => v, interval = 500, reads = 3, timeout = 15000, message = 'counter steady' } = {}) {
  const deadline = Date.now() + timeout
  const seen = []
  let run = null
  for (;;) {
    const value = await read()
    const k = JSON.stringify(key(value))
    if (run && run.k === k) {
      run.count++
      run.last = value
    } else {
      run = { k, count: 1, first: value, last: value }
    }
    seen.push(k)
    if (run.count >= reads) return { first: run.first, last: run.last }
    if (Date.now() >= deadline) {
      throw new Error(`waitSteady timed out after ${timeout} ms: ${message}; last values: ${seen.slice(-12).join(' -> ')}`)
    }
    await sleep(interval)
  }
}

/** Reject if `promise` has not settled within `ms` (so a hanging call fails instead of hanging). */
export function withTimeout (promise, ms, what = 'operation') {
  let timer
  const t = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  return Promise.race([Promise.resolve(promise), t]).finally(() => clearTimeout(timer))
}

/**
 * Assert that `promise` rejects with an Error whose `.code` is `code` (within `timeout` ms).
 * Returns the error.
 */
export async function expectCode (promise, code, { timeout = 15000, what = '' } = {}) {
  let result, error
  try {
    result = await withTimeout(promise, timeout, what || `call expected to reject with ${code}`)
  } catch (err) {
    error = err
  }
  if (!error) assert.fail(`${what ? what + ': ' : ''}expected rejection with code ${code}, but it resolved with ${safeJson(result)}`)
  if (error.code !== code) {
    assert.fail(`${what ? what + ': ' : ''}expected code ${code}, got code ${safeJson(error.code)} (${error.stack || error})`)
  }
  assert.ok(error instanceof Error, `${code}: rejection value is not an Error: ${safeJson(error)}`)
  assert.equal(typeof error.message, 'string')
  return error
}

export function safeJson (v) {
  try {
    const s = JSON.stringify(v, (k, val) => (k === 'sdp' && typeof val === 'string' ? `<sdp ${val.length} chars>` : val))
    return s && s.length > 2000 ? s.slice(0, 2000) + '…' : s
  } catch { return String(v) }
}

/** Sort an array of `{id}` items by id (the spec gives no order). */
export function byId (items) {
  return [...items].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

let uniq = 0
/** A room id unique within this process. */
export function uniqueId (prefix = 'room') {
  return `${prefix}-${process.pid}-${++uniq}`
}

export function openFdCount () {
  return require('node:fs').readdirSync('/proc/self/fd').length
}

// ---------------------------------------------------------------------------------------
// SDP helpers

/**
 * Keep only the ICE candidates on 127.0.0.1: a real client would offer all of its
 * addresses; ours offers loopback only so that every packet of the test stays on
 * 127.0.0.1 whatever interfaces the machine has.
 */
export function loopbackOnly (sdp) {
  return sdp
    .split('\r\n')
    .filter((line) => !line.startsWith('a=candidate:') || / 127\.0\.0\.1 /.test(line))
    .join('\r\n')
}

/** The m= sections of an SDP: [{kind, direction, port, payloads, lines}] */
export function mediaSections (sdp) {
  const out = []
  let cur = null
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      const [kind, port, , ...payloads] = line.slice(2).split(' ')
      cur = { kind, port: Number(port), payloads, direction: 'sendrecv', lines: [line] }
      out.push(cur)
    } else if (cur) {
      cur.lines.push(line)
      const m = /^a=(sendrecv|sendonly|recvonly|inactive)$/.exec(line)
      if (m) cur.direction = m[1]
    }
  }
  return out
}

/** The 127.0.0.1 candidates (and all candidates) an SDP carries. */
export function candidateLines (sdp) {
  return sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'))
}

/**
 * Rewrite every audio/video m= section of `sdp` so that its only codec is a made-up one
 * (`X-NOSUCHCODEC`): an offer with no usable codec.
 */
export function withMadeUpCodec (sdp) {
  const lines = sdp.split('\r\n')
  const out = []
  let inMedia = false
  for (const line of lines) {
    if (line.startsWith('m=audio') || line.startsWith('m=video')) {
      inMedia = true
      const parts = line.split(' ')
      const clock = line.startsWith('m=audio') ? '48000/2' : '90000'
      out.push(`${parts[0]} ${parts[1]} ${parts[2]} 120`)
      out.push(`a=rtpmap:120 X-NOSUCHCODEC/${clock}`)
      continue
    }
    if (line.startsWith('m=')) inMedia = false
    if (inMedia && /^a=(rtpmap|fmtp|rtcp-fb):/.test(line)) continue
    if (inMedia && /^a=ssrc-group:/.test(line)) continue
    out.push(line)
  }
  return out.join('\r\n')
}

// ---------------------------------------------------------------------------------------
// Synthetic media

const sources = new Set()

/**
 * A synthetic camera and microphone: an RTCVideoSource fed I420 frames with moving content
 * at ~`fps`, and an RTCAudioSource fed 10 ms frames of a tone. One source can feed any
 * number of clients (tracks are shared between peer connections).
 */
export class MediaSource {
  constructor ({ width = 320, height = 240, fps = 30, toneHz = 440, amplitude = 8000, audio = true, video = true } = {}) {
    this.width = width
    this.height = height
    this.fps = fps
    this.toneHz = toneHz
    /** Peak of the tone, of 32767; may be changed while it plays. */
    this.amplitude = amplitude
    this.closed = false
    this.videoSource = video ? new RTCVideoSource() : null
    this.audioSource = audio ? new RTCAudioSource() : null
    this.videoTrack = this.videoSource ? this.videoSource.createTrack() : null
    this.audioTrack = this.audioSource ? this.audioSource.createTrack() : null
    this.framesSent = 0
    this.audioFramesSent = 0
    this._frameIndex = 0
    this._sampleIndex = 0
    this._start = performance.now()
    this._videoDue = 0
    this._audioDue = 0
    const ySize = width * height
    this._frame = new Uint8ClampedArray(ySize * 3 / 2)
    this._frame.fill(128, ySize) // grey chroma
    this._samples = new Int16Array(480)
    // One timer drives both: it catches up on however many 10 ms audio frames and
    // 1/fps video frames are due, so timer jitter does not starve either stream.
    this._timer = setInterval(() => this._tick(), 10)
    sources.add(this)
  }

  _tick () {
    if (this.closed) return
    const elapsed = performance.now() - this._start
    if (this.audioSource) {
      const due = Math.floor(elapsed / 10)
      // never push more than 10 frames at once (after a long stall just skip ahead)
      if (due - this._audioDue > 10) this._audioDue = due - 10
      while (this._audioDue < due) {
        this._audioDue++
        this._pushAudio()
      }
    }
    if (this.videoSource) {
      const due = Math.floor(elapsed * this.fps / 1000)
      if (due > this._videoDue) {
        this._videoDue = due
        this._pushVideo()
      }
    }
  }

  _pushVideo () {
    const { width, height } = this
    const f = this._frame
    const n = this._frameIndex++
    // Y plane: a diagonal gradient that scrolls, plus a bright bar that moves: every frame
    // differs, so the encoder emits real (non-empty) frames.
    const barX = (n * 4) % width
    for (let y = 0; y < height; y++) {
      const row = y * width
      const base = (y + n * 2) & 0xff
      for (let x = 0; x < width; x++) {
        f[row + x] = (x >= barX && x < barX + 16) ? 235 : ((base + x) & 0xff)
      }
    }
    // a little chroma motion too
    const ySize = width * height
    const cSize = ySize / 4
    f.fill((n * 3) & 0xff, ySize, ySize + cSize / 8)
    try {
      this.videoSource.onFrame({ width, height, data: f })
      this.framesSent++
    } catch (err) {
      if (!this.closed) throw err
    }
  }

  _pushAudio () {
    const s = this._samples
    const w = 2 * Math.PI * this.toneHz / 48000
    for (let i = 0; i < 480; i++) {
      s[i] = Math.round(Math.sin(w * (this._sampleIndex + i)) * this.amplitude)
    }
    this._sampleIndex += 480
    try {
      this.audioSource.onData({ samples: s, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 })
      this.audioFramesSent++
    } catch (err) {
      if (!this.closed) throw err
    }
  }

  /** Stop the timer and the tracks. */
  close () {
    if (this.closed) return
    this.closed = true
    clearInterval(this._timer)
    for (const t of [this.videoTrack, this.audioTrack]) {
      try { t?.stop() } catch {}
    }
    sources.delete(this)
  }
}

/** A MediaSource (every MediaSource is remembered so that `closeEverything` stops it). */
export function createSource (opts) {
  return new MediaSource(opts)
}

// ---------------------------------------------------------------------------------------
// ICE gathering (non-trickle)

export async function waitGatheringComplete (pc, timeout = 10000) {
  if (pc.iceGatheringState === 'complete') return
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`ICE gathering did not complete within ${timeout} ms (state ${pc.iceGatheringState})`))
    }, timeout)
    const poll = setInterval(check, 20)
    function check () {
      if (pc.iceGatheringState === 'complete') { cleanup(); resolve() }
      if (pc.connectionState === 'closed') { cleanup(); reject(new Error('peer connection closed while gathering')) }
    }
    function onEvent () { check() }
    function cleanup () {
      clearTimeout(timer)
      clearInterval(poll)
      pc.removeEventListener('icegatheringstatechange', onEvent)
    }
    pc.addEventListener('icegatheringstatechange', onEvent)
  })
}

/** setLocalDescription(desc), wait for gathering, return the local description with loopback candidates only. */
async function setLocalAndGather (pc, desc) {
  await pc.setLocalDescription(desc)
  await waitGatheringComplete(pc)
  const local = pc.localDescription
  return { type: local.type, sdp: loopbackOnly(local.sdp) }
}

/** Sum the inbound-rtp entries of a getStats() report into {video, audio}. */
export function summarizeInbound (report) {
  const video = { framesDecoded: 0, packetsReceived: 0, frameWidth: 0, bytesReceived: 0 }
  const audio = { packetsReceived: 0, totalSamplesReceived: 0, bytesReceived: 0 }
  for (const s of report.values()) {
    if (s.type !== 'inbound-rtp') continue
    const kind = s.kind || s.mediaType
    if (kind === 'video') {
      video.framesDecoded += s.framesDecoded || 0
      video.packetsReceived += s.packetsReceived || 0
      video.bytesReceived += s.bytesReceived || 0
      video.frameWidth = Math.max(video.frameWidth, s.frameWidth || 0)
    } else if (kind === 'audio') {
      audio.packetsReceived += s.packetsReceived || 0
      audio.totalSamplesReceived += s.totalSamplesReceived || 0
      audio.bytesReceived += s.bytesReceived || 0
    }
  }
  return { video, audio }
}

// ---------------------------------------------------------------------------------------
// The client

const clients = new Set()

/**
 * One user's browser: an upstream RTCPeerConnection (when producing) and one downstream
 * RTCPeerConnection per producer it consumes.
 */
export class Client {
  /**
   * @param server the MediaServer
   * @param roomId room id (string)
   * @param userId user id (string)
   * @param opts.source a MediaSource to share; otherwise the client makes (and owns) one
   *                    the first time it produces
   * @param opts.sourceOptions options for that own MediaSource
   */
  constructor (server, roomId, userId, { source = null, sourceOptions = {} } = {}) {
    this.server = server
    this.roomId = roomId
    this.userId = String(userId)
    this.source = source
    this.ownsSource = false
    this.sourceOptions = sourceOptions
    this.upstream = null
    this.senders = { audio: null, video: null } // transceivers of the upstream pc
    this.downstreams = new Map() // producerId -> RTCPeerConnection
    this.lastProduce = null
    this.closed = false
    clients.add(this)
  }

  _ensureSource () {
    if (!this.source) {
      this.source = new MediaSource(this.sourceOptions)
      this.ownsSource = true
    }
    return this.source
  }

  /**
   * Start producing: a new upstream pc with one sendonly transceiver per kind asked for,
   * a non-trickle offer, server.produce, setRemoteDescription(answer).
   * Returns the server's response. `extra` is merged into the produce body (e.g. constraints).
   */
  async produce ({ audio = true, video = true } = {}, extra = {}) {
    assert.ok(!this.upstream, `${this.userId} is already producing; use reproduce()`)
    const source = this._ensureSource()
    const pc = new RTCPeerConnection({ iceServers: [] })
    this.upstream = pc
    if (audio) this.senders.audio = pc.addTransceiver(source.audioTrack, { direction: 'sendonly' })
    if (video) this.senders.video = pc.addTransceiver(source.videoTrack, { direction: 'sendonly' })
    return this._negotiateUpstream(extra)
  }

  /**
   * Produce again on the same upstream pc: (re)attach or detach tracks, new offer, produce.
   * Returns the server's response.
   */
  async reproduce ({ audio = true, video = true } = {}, extra = {}) {
    if (!this.upstream) return this.produce({ audio, video }, extra)
    const source = this._ensureSource()
    const pc = this.upstream
    for (const [kind, want] of [['audio', audio], ['video', video]]) {
      const track = kind === 'audio' ? source.audioTrack : source.videoTrack
      const tr = this.senders[kind]
      if (want) {
        if (tr) {
          await tr.sender.replaceTrack(track)
          tr.direction = 'sendonly'
        } else {
          this.senders[kind] = pc.addTransceiver(track, { direction: 'sendonly' })
        }
      } else if (tr) {
        await tr.sender.replaceTrack(null)
        tr.direction = 'inactive'
      }
    }
    return this._negotiateUpstream(extra)
  }

  async _negotiateUpstream (extra) {
    const pc = this.upstream
    const offer = await setLocalAndGather(pc, await pc.createOffer())
    const res = await this.server.produce(this.roomId, this.userId, { offer, ...extra })
    this.lastProduce = res
    assert.ok(res && res.answer, `produce(${this.userId}) returned no answer: ${safeJson(res)}`)
    await pc.setRemoteDescription(res.answer)
    return res
  }

  /**
   * Apply a server offer for producer `producerId` to this client's downstream pc for that
   * producer (created on first use, reused after), answer it; returns {id, answer}.
   */
  async handleOffer (producerId, offer) {
    producerId = String(producerId)
    assert.ok(offer && offer.type === 'offer' && typeof offer.sdp === 'string',
      `handleOffer(${producerId}): not an offer: ${safeJson(offer)}`)
    let pc = this.downstreams.get(producerId)
    if (!pc) {
      pc = new RTCPeerConnection({ iceServers: [] })
      this.downstreams.set(producerId, pc)
    }
    await pc.setRemoteDescription(offer)
    const answer = await setLocalAndGather(pc, await pc.createAnswer())
    return { id: producerId, answer }
  }

  /**
   * Answer a list of offers and send all the answers with one server.consume call
   * ({answers: [...]}). Returns the consume response (null when no item carried an offer).
   *
   * - `consumeAll(addUserResponse.users)`: items name the producer (`id`) and carry its offer.
   * - `consumeAll(produceResponse.outbound, { from: producerId })`: outbound items name the
   *   user they are addressed to (the backend relays each to that user): only the items
   *   addressed to this client are used, and their offer is the producer `from`'s.
   */
  async consumeAll (items, { from } = {}) {
    let offers = (items || []).filter((it) => it && it.offer)
    if (from !== undefined) {
      offers = offers.filter((it) => String(it.id) === this.userId).map((it) => ({ id: String(from), offer: it.offer }))
    }
    if (offers.length === 0) return null
    const answers = await Promise.all(offers.map((it) => this.handleOffer(it.id, it.offer)))
    const res = await this.server.consume(this.roomId, this.userId, { answers })
    assert.deepEqual(res, { status: 'connected' }, `consume(${this.userId}) response`)
    return res
  }

  /** Consume one producer's offer with the single-answer form {id, answer}. */
  async consumeOne (producerId, offer) {
    const { id, answer } = await this.handleOffer(producerId, offer)
    const res = await this.server.consume(this.roomId, this.userId, { id, answer })
    assert.deepEqual(res, { status: 'connected' }, `consume(${this.userId}) response`)
    return res
  }

  /** {video:{framesDecoded, packetsReceived, frameWidth}, audio:{packetsReceived, totalSamplesReceived}} */
  async inboundStats (producerId) {
    const pc = this.downstreams.get(String(producerId))
    assert.ok(pc, `${this.userId} has no downstream connection for ${producerId}`)
    return summarizeInbound(await pc.getStats())
  }

  /** Wait until this client decodes video from `producerId` (framesDecoded > `above`). */
  async waitDecoding (producerId, { above = 0, timeout = 15000 } = {}) {
    return waitFor(async () => {
      const s = await this.inboundStats(producerId)
      return s.video.framesDecoded > above ? s : null
    }, { timeout, interval: 100, message: `${this.userId} decodes video from ${producerId} (framesDecoded > ${above})` })
  }

  /** Wait until this client receives audio from `producerId` (packets and samples). */
  async waitAudio (producerId, { above = 0, timeout = 15000 } = {}) {
    return waitFor(async () => {
      const s = await this.inboundStats(producerId)
      return s.audio.packetsReceived > above && s.audio.totalSamplesReceived > 0 ? s : null
    }, { timeout, interval: 100, message: `${this.userId} receives audio from ${producerId} (packetsReceived > ${above})` })
  }

  /** Forget (and close) the downstream pc for `producerId`. */
  closeDownstream (producerId) {
    const pc = this.downstreams.get(String(producerId))
    if (pc) {
      this.downstreams.delete(String(producerId))
      try { pc.close() } catch {}
    }
  }

  /** Close every pc of this client and stop its own source. */
  close () {
    if (this.closed) return
    this.closed = true
    if (this.upstream) { try { this.upstream.close() } catch {} }
    this.upstream = null
    for (const pc of this.downstreams.values()) { try { pc.close() } catch {} }
    this.downstreams.clear()
    if (this.ownsSource && this.source) this.source.close()
    clients.delete(this)
  }
}

/**
 * Relay a produce response's outbound items the way a backend would: each item goes to the
 * client it names, which answers the producer's offer (one consume call per client).
 * `clients` maps user id -> Client. Items without an offer are skipped.
 */
export async function deliver (produceResponse, clients) {
  const producer = String(produceResponse.id)
  await Promise.all((produceResponse.outbound || []).filter((o) => o.offer).map((o) => {
    const c = clients[o.id]
    assert.ok(c, `outbound item for unknown user ${o.id}`)
    return c.consumeAll([o], { from: producer })
  }))
}

/**
 * The simplest call: `producer` (a Client) creates `room` and produces audio and video;
 * `consumer` joins, consumes it, and decodes. Returns the produce response.
 */
export async function startCall (server, room, producer, consumer) {
  await server.createRoom(room, { userId: producer.userId })
  await server.addUser(room, consumer.userId)
  const res = await producer.produce({ audio: true, video: true })
  await consumer.consumeAll(res.outbound, { from: producer.userId })
  await consumer.waitDecoding(producer.userId)
  return res
}

/**
 * Close every client, source and server this process made. Call it from the file's final
 * `after` hook before exiting.
 */
export async function closeEverything () {
  for (const c of [...clients]) c.close()
  for (const s of [...sources]) s.close()
  for (const srv of [...servers]) {
    try { await withTimeout(closeServer(srv), 10000, 'server.close()') } catch (err) { console.error('closing server:', err) }
  }
}

/**
 * Check a description the server returned: right type, an SDP string, non-trickle (it holds
 * its ICE candidates), and every candidate on 127.0.0.1 (the server listens there only).
 */
export function assertServerSdp (desc, type, what = 'server SDP') {
  assert.ok(desc && typeof desc === 'object', `${what}: not an object: ${safeJson(desc)}`)
  assert.equal(desc.type, type, `${what}: type`)
  assert.equal(typeof desc.sdp, 'string', `${what}: sdp is not a string`)
  assert.match(desc.sdp, /^v=0\r?\n/, `${what}: does not start with v=0`)
  const cands = candidateLines(desc.sdp)
  assert.ok(cands.length > 0, `${what}: holds no a=candidate line (signalling is non-trickle)`)
  for (const c of cands) {
    assert.match(c, / 127\.0\.0\.1 \d+ typ /, `${what}: candidate not on 127.0.0.1: ${c}`)
  }
}

/**
 * A well-formed client offer (audio and/or video tracks of `source`, sendonly), from a
 * throw-away pc that is closed afterwards.
 */
export async function makeOffer (source, { audio = true, video = true } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] })
  try {
    if (audio) pc.addTransceiver(source.audioTrack, { direction: 'sendonly' })
    if (video) pc.addTransceiver(source.videoTrack, { direction: 'sendonly' })
    return await setLocalAndGather(pc, await pc.createOffer())
  } finally {
    pc.close()
  }
}

/**
 * A well-formed answer (recvonly audio+video) made by throw-away pcs, closed afterwards.
 */
export async function makeAnswer (source) {
  const a = new RTCPeerConnection({ iceServers: [] })
  const b = new RTCPeerConnection({ iceServers: [] })
  try {
    a.addTransceiver(source.audioTrack, { direction: 'sendonly' })
    a.addTransceiver(source.videoTrack, { direction: 'sendonly' })
    const offer = await setLocalAndGather(a, await a.createOffer())
    await b.setRemoteDescription(offer)
    return await setLocalAndGather(b, await b.createAnswer())
  } finally {
    a.close()
    b.close()
  }
}

export const STATS_KEYS = ['rooms', 'users', 'upstreamConnections', 'downstreamConnections', 'liveConnections']

/**
 * server.stats() reduced to the documented keys (the server may report more, e.g. portsInUse).
 * Fails if a documented key is missing or not a number.
 */
export async function statsOf (server) {
  const s = await server.stats()
  const out = {}
  for (const k of STATS_KEYS) {
    assert.equal(typeof s[k], 'number', `stats().${k} is not a number: ${safeJson(s)}`)
    out[k] = s[k]
  }
  return out
}

/** Poll server.stats() until `pred(stats)` holds; returns the stats. */
export async function waitStats (server, pred, { timeout = 10000, message = 'stats condition' } = {}) {
  return waitFor(async () => {
    const s = await server.stats()
    return pred(s) ? s : null
  }, { timeout, interval: 50, message })
}

/** Poll until server.stats() deep-equals `expected` exactly; returns the stats. */
export async function waitStatsEqual (server, expected, { timeout = 10000 } = {}) {
  let last
  try {
    return await waitFor(async () => {
      last = await statsOf(server)
      try { assert.deepStrictEqual(last, expected); return last } catch { return null }
    }, { timeout, interval: 50, message: `stats() == ${JSON.stringify(expected)}` })
  } catch (err) {
    assert.deepStrictEqual(last, expected, `stats() did not become ${JSON.stringify(expected)} within ${timeout} ms`)
    throw err
  }
}
