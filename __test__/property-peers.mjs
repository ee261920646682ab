// Child process of property.test.mjs (not a test file itself): a small pool of real libwebrtc
// peers (@roamhq/wrtc) whose offers and answers the property test hands to the server, used
// correctly or not. The MediaServer lives in the parent, whose fds and RSS are measured; the
// peers live here because libwebrtc grows its host's RSS by itself (see leak-clients.mjs).
//
// The peers' own randomness (ICE credentials, fingerprints, SSRCs, timing) is outside the
// test's seed: a seed replays the same calls, not byte-identical SDPs.
//
// Protocol: parent -> child {id, op, ...args}; child -> parent {id, result} | {id, error}.
//   offer {dev, audio, video}   an offer from device `dev`'s upstream pc (made on first use;
//                               a pending offer of its own is rolled back first) -> {sdp}
//   upAnswer {dev, sdp}         the server's answer applied to that pc -> {ok} | {error}
//   upRollback {dev}            its pending offer rolled back
//   upClose {dev}               its upstream pc closed and forgotten
//   answer {key, sdp}           a server offer applied to downstream pc `key` (reused, or made
//                               anew when the offer does not apply to it) -> {sdp} | {error}
//   closeAll                    every pc closed; the source stopped
//   exit

import { MediaSource, loopbackOnly, waitGatheringComplete, wrtc } from './helpers.mjs'

const { RTCPeerConnection } = wrtc
const MAX_DOWNSTREAMS = 12

let source = null
const devices = new Map() // dev -> { pc, transceivers: {audio, video} }
const downs = new Map() // key -> pc, in least recently used order

function ensureSource () {
  if (!source) source = new MediaSource({ width: 160, height: 120, fps: 15 })
  return source
}

async function gathered (pc) {
  await waitGatheringComplete(pc, 8000)
  const { type, sdp } = pc.localDescription
  return { type, sdp: loopbackOnly(sdp) }
}

function closePc (pc) {
  try { pc.close() } catch {}
}

async function makeOffer ({ dev, audio = true, video = true }) {
  const src = ensureSource()
  let d = devices.get(dev)
  if (!d) {
    d = { pc: new RTCPeerConnection({ iceServers: [] }), transceivers: { audio: null, video: null } }
    devices.set(dev, d)
  }
  if (d.pc.signalingState === 'have-local-offer') await d.pc.setLocalDescription({ type: 'rollback' })
  for (const [kind, want] of [['audio', audio], ['video', video]]) {
    const track = kind === 'audio' ? src.audioTrack : src.videoTrack
    const tr = d.transceivers[kind]
    if (want) {
      if (tr) {
        await tr.sender.replaceTrack(track)
        tr.direction = 'sendonly'
      } else {
        d.transceivers[kind] = d.pc.addTransceiver(track, { direction: 'sendonly' })
      }
    } else if (tr) {
      await tr.sender.replaceTrack(null)
      tr.direction = 'inactive'
    }
  }
  await d.pc.setLocalDescription(await d.pc.createOffer())
  return gathered(d.pc)
}

const ops = {
  async offer (args) {
    try {
      return await makeOffer(args)
    } catch {
      // The device's pc is in a state it cannot offer from (a remote description it refused
      // half way, say): a new pc, once.
      await ops.upClose(args)
      return makeOffer(args)
    }
  },

  async upAnswer ({ dev, sdp }) {
    const d = devices.get(dev)
    if (!d) return { error: 'no such device' }
    try {
      await d.pc.setRemoteDescription({ type: 'answer', sdp })
      return { ok: true }
    } catch (err) {
      return { error: String(err.message || err) }
    }
  },

  async upRollback ({ dev }) {
    const d = devices.get(dev)
    if (d && d.pc.signalingState === 'have-local-offer') {
      try { await d.pc.setLocalDescription({ type: 'rollback' }) } catch {}
    }
    return { ok: true }
  },

  async upClose ({ dev }) {
    const d = devices.get(dev)
    if (d) {
      devices.delete(dev)
      closePc(d.pc)
    }
    return { ok: true }
  },

  async answer ({ key, sdp }) {
    for (let attempt = 0; attempt < 2; attempt++) {
      let pc = downs.get(key)
      downs.delete(key)
      if (!pc || attempt > 0) {
        if (pc) closePc(pc)
        pc = new RTCPeerConnection({ iceServers: [] })
      }
      downs.set(key, pc)
      while (downs.size > MAX_DOWNSTREAMS) {
        const [oldest, old] = downs.entries().next().value
        downs.delete(oldest)
        closePc(old)
      }
      try {
        await pc.setRemoteDescription({ type: 'offer', sdp })
        await pc.setLocalDescription(await pc.createAnswer())
        return await gathered(pc)
      } catch (err) {
        if (attempt > 0) return { error: String(err.message || err) }
      }
    }
    return { error: 'unreachable' }
  },

  async closeAll () {
    for (const d of devices.values()) closePc(d.pc)
    devices.clear()
    for (const pc of downs.values()) closePc(pc)
    downs.clear()
    if (source) source.close()
    source = null
    return { ok: true }
  }
}

process.on('message', async (msg) => {
  if (msg.op === 'exit') {
    await ops.closeAll()
    setImmediate(() => process.exit(0))
    return
  }
  try {
    const result = await ops[msg.op](msg)
    if (process.connected) process.send({ id: msg.id, result })
  } catch (err) {
    if (process.connected) process.send({ id: msg.id, error: String(err && err.stack ? err.stack : err) })
  }
})
process.on('disconnect', () => { ops.closeAll().finally(() => process.exit(0)) })
process.send({ ready: true })
