// Simulcast from libwebrtc (@roamhq/wrtc): it offers RIDs as browsers do (a=rid, a=simulcast),
// and sends the layers its source resolution allows. The same preference test as with
// Chromium (simulcast.test.mjs): one consumer decodes the top layer, one capped to layer 0
// the lowest, and raising the cap brings the top layer to it.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client, closeEverything, createServer, uniqueId, waitFor, wrtc } from './helpers.mjs'

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

test('libwebrtc simulcast: each consumer gets its own layer, and a raised cap the top one', { timeout: 90000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('simulcast-wrtc')
  await server.createRoom(room, { userId: 'p' })
  await server.addUser(room, 'top')
  await server.addUser(room, 'capped')
  const producer = new Client(server, room, 'p', { sourceOptions: { width: 1280, height: 720 } })
  const source = producer._ensureSource()
  const pc = new wrtc.RTCPeerConnection({ iceServers: [] })
  producer.upstream = pc
  producer.senders.audio = pc.addTransceiver(source.audioTrack, { direction: 'sendonly' })
  producer.senders.video = pc.addTransceiver(source.videoTrack, {
    direction: 'sendonly',
    sendEncodings: [{ rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f' }]
  })
  const res = await producer._negotiateUpstream({})
  const video = res.answer.sdp.split('\r\n').filter((l) => /^a=(rid|simulcast):/.test(l))
  assert.deepEqual(video, ['a=rid:q recv', 'a=rid:h recv', 'a=rid:f recv', 'a=simulcast:recv q;h;f'])

  assert.deepEqual(await server.setPreferredLayers(room, 'capped', 'p', { spatialLayer: 0 }), { spatialLayer: 0, temporalLayer: null })
  const top = new Client(server, room, 'top')
  const capped = new Client(server, room, 'capped')
  await top.consumeAll(res.outbound, { from: 'p' })
  await capped.consumeAll(res.outbound, { from: 'p' })
  const width = async (client) => (await client.inboundStats('p')).video?.frameWidth ?? 0
  const layersOf = async (userId) => {
    const { connections } = await server.getStats(room, userId)
    return connections.find((c) => c.direction === 'downstream').tracks.find((t) => t.kind === 'video').layers
  }
  const sent = await waitFor(async () => {
    const l = await layersOf('top')
    return l.available.length === 3 && l.current === 2 ? l : null
  }, { timeout: 30000, message: 'the producer sends three layers and top gets the highest' })
  const got = await waitFor(async () => {
    const w = { top: await width(top), capped: await width(capped) }
    return w.top === 1280 && w.capped === 320 ? w : null
  }, { timeout: 20000, message: 'top decodes 1280 px, capped 320 px' })
  assert.deepEqual(await server.setPreferredLayers(room, 'capped', 'p', {}), { spatialLayer: 2, temporalLayer: null })
  await waitFor(async () => (await width(capped)) === 1280, { timeout: 15000, message: 'capped decodes 1280 px once uncapped' })
  console.log(`libwebrtc simulcast: layers ${JSON.stringify(sent)}, decoded ${JSON.stringify(got)}, then capped at 1280 px`)
})
