// A GStreamer webrtcbin producer (Debian's gstreamer1.0-plugins-bad, driven by
// __test__/gst-producer.py) with bundle-policy max-bundle: its video section has port 0 and
// a=bundle-only. That section is live (RFC 8843): the server must report both kinds and a
// libwebrtc consumer must decode both. Skipped only when GStreamer's webrtcbin is not installed
// (scripts/system-deps.sh installs it).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Client, closeEverything, createServer, mediaSections, uniqueId, waitFor, withTimeout } from './helpers.mjs'

const PYTHON = '/usr/bin/python3'
const SCRIPT = fileURLToPath(new URL('./gst-producer.py', import.meta.url))

function gstreamerMissing () {
  const probe = spawnSync(PYTHON, ['-c', [
    'import gi',
    "gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1')",
    'from gi.repository import Gst, GstWebRTC, Nice',
    'Gst.init(None)',
    "assert all(Gst.ElementFactory.find(e) for e in ['webrtcbin', 'opusenc', 'vp8enc', 'rtpvp8pay', 'videotestsrc'])"
  ].join('\n')], { encoding: 'utf8' })
  return probe.status === 0 ? null : `GStreamer webrtcbin is not installed (${(probe.stderr || '').trim().split('\n').pop()}); scripts/system-deps.sh installs it`
}

const missing = gstreamerMissing()
const children = new Set()

after(async () => {
  for (const child of children) child.kill('SIGTERM')
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Starts the GStreamer producer; resolves with its offer and a way to send it the answer. */
async function startGstProducer (policy = 'max-bundle') {
  const child = spawn(PYTHON, [SCRIPT, policy], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const states = []
  const lines = createInterface({ input: child.stdout })
  const offer = await withTimeout(new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      const msg = JSON.parse(line)
      if (msg.offer) resolve(msg.offer)
      if (msg.state) states.push(msg.state)
      if (msg.error) reject(new Error(`gst-producer: ${msg.error}`))
    })
    child.on('exit', (code) => reject(new Error(`gst-producer exited (${code}) before its offer: ${stderr}`)))
  }), 15000, 'the GStreamer offer')
  return {
    offer,
    states,
    answer: (sdp) => child.stdin.write(JSON.stringify({ answer: sdp }) + '\n'),
    stop: () => child.kill('SIGTERM')
  }
}

test('GStreamer webrtcbin with max-bundle (port-0 bundle-only video): both kinds produced, a libwebrtc consumer decodes both', { skip: missing ?? false, timeout: 60000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('gst')
  await server.createRoom(room, { userId: 'gst' })
  await server.addUser(room, 'viewer')
  const gst = await startGstProducer()

  // The shape under test, as GStreamer wrote it.
  const sections = mediaSections(gst.offer)
  assert.deepEqual(sections.map((s) => s.kind), ['audio', 'video'])
  assert.equal(sections[1].port, 0, 'max-bundle: the second section has port 0')
  assert.ok(sections[1].lines.includes('a=bundle-only'), 'and a=bundle-only')

  const res = await server.produce(room, 'gst', { offer: { type: 'offer', sdp: gst.offer } })
  assert.deepEqual(res.constraints, { audio: true, video: true }, 'the server reads both kinds as sent')
  const answered = mediaSections(res.answer.sdp)
  assert.deepEqual(answered.map((s) => [s.kind, s.port !== 0, s.direction]), [['audio', true, 'recvonly'], ['video', true, 'recvonly']],
    'the answer accepts both sections')
  const consumerOffer = mediaSections(res.outbound[0].offer.sdp)
  assert.deepEqual(consumerOffer.map((s) => s.kind).sort(), ['audio', 'video'], 'the consumer is offered audio and video')
  gst.answer(res.answer.sdp)

  const viewer = new Client(server, room, 'viewer')
  await viewer.consumeAll(res.outbound, { from: 'gst' })
  const first = await viewer.waitDecoding('gst', { timeout: 20000 })
  const audio = await viewer.waitAudio('gst', { timeout: 20000 })
  // Growing, not a burst.
  const later = await viewer.waitDecoding('gst', { above: first.video.framesDecoded + 30, timeout: 15000 })
  const audioLater = await viewer.waitAudio('gst', { above: audio.audio.packetsReceived + 50, timeout: 15000 })
  assert.ok(audioLater.audio.totalSamplesReceived > audio.audio.totalSamplesReceived)
  const up = (await server.getStats(room, 'gst')).connections.find((c) => c.direction === 'upstream')
  const kinds = Object.fromEntries(up.tracks.map((t) => [t.kind, t]))
  assert.equal(kinds.audio?.codec, 'audio/OPUS')
  assert.equal(kinds.video?.codec, 'video/VP8')
  console.log(`GStreamer max-bundle producer: consumer decoded ${later.video.framesDecoded} frames at ${later.video.frameWidth} px wide, ` +
    `${audioLater.audio.packetsReceived} audio packets (${audioLater.audio.totalSamplesReceived} samples); ` +
    `server received ${kinds.audio.packetsReceived} audio and ${kinds.video.packetsReceived} video packets`)
  await waitFor(() => gst.states.includes('connected'), { message: 'webrtcbin reports connected' })
  gst.stop()
})
