// A werift producer (npm `werift`, a TypeScript WebRTC stack). Its offers carry no a=msid, only
// `a=ssrc:… cname:…`: webrtc-rs then gave the audio and the video track the same empty id and
// delivered only the first. werift does not encode media itself, so it relays real RTP: a
// libwebrtc source (@roamhq/wrtc, Opus and VP8) sends to a werift receiver, whose packets the
// werift producer sends on to the server, as an SFU-to-SFU or gateway hop would. The consumer
// (@roamhq/wrtc) must receive and decode both kinds.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { Client, closeEverything, createServer, createSource, loopbackOnly, mediaSections, uniqueId, waitGatheringComplete, withTimeout, wrtc } from './helpers.mjs'

const require = createRequire(import.meta.url)
const werift = require('werift')

const opened = []
after(async () => {
  for (const pc of opened) { try { await pc.close() } catch {} }
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

// Loopback only, and no STUN server (werift's default is a public one).
const WERIFT_CONFIG = {
  iceServers: [],
  iceUseIpv6: false,
  iceAdditionalHostAddresses: ['127.0.0.1'],
  iceFilterCandidatePair: (pair) => pair.protocol.localCandidate.host === '127.0.0.1' && pair.remoteCandidate.host === '127.0.0.1'
}

async function weriftGathered (pc) {
  if (pc.iceGatheringState === 'complete') return
  await withTimeout(new Promise((resolve) => pc.iceGatheringStateChange.subscribe((s) => s === 'complete' && resolve())), 10000, 'werift ICE gathering')
}

/** wrtc source -> werift receiver -> werift producer; returns the producer pc. */
async function weriftRelay (source) {
  const src = new wrtc.RTCPeerConnection({ iceServers: [] })
  opened.push(src)
  src.addTransceiver(source.audioTrack, { direction: 'sendonly' })
  src.addTransceiver(source.videoTrack, { direction: 'sendonly' })
  const inbound = new werift.RTCPeerConnection(WERIFT_CONFIG)
  const producer = new werift.RTCPeerConnection(WERIFT_CONFIG)
  opened.push(inbound, producer)
  const out = { audio: new werift.MediaStreamTrack({ kind: 'audio' }), video: new werift.MediaStreamTrack({ kind: 'video' }) }
  const senders = {}
  for (const kind of ['audio', 'video']) senders[kind] = producer.addTransceiver(out[kind], { direction: 'sendonly' }).sender
  inbound.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => {
      if (track.codec && rtp.header.payloadType !== track.codec.payloadType) return // RTX and the like
      rtp.header.extensions = [] // ids of the other leg
      out[track.kind].writeRtp(rtp)
    })
    if (track.kind === 'video') {
      // The server's keyframe requests go back to the encoder.
      senders.video.onPictureLossIndication.subscribe(() => {
        const receiver = inbound.getTransceivers().find((t) => t.kind === 'video').receiver
        receiver.sendRtcpPLI(track.ssrc)
      })
    }
  })
  await src.setLocalDescription(await src.createOffer())
  await waitGatheringComplete(src)
  await inbound.setRemoteDescription({ type: 'offer', sdp: loopbackOnly(src.localDescription.sdp) })
  await inbound.setLocalDescription(await inbound.createAnswer())
  await weriftGathered(inbound)
  await src.setRemoteDescription({ type: 'answer', sdp: loopbackOnly(inbound.localDescription.sdp) })
  await producer.setLocalDescription(await producer.createOffer())
  await weriftGathered(producer)
  return producer
}

test('a werift producer (no a=msid in its offer): the consumer receives its audio and decodes its video', { timeout: 60000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('werift')
  await server.createRoom(room, { userId: 'werift' })
  await server.addUser(room, 'viewer')
  const producer = await weriftRelay(createSource())
  const offer = { type: 'offer', sdp: loopbackOnly(producer.localDescription.sdp) }

  // The shape under test, as werift wrote it.
  const sections = mediaSections(offer.sdp)
  assert.deepEqual(sections.map((s) => s.kind), ['audio', 'video'])
  assert.ok(!/^a=msid:/m.test(offer.sdp) && !/^a=ssrc:\d+ msid:/m.test(offer.sdp), 'werift writes no msid')
  assert.ok(sections.every((s) => s.lines.some((l) => /^a=ssrc:\d+ cname:/.test(l))), 'only a=ssrc cname lines')

  const res = await server.produce(room, 'werift', { offer })
  assert.deepEqual(res.constraints, { audio: true, video: true })
  await producer.setRemoteDescription(res.answer)
  const viewer = new Client(server, room, 'viewer')
  await viewer.consumeAll(res.outbound, { from: 'werift' })
  const video = await viewer.waitDecoding('werift', { timeout: 20000 })
  const audio = await viewer.waitAudio('werift', { timeout: 20000 })
  const later = await viewer.waitDecoding('werift', { above: video.video.framesDecoded + 30 })
  const audioLater = await viewer.waitAudio('werift', { above: audio.audio.packetsReceived + 50 })
  assert.ok(audioLater.audio.totalSamplesReceived > audio.audio.totalSamplesReceived)
  console.log(`werift producer: consumer decoded ${later.video.framesDecoded} frames (${later.video.frameWidth} px wide), ` +
    `received ${audioLater.audio.packetsReceived} audio packets, ${audioLater.audio.totalSamplesReceived} samples`)
})
