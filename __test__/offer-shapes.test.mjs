// Producer offers of the shapes other stacks send, made by a real libwebrtc peer
// (@roamhq/wrtc) and, where libwebrtc would not write that shape itself, edited on the client
// side as the other stack would have written it. Each accepted shape is proven by the consumer's
// own getStats(); each refused one by INVALID_SDP and a server that holds what it held before.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client, closeEverything, createServer, createSource, expectCode, loopbackOnly, mediaSections, statsOf, uniqueId, waitGatheringComplete, wrtc } from './helpers.mjs'

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

const server = createServer(null)
const source = createSource()

const addAudio = (pc) => pc.addTransceiver(source.audioTrack, { direction: 'sendonly' })
const addVideo = (pc) => pc.addTransceiver(source.videoTrack, { direction: 'sendonly' })

/** A producer pc built by `build`, its gathered offer (loopback candidates), edited by `edit`. */
async function offerOf (build, edit = (sdp) => sdp) {
  const pc = new wrtc.RTCPeerConnection({ iceServers: [] })
  build(pc)
  await pc.setLocalDescription(await pc.createOffer())
  await waitGatheringComplete(pc)
  return { pc, offer: { type: 'offer', sdp: edit(loopbackOnly(pc.localDescription.sdp)) } }
}

/** The SDP with the m= line of its first section replaced by `replace(mLine)`. */
function editFirstMLine (sdp, replace) {
  return sdp.replace(/^m=\w+ [^\r\n]*/m, (line) => replace(line))
}

/** Produces `offer` from `pc` and proves both kinds reach a consumer; returns what it decoded. */
async function produceAndConsume (name, { pc, offer }) {
  const room = uniqueId(name)
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  try {
    const res = await server.produce(room, 'p', { offer })
    assert.deepEqual(res.constraints, { audio: true, video: true }, `${name}: both kinds produced`)
    await pc.setRemoteDescription(res.answer)
    const consumer = new Client(server, room, 'c')
    await consumer.consumeAll(res.outbound, { from: 'p' })
    const video = await consumer.waitDecoding('p')
    const audio = await consumer.waitAudio('p')
    const s = await consumer.waitDecoding('p', { above: video.video.framesDecoded + 15 })
    await consumer.waitAudio('p', { above: audio.audio.packetsReceived + 25 })
    consumer.close()
    return s
  } finally {
    pc.close()
    await server.deleteRoom(room).catch(() => {})
  }
}

const orders = {
  'video before audio': (pc) => { addVideo(pc); addAudio(pc) },
  'a data channel m=application section first': (pc) => { pc.createDataChannel('chat'); addAudio(pc); addVideo(pc) },
  'an inactive audio section first': (pc) => { pc.addTransceiver('audio', { direction: 'inactive' }); addAudio(pc); addVideo(pc) },
  'a recvonly video section first': (pc) => { pc.addTransceiver('video', { direction: 'recvonly' }); addAudio(pc); addVideo(pc) }
}
for (const [name, build] of Object.entries(orders)) {
  test(`first produce with ${name}: both kinds reach the consumer`, { timeout: 30000 }, async () => {
    const s = await produceAndConsume(name.replace(/\W+/g, '-'), await offerOf(build))
    assert.ok(s.video.framesDecoded > 15 && s.audio.totalSamplesReceived > 0)
  })
}

// webrtc-rs negotiates each kind's codecs from the first section of that kind, sending or not:
// a first audio section offering only PCMU left the sending one with no codec ("no audio codec
// could be negotiated").
test('first produce whose first audio section is inactive and offers only PCMU: both kinds reach the consumer', { timeout: 30000 }, async () => {
  const shape = await offerOf(
    (pc) => { pc.addTransceiver('audio', { direction: 'inactive' }); addAudio(pc); addVideo(pc) },
    (sdp) => editFirstMLine(sdp, (m) => m.replace(/(UDP\/TLS\/RTP\/SAVPF) .*/, '$1 0')))
  assert.equal(mediaSections(shape.offer.sdp)[0].payloads.join(' '), '0')
  await produceAndConsume('pcmu-first', shape)
})

test('first produce whose first audio section is rejected (port 0, PCMU, out of BUNDLE): both kinds reach the consumer', { timeout: 30000 }, async () => {
  const shape = await offerOf(
    (pc) => { pc.addTransceiver('audio', { direction: 'inactive' }); addAudio(pc); addVideo(pc) },
    (sdp) => editFirstMLine(sdp, (m) => m.replace(/^(m=audio) \d+ (UDP\/TLS\/RTP\/SAVPF) .*/, '$1 0 $2 0'))
      .replace(/^a=group:BUNDLE 0 /m, 'a=group:BUNDLE '))
  assert.equal(mediaSections(shape.offer.sdp)[0].port, 0)
  await produceAndConsume('rejected-first', shape)
})

