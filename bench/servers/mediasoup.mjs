// mediasoup (3.12.16, or another build given by --mediasoup-app) behind the benchmark's control API: the same routes and the same
// semantics as our server (shared/spec/API.md), built on mediasoup's own Node API, with the SDP
// translated to and from mediasoup's parameters here (sdp-transform), as a mediasoup
// application server would do for plain-SDP clients.
//
// - One WebRtcTransport per connection, like ours: one upstream per publisher, one downstream
//   per (publisher, subscriber) pair, each on its own UDP port, ICE-lite, non-trickle.
// - `--workers W`: one router per worker per room. User k of a room (in joining order) lives on
//   router k % W: its upstream transport and the downstream transports it receives on. A producer
//   consumed on another worker's router is piped there once (router.pipeToRouter).
// - Its CPU is the worker processes' (worker.pid) plus this Node process's, counted separately.
// - `--mediasoup-app DIR`: take mediasoup from DIR/node_modules (e.g. bench/mediasoup-new/app-3.27.1,
//   run with that build's Node 22, bench/mediasoup-new/bin/node); default: bench/servers/node_modules
//   (3.12.16). The API used here is the same in 3.12 and 3.27 (3.27 still accepts `listenIps` and
//   the worker's rtcMinPort/rtcMaxPort, converting them to listenInfos itself).
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import sdpTransform from 'sdp-transform'
import { serve, args } from './http-api.mjs'

const opt = args({ port: 50000, workers: 1, rtcMinPort: 51000, rtcMaxPort: 59999, mediasoupApp: '' })
const mediasoup = opt.mediasoupApp
  ? createRequire(join(resolve(opt.mediasoupApp), 'package.json'))('mediasoup')
  : await import('mediasoup')

const mediaCodecs = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, parameters: {} },
]
const FEEDBACK = new Set(['nack', 'nack pli', 'ccm fir', 'goog-remb', 'transport-cc'])

class ApiError extends Error {
  constructor (code, message) { super(message); this.code = code }
}

const workers = []
const span = Math.floor((opt.rtcMaxPort - opt.rtcMinPort + 1) / opt.workers)
for (let i = 0; i < opt.workers; i++) {
  const w = await mediasoup.createWorker({
    logLevel: 'error',
    rtcMinPort: opt.rtcMinPort + i * span,
    rtcMaxPort: opt.rtcMinPort + (i + 1) * span - 1,
  })
  w.on('died', () => { console.error(`mediasoup worker ${w.pid} died`); process.exit(1) })
  workers.push(w)
}
const supportedExt = mediasoup.getSupportedRtpCapabilities().headerExtensions

const rooms = new Map() // id -> { routers, users: Map, joined }

function getRoom (roomId) {
  const room = rooms.get(String(roomId))
  if (!room) throw new ApiError('ROOM_NOT_FOUND', `no room ${roomId}`)
  return room
}
function getUser (room, userId) {
  const user = room.users.get(String(userId))
  if (!user) throw new ApiError('USER_NOT_FOUND', `no user ${userId}`)
  return user
}

async function newTransport (router) {
  return router.createWebRtcTransport({
    listenIps: [{ ip: '127.0.0.1' }], enableUdp: true, enableTcp: false, preferUdp: true,
  })
}

function remoteDtls (desc) {
  const s = sdpTransform.parse(desc.sdp)
  const m = s.media[0] ?? {}
  const fp = m.fingerprint ?? s.fingerprint
  const setup = m.setup ?? s.setup
  if (!fp) throw new ApiError('INVALID_SDP', 'no fingerprint')
  // Their role; mediasoup takes the other one.
  const role = setup === 'active' ? 'client' : 'server'
  return { parsed: s, dtlsParameters: { role, fingerprints: [{ algorithm: fp.type, value: fp.hash }] } }
}

