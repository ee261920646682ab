// A two-person call through the SFU, in one process: user "alice" sends a synthetic camera
// and microphone, user "bob" receives them through the server, and the script prints what
// bob's own WebRTC stack decoded. The clients are @roamhq/wrtc (Google's libwebrtc); the
// server is this package. Everything stays on 127.0.0.1.
//
//   npm run demo            (after npm ci && npm run build)
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'

const require = createRequire(import.meta.url)
const { MediaServer } = require('../index.js')
const wrtc = require('@roamhq/wrtc')
const { RTCPeerConnection, nonstandard: { RTCVideoSource, RTCAudioSource } } = wrtc

const seconds = Number(process.argv[2] ?? 5)
const server = new MediaServer({ listenIp: '127.0.0.1' })

// Non-trickle signalling: hand over an SDP only once it holds every candidate.
async function localDescription (pc, description) {
  await pc.setLocalDescription(description)
  while (pc.iceGatheringState !== 'complete') await sleep(10)
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp }
}

// A moving grey ramp at 30 fps and a 440 Hz tone in 10 ms frames.
const video = new RTCVideoSource()
const audio = new RTCAudioSource()
const width = 320; const height = 240
const frame = new Uint8ClampedArray(width * height * 1.5)
let tick = 0
const timers = [
  setInterval(() => {
    tick++
    for (let i = 0; i < width * height; i++) frame[i] = (i + tick * 4) & 0xff
    frame.fill(128, width * height)
    video.onFrame({ width, height, data: frame })
  }, 33),
  setInterval(() => {
    const samples = new Int16Array(480)
    for (let i = 0; i < 480; i++) samples[i] = Math.sin(2 * Math.PI * 440 * (tick * 480 + i) / 48000) * 8000
    audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 })
  }, 10)
]
const tracks = [video.createTrack(), audio.createTrack()]

const room = (await server.createRoom(null, { userId: 'alice', userInfo: { name: 'Alice' } })).room_id
await server.addUser(room, 'bob', { userInfo: { name: 'Bob' } })
console.log(`room ${room}: alice and bob joined`)

// Alice produces: the answer is hers, each outbound item goes to the user it names.
const alice = new RTCPeerConnection()
for (const track of tracks) alice.addTransceiver(track, { direction: 'sendonly' })
const started = Date.now()
const produced = await server.produce(room, 'alice', { offer: await localDescription(alice, await alice.createOffer()) })
console.log(`produce() answered in ${Date.now() - started} ms; constraints ${JSON.stringify(produced.constraints)}`)
await alice.setRemoteDescription(produced.answer)

// What the backend would relay to bob over its WebSocket: his item of `outbound`.
const forBob = produced.outbound.find((item) => item.id === 'bob')
const bob = new RTCPeerConnection()
await bob.setRemoteDescription(forBob.offer)
const answer = await localDescription(bob, await bob.createAnswer())
console.log('consume():', await server.consume(room, 'bob', { id: 'alice', answer }))

for (let s = 1; s <= seconds; s++) {
  await sleep(1000)
  const inbound = [...(await bob.getStats()).values()].filter((r) => r.type === 'inbound-rtp')
  const v = inbound.find((r) => r.kind === 'video') ?? {}
  const a = inbound.find((r) => r.kind === 'audio') ?? {}
  console.log(`${s}s  bob decoded ${v.framesDecoded ?? 0} video frames (${v.frameWidth ?? 0}x${v.frameHeight ?? 0}), ` +
    `received ${a.packetsReceived ?? 0} audio packets`)
}

console.log('server:', await server.stats())
console.log('deleteRoom():', await server.deleteRoom(room))
await server.close()
timers.forEach(clearInterval)
alice.close(); bob.close()
// libwebrtc's source tracks keep a plain exit from finishing (see ../shared/testing/PEERS.md).
setImmediate(() => process.exit(0))