test('a port-0 section without a=bundle-only is rejected: it does not count as sent', { timeout: 30000 }, async () => {
  const { pc, offer } = await offerOf((pc) => { addAudio(pc); addVideo(pc) },
    (sdp) => sdp.replace(/^m=video \d+ /m, 'm=video 0 ').replace(/^a=group:BUNDLE 0 1/m, 'a=group:BUNDLE 0'))
  const room = uniqueId('port0')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  try {
    const res = await server.produce(room, 'p', { offer })
    assert.deepEqual(res.constraints, { audio: true, video: false })
    const answered = mediaSections(res.answer.sdp)
    assert.equal(answered[1].port, 0, 'the answer rejects the port-0 section')
    assert.deepEqual(mediaSections(res.outbound[0].offer.sdp).map((s) => s.kind), ['audio'], 'the consumer is offered audio only')
    await pc.setRemoteDescription(res.answer)
    const consumer = new Client(server, room, 'c')
    await consumer.consumeAll(res.outbound, { from: 'p' })
    await consumer.waitAudio('p')
    consumer.close()
  } finally {
    pc.close()
    await server.deleteRoom(room)
  }
})

// The server names every section's track itself (a=msid): by section, so a renegotiation keeps
// the names and the tracks.
test('re-produce: audio off and on again while video goes on', { timeout: 45000 }, async () => {
  const room = uniqueId('reproduce')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  const producer = new Client(server, room, 'p', { source })
  const consumer = new Client(server, room, 'c')
  try {
    const res = await producer.produce()
    await consumer.consumeAll(res.outbound, { from: 'p' })
    const start = await consumer.waitAudio('p')
    const off = await producer.reproduce({ audio: false, video: true })
    assert.deepEqual(off.constraints, { audio: false, video: true })
    await consumer.consumeAll(off.outbound, { from: 'p' })
    const video = await consumer.waitDecoding('p', { above: start.video.framesDecoded + 15 })
    const on = await producer.reproduce({ audio: true, video: true })
    assert.deepEqual(on.constraints, { audio: true, video: true })
    await consumer.consumeAll(on.outbound, { from: 'p' })
    const audioNow = (await consumer.inboundStats('p')).audio.packetsReceived
    await consumer.waitAudio('p', { above: audioNow + 25 })
    await consumer.waitDecoding('p', { above: video.video.framesDecoded + 15 })
  } finally {
    producer.close()
    consumer.close()
    await server.deleteRoom(room)
  }
})

/** Produces a refused offer and checks that nothing changed on the server. */
async function expectRefused (name, offer, pattern) {
  const room = uniqueId(name)
  await server.createRoom(room, { userId: 'p' })
  const before = await statsOf(server)
  const err = await expectCode(server.produce(room, 'p', { offer }), 'INVALID_SDP')
  assert.match(err.message, pattern)
  assert.deepEqual(await statsOf(server), before, `${name}: the server holds what it held before`)
  await server.deleteRoom(room)
  return err
}

test('an offer without a=fingerprint is refused with INVALID_SDP and changes nothing', { timeout: 30000 }, async () => {
  const { pc, offer } = await offerOf((pc) => { addAudio(pc); addVideo(pc) },
    (sdp) => sdp.split('\r\n').filter((l) => !l.startsWith('a=fingerprint:')).join('\r\n'))
  pc.close()
  assert.ok(!offer.sdp.includes('a=fingerprint'))
  const err = await expectRefused('nofp', offer, /fingerprint/)
  console.log(`fingerprint-less offer: ${err.code}: ${err.message}`)
})

test('a re-produce without a=fingerprint is refused too, and the call goes on', { timeout: 30000 }, async () => {
  const room = uniqueId('nofp-again')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  const producer = new Client(server, room, 'p', { source })
  const consumer = new Client(server, room, 'c')
  const res = await producer.produce()
  await consumer.consumeAll(res.outbound, { from: 'p' })
  const decoding = await consumer.waitDecoding('p')
  const pc = producer.upstream
  await pc.setLocalDescription(await pc.createOffer())
  const sdp = loopbackOnly(pc.localDescription.sdp).split('\r\n').filter((l) => !l.startsWith('a=fingerprint:')).join('\r\n')
  const before = await statsOf(server)
  await expectCode(server.produce(room, 'p', { offer: { type: 'offer', sdp } }), 'INVALID_SDP')
  assert.deepEqual(await statsOf(server), before)
  await pc.setLocalDescription({ type: 'rollback' })
  await consumer.waitDecoding('p', { above: decoding.video.framesDecoded + 15 })
  producer.close()
  consumer.close()
  await server.deleteRoom(room)
})