function transportSdpCommon (t, setup) {
  const fp = t.dtlsParameters.fingerprints.find((f) => f.algorithm === 'sha-256')
  return {
    iceUfrag: t.iceParameters.usernameFragment,
    icePwd: t.iceParameters.password,
    fingerprint: { type: 'sha-256', hash: fp.value },
    setup,
    rtcpMux: 'rtcp-mux',
    rtcpRsize: 'rtcp-rsize',
    connection: { version: 4, ip: '127.0.0.1' },
    candidates: t.iceCandidates.map((c) => ({
      foundation: c.foundation, component: 1, transport: c.protocol, priority: c.priority,
      ip: c.ip, port: c.port, type: c.type,
    })),
    endOfCandidates: 'end-of-candidates',
  }
}

function sessionSdp (media) {
  return sdpTransform.write({
    version: 0,
    origin: { username: '-', sessionId: Date.now(), sessionVersion: 2, netType: 'IN', ipVer: 4, address: '127.0.0.1' },
    name: '-',
    timing: { start: 0, stop: 0 },
    icelite: 'ice-lite',
    msidSemantic: { semantic: 'WMS', token: '*' },
    groups: [{ type: 'BUNDLE', mids: media.map((m) => m.mid).join(' ') }],
    media,
  })
}

function codecLines (codecs) {
  const rtp = []; const fmtp = []; const rtcpFb = []
  for (const c of codecs) {
    const [, name] = c.mimeType.split('/')
    rtp.push({ payload: c.payloadType, codec: name, rate: c.clockRate, encoding: c.channels > 1 ? c.channels : undefined })
    const params = Object.entries(c.parameters ?? {}).map(([k, v]) => `${k}=${v}`).join(';')
    if (params) fmtp.push({ payload: c.payloadType, config: params })
    for (const fb of c.rtcpFeedback ?? []) rtcpFb.push({ payload: c.payloadType, type: fb.type, subtype: fb.parameter || undefined })
  }
  return { rtp, fmtp, rtcpFb, payloads: codecs.map((c) => c.payloadType).join(' ') }
}

// A publisher's offered m-section -> mediasoup producer rtpParameters (the router's codec of that
// kind, its RTX, the SSRCs, the header extensions mediasoup receives).
function producerParams (m, router) {
  const cap = router.rtpCapabilities.codecs.find((c) => c.kind === m.type && c.mimeType.split('/')[1] !== 'rtx')
  const want = cap.mimeType.split('/')[1].toLowerCase()
  const rtp = (m.rtp ?? []).find((r) => r.codec.toLowerCase() === want && r.rate === cap.clockRate)
  if (!rtp) throw new ApiError('INVALID_SDP', `no ${cap.mimeType} in the ${m.type} section`)
  const fmtpOf = (pt) => sdpTransform.parseParams((m.fmtp ?? []).find((f) => f.payload === pt)?.config ?? '')
  const codec = {
    mimeType: cap.mimeType, payloadType: rtp.payload, clockRate: rtp.rate,
    parameters: fmtpOf(rtp.payload),
    rtcpFeedback: (m.rtcpFb ?? []).filter((f) => Number(f.payload) === rtp.payload && FEEDBACK.has(`${f.type}${f.subtype ? ' ' + f.subtype : ''}`))
      .map((f) => ({ type: f.type, parameter: f.subtype ?? '' })),
  }
  if (m.type === 'audio') codec.channels = Number(rtp.encoding ?? 1)
  const codecs = [codec]
  const rtx = (m.rtp ?? []).find((r) => r.codec.toLowerCase() === 'rtx' && Number(fmtpOf(r.payload).apt) === rtp.payload)
  if (rtx) codecs.push({ mimeType: `${m.type}/rtx`, payloadType: rtx.payload, clockRate: rtx.rate, parameters: { apt: rtp.payload }, rtcpFeedback: [] })
  const ssrcs = [...new Set((m.ssrcs ?? []).map((s) => s.id))]
  const fid = (m.ssrcGroups ?? []).find((g) => g.semantics === 'FID')
  const primary = fid ? Number(fid.ssrcs.split(' ')[0]) : Number(ssrcs[0])
  const encoding = { ssrc: primary }
  if (fid && rtx) encoding.rtx = { ssrc: Number(fid.ssrcs.split(' ')[1]) }
  const cname = (m.ssrcs ?? []).find((s) => s.attribute === 'cname')?.value
  const headerExtensions = (m.ext ?? [])
    .filter((e) => supportedExt.some((s) => s.kind === m.type && s.uri === e.uri && (s.direction === 'sendrecv' || s.direction === 'recvonly')))
    .map((e) => ({ uri: e.uri, id: e.value }))
  return { mid: String(m.mid), codecs, headerExtensions, encodings: [encoding], rtcp: { cname, reducedSize: true } }
}

async function closePair (pair) {
  pair.transport.close()
}

// Downstream connection (producer user P -> consumer user C): a transport on C's router, one
// consumer per producer of P, and the server's offer.
async function makeDownstream (room, P, C) {
  const router = room.routers[C.routerIndex]
  const old = C.from.get(P.id)
  if (old) await closePair(old)
  const transport = await newTransport(router)
  const media = []
  const consumers = []
  for (const producer of Object.values(P.producers)) {
    if (C.routerIndex !== P.routerIndex) {
      const key = `${producer.id}:${C.routerIndex}`
      if (!room.piped.has(key)) {
        room.piped.set(key, room.routers[P.routerIndex].pipeToRouter({ producerId: producer.id, router }))
      }
      await room.piped.get(key)
    }
    const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities, paused: false })
    consumers.push(consumer)
    const p = consumer.rtpParameters
    const enc = p.encodings[0]
    const ssrcs = [{ id: enc.ssrc, attribute: 'cname', value: p.rtcp.cname }, { id: enc.ssrc, attribute: 'msid', value: `${P.id} ${consumer.id}` }]
    const ssrcGroups = []
    if (enc.rtx?.ssrc) {
      ssrcs.push({ id: enc.rtx.ssrc, attribute: 'cname', value: p.rtcp.cname }, { id: enc.rtx.ssrc, attribute: 'msid', value: `${P.id} ${consumer.id}` })
      ssrcGroups.push({ semantics: 'FID', ssrcs: `${enc.ssrc} ${enc.rtx.ssrc}` })
    }
    media.push({
      type: consumer.kind, port: 7, protocol: 'UDP/TLS/RTP/SAVPF', mid: String(p.mid), direction: 'sendonly',
      ...codecLines(p.codecs),
      ext: p.headerExtensions.map((e) => ({ value: e.id, uri: e.uri })),
      ...transportSdpCommon(transport, 'actpass'),
      msid: `${P.id} ${consumer.id}`,
      ssrcs, ssrcGroups,
    })
  }
  const pair = { transport, consumers, pending: true }
  C.from.set(P.id, pair)
  return { type: 'offer', sdp: sessionSdp(media) }
}