test('audio and video sections that share one SSRC are refused with INVALID_SDP and change nothing', { timeout: 30000 }, async () => {
  const { pc, offer } = await offerOf((pc) => { addAudio(pc); addVideo(pc) }, (sdp) => {
    const [audio, video] = mediaSections(sdp)
    const audioSsrc = /^a=ssrc:(\d+) /m.exec(audio.lines.join('\n'))[1]
    const videoSsrc = /^a=ssrc:(\d+) /m.exec(video.lines.join('\n'))[1]
    return sdp.split(videoSsrc).join(audioSsrc)
  })
  pc.close()
  const err = await expectRefused('shared-ssrc', offer, /SSRC \d+ is declared by both the audio section \(mid 0\) and the video section \(mid 1\)/)
  console.log(`shared SSRC: ${err.code}: ${err.message}`)
})

// Legacy simulcast (older libwebrtc, by SDP munging): a=ssrc-group:SIM with three SSRCs. SDP
// cannot decline those layers, so the server declares only the first one to webrtc-rs and
// forwards that one: the consumer decodes the first layer's resolution, steadily.
test('SSRC-group SIM simulcast: the consumer decodes the first layer alone, at one resolution', { timeout: 45000 }, async () => {
  const simSource = createSource({ width: 640, height: 480 })
  const pc = new wrtc.RTCPeerConnection({ iceServers: [] })
  pc.addTransceiver(simSource.audioTrack, { direction: 'sendonly' })
  pc.addTransceiver(simSource.videoTrack, { direction: 'sendonly' })
  const lines = (await pc.createOffer()).sdp.split('\r\n')
  const video = lines.findIndex((l) => l.startsWith('m=video'))
  const fid = lines.findIndex((l, i) => i > video && l.startsWith('a=ssrc-group:FID '))
  const first = lines[fid].split(' ')[1]
  const cname = lines.find((l, i) => i > video && l.startsWith(`a=ssrc:${first} cname:`)).split('cname:')[1]
  const layers = [[3000001, 3000002], [3000003, 3000004]]
  const added = [`a=ssrc-group:SIM ${first} ${layers[0][0]} ${layers[1][0]}`]
  for (const [primary, rtx] of layers) {
    added.push(`a=ssrc-group:FID ${primary} ${rtx}`, `a=ssrc:${primary} cname:${cname}`, `a=ssrc:${rtx} cname:${cname}`)
  }
  lines.splice(fid + 1, 0, ...added)
  await pc.setLocalDescription({ type: 'offer', sdp: lines.join('\r\n') })
  await waitGatheringComplete(pc)
  const offer = { type: 'offer', sdp: loopbackOnly(pc.localDescription.sdp) }
  assert.match(offer.sdp, /^a=ssrc-group:SIM \d+ 3000001 3000003$/m)

  const room = uniqueId('sim')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'c')
  const consumer = new Client(server, room, 'c')
  try {
    const res = await server.produce(room, 'p', { offer })
    await pc.setRemoteDescription(res.answer)
    await consumer.consumeAll(res.outbound, { from: 'p' })
    const start = await consumer.waitDecoding('p')
    const widths = new Set()
    let last
    for (const until = Date.now() + 4000; Date.now() < until;) {
      const entries = [...(await consumer.downstreams.get('p').getStats()).values()].filter((s) => s.type === 'inbound-rtp' && s.kind === 'video')
      assert.equal(entries.length, 1)
      last = entries[0]
      if (last.frameWidth) widths.add(last.frameWidth)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    const sent = [...(await pc.getStats()).values()].filter((s) => s.type === 'outbound-rtp' && s.kind === 'video' && s.bytesSent > 0)
    console.log(`SIM producer sends ${JSON.stringify(sent.map((s) => [s.ssrc, s.frameWidth]))}; consumer widths ${[...widths]}, ` +
      `framesDecoded ${start.video.framesDecoded} -> ${last.framesDecoded}, keyFramesDecoded ${last.keyFramesDecoded}`)
    assert.ok(sent.length >= 2, 'the producer really sends simulcast layers')
    const firstLayer = sent.find((s) => String(s.ssrc) === first)
    assert.deepEqual([...widths], [firstLayer.frameWidth], 'one resolution, the first layer\'s')
    assert.ok(last.framesDecoded > start.video.framesDecoded + 60)
    assert.ok(last.keyFramesDecoded <= 5, `keyFramesDecoded ${last.keyFramesDecoded}`)
  } finally {
    pc.close()
    consumer.close()
    simSource.close()
    await server.deleteRoom(room)
  }
})