const sfu = {
  async createRoom (roomId, body = {}) {
    roomId = String(roomId)
    if (rooms.has(roomId)) throw new ApiError('ROOM_EXISTS', roomId)
    const routers = await Promise.all(workers.map((w) => w.createRouter({ mediaCodecs })))
    rooms.set(roomId, { routers, users: new Map(), joined: 0, piped: new Map() })
    return { room_id: roomId, users: [] }
  },

  async addUser (roomId, userId, body = {}) {
    const room = getRoom(roomId)
    userId = String(userId)
    if (room.users.has(userId)) throw new ApiError('USER_EXISTS', userId)
    const user = { id: userId, userInfo: body.userInfo ?? {}, routerIndex: room.joined++ % room.routers.length, producers: {}, upstream: null, from: new Map(), constraints: null }
    room.users.set(userId, user)
    const users = []
    for (const other of room.users.values()) {
      if (other === user) continue
      const item = { id: other.id, userInfo: other.userInfo }
      if (other.upstream) {
        item.offer = await makeDownstream(room, other, user)
        item.constraints = other.constraints
      }
      users.push(item)
    }
    return { id: userId, userInfo: user.userInfo, users }
  },

  async produce (roomId, userId, body = {}) {
    const room = getRoom(roomId)
    const user = getUser(room, userId)
    if (!body.offer) throw new ApiError('INVALID_ARGUMENT', 'this benchmark server needs an offer')
    if (user.upstream) user.upstream.close()
    const router = room.routers[user.routerIndex]
    const { parsed, dtlsParameters } = remoteDtls(body.offer)
    const transport = await newTransport(router)
    await transport.connect({ dtlsParameters })
    user.upstream = transport
    user.producers = {}
    const media = []
    for (const m of parsed.media) {
      const rtpParameters = producerParams(m, router)
      const producer = await transport.produce({ kind: m.type, rtpParameters })
      user.producers[m.type] = producer
      const answerCodecs = rtpParameters.codecs
      media.push({
        type: m.type, port: 7, protocol: 'UDP/TLS/RTP/SAVPF', mid: String(m.mid), direction: 'recvonly',
        ...codecLines(answerCodecs),
        ext: rtpParameters.headerExtensions.map((e) => ({ value: e.id, uri: e.uri })),
        ...transportSdpCommon(transport, dtlsParameters.role === 'server' ? 'active' : 'passive'),
      })
    }
    user.constraints = { audio: !!user.producers.audio, video: !!user.producers.video }
    const outbound = []
    for (const other of room.users.values()) {
      if (other === user) continue
      outbound.push({ id: other.id, userInfo: other.userInfo, offer: await makeDownstream(room, user, other), constraints: user.constraints })
    }
    return { answer: { type: 'answer', sdp: sessionSdp(media) }, id: user.id, userInfo: user.userInfo, constraints: user.constraints, outbound }
  },

  async consume (roomId, userId, body = {}) {
    const room = getRoom(roomId)
    const user = getUser(room, userId)
    const answers = body.answers ?? [{ id: body.id, answer: body.answer }]
    for (const { id, answer } of answers) {
      const pair = user.from.get(String(id))
      if (!pair || !pair.pending) throw new ApiError('NO_PENDING_OFFER', `no offer from ${id} to ${userId}`)
      const { dtlsParameters } = remoteDtls(answer)
      await pair.transport.connect({ dtlsParameters })
      pair.pending = false
    }
    return { status: 'connected' }
  },

  async stopProduce (roomId, userId) {
    const room = getRoom(roomId)
    const user = getUser(room, userId)
    if (!user.upstream) throw new ApiError('NOT_PRODUCING', userId)
    user.upstream.close(); user.upstream = null; user.producers = {}
    const outbound = []
    for (const other of room.users.values()) {
      if (other === user) continue
      const pair = other.from.get(user.id)
      if (pair) { await closePair(pair); other.from.delete(user.id) }
      outbound.push({ id: other.id, userInfo: other.userInfo })
    }
    return { id: user.id, userInfo: user.userInfo, constraints: { audio: false, video: false }, outbound }
  },

  async removeUser (roomId, userId) {
    const room = getRoom(roomId)
    const user = getUser(room, userId)
    if (user.upstream) user.upstream.close()
    for (const pair of user.from.values()) await closePair(pair)
    room.users.delete(user.id)
    const outbound = []
    for (const other of room.users.values()) {
      const pair = other.from.get(user.id)
      if (pair) { await closePair(pair); other.from.delete(user.id) }
      outbound.push({ id: other.id, userInfo: other.userInfo })
    }
    if (room.users.size === 0) { room.routers.forEach((r) => r.close()); rooms.delete(String(roomId)) }
    return { id: user.id, userInfo: user.userInfo, outbound }
  },

  async deleteRoom (roomId) {
    const room = getRoom(roomId)
    const count = room.users.size
    room.routers.forEach((r) => r.close())
    rooms.delete(String(roomId))
    return { count }
  },
}

const pids = { node: process.pid }
workers.forEach((w, i) => { pids[`worker${i}`] = w.pid })
await serve(sfu, { port: opt.port, extra: { '/bench/pids': () => pids } })
console.log(JSON.stringify({ ready: true, server: `mediasoup ${mediasoup.version} (${opt.workers} worker${opt.workers > 1 ? 's' : ''})`, version: mediasoup.version, pids }))
process.on('SIGTERM', () => { workers.forEach((w) => w.close()); process.exit(0) })
