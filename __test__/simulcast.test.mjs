// Simulcast, chosen per consumer. A Chromium producer sends three layers (sendEncodings q/h/f,
// scaled down by 4/2/1); the server accepts them all and gives each consumer (libwebrtc) one:
// the best there is by default, the lowest after setPreferredLayers({spatialLayer: 0}), and
// the top one again, at its next keyframe, when the preference is raised. Proof is each
// consumer's own getStats(): the frameWidth it decodes, and that it keeps decoding.
// Before, the forwarder mixed the three layers into one stream (the resolution flickered and
// frames froze), then took one layer only.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as createHttpServer } from 'node:http'
import { launchBrowser } from './browser.mjs'
import { sentLayers, simulcastOffer } from './simulcast-producer.mjs'
import { Client, closeEverything, createServer, expectCode, loopbackOnly, mediaSections, startCall, uniqueId, waitFor } from './helpers.mjs'

let http
let browser
let url

before(async () => {
  http = createHttpServer((_req, res) => res.end('<!doctype html><title>simulcast producer</title>'))
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
  url = `http://127.0.0.1:${http.address().port}/`
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  http?.close()
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** The consumer's one video inbound-rtp entry, as its libwebrtc reports it. */
async function inboundVideo (client, producerId) {
  const report = await client.downstreams.get(producerId).getStats()
  const entries = [...report.values()].filter((s) => s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video')
  assert.equal(entries.length, 1, 'one video stream at the consumer')
  return entries[0]
}

/** A Chromium page consuming one producer: it answers the server's offer, and reads its own stats. */
class ChromiumConsumer {
  static async open (server, room, userId, outboundItem) {
    const page = await browser.context.newPage()
    page.on('pageerror', (err) => console.error(`[page ${userId}] ${err.message}`))
    await page.goto(url)
    const answer = await page.evaluate(async (offer) => {
      const pc = new RTCPeerConnection()
      window.pc = pc
      await pc.setRemoteDescription(offer)
      await pc.setLocalDescription(await pc.createAnswer())
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') resolve()
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve())
      })
      return { type: 'answer', sdp: pc.localDescription.sdp }
    }, outboundItem.offer)
    await server.consume(room, userId, { id: 'chromium', answer: { type: 'answer', sdp: loopbackOnly(answer.sdp) } })
    return Object.assign(new ChromiumConsumer(), { page })
  }

  async inboundVideo () {
    const entries = await this.page.evaluate(async () => {
      const report = await window.pc.getStats()
      return [...report.values()].filter((s) => s.type === 'inbound-rtp' && s.kind === 'video')
        .map(({ frameWidth, framesDecoded, freezeCount, keyFramesDecoded, totalFreezesDuration, framesPerSecond }) => ({ frameWidth, framesDecoded, freezeCount, keyFramesDecoded, totalFreezesDuration, framesPerSecond }))
    })
    assert.equal(entries.length, 1, 'one video stream at the consumer')
    return entries[0]
  }
}

test('Chromium simulcast: each consumer decodes its own layer, and a raised preference brings the top one back at a keyframe', { timeout: 120000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('simulcast')
  const layerEvents = []
  server.on('layerschange', (e) => { if (e.roomId === room) layerEvents.push({ ...e, at: Date.now() }) })
  await server.createRoom(room, { userId: 'chromium' })
  await server.addUser(room, 'high')
  await server.addUser(room, 'low')
  const page = await browser.context.newPage()
  page.on('pageerror', (err) => console.error(`[page] ${err.message}`))
  await page.goto(url)
  const offerSdp = await simulcastOffer(page)
  assert.ok(mediaSections(offerSdp).find((s) => s.kind === 'video').lines.includes('a=simulcast:send q;h;f'))

  const res = await server.produce(room, 'chromium', { offer: { type: 'offer', sdp: loopbackOnly(offerSdp) } })
  const answered = mediaSections(res.answer.sdp).find((s) => s.kind === 'video')
  assert.deepEqual(answered.lines.filter((l) => /^a=(rid|simulcast):/.test(l)),
    ['a=rid:q recv', 'a=rid:h recv', 'a=rid:f recv', 'a=simulcast:recv q;h;f'], 'the answer accepts the three layers')
  await page.evaluate((answer) => window.pc.setRemoteDescription(answer), res.answer)
  const layers = await waitFor(async () => {
    const sent = await sentLayers(page)
    return ['q', 'h', 'f'].every((rid) => sent[rid]?.bytesSent > 0 && sent[rid]?.frameWidth > 0) ? sent : null
  }, { timeout: 30000, message: 'Chromium sends all three layers' })
  assert.ok(layers.q.frameWidth < layers.h.frameWidth && layers.h.frameWidth < layers.f.frameWidth, JSON.stringify(layers))

  // Before its answer: the preference is kept for when the consumer subscribes.
  assert.deepEqual(await server.setPreferredLayers(room, 'low', 'chromium', { spatialLayer: 0 }), { spatialLayer: 0, temporalLayer: null })
  // One consumer of each stack: libwebrtc in Node, and Chromium (which counts its freezes).
  const high = new Client(server, room, 'high')
  const byId = new Map(res.outbound.map((o) => [o.id, o]))
  await high.consumeAll([byId.get('high')], { from: 'chromium' })
  const low = await ChromiumConsumer.open(server, room, 'low', byId.get('low'))

  const widthsAre = async (want) => {
    const sent = await sentLayers(page)
    const got = { high: (await inboundVideo(high, 'chromium')).frameWidth, low: (await low.inboundVideo()).frameWidth }
    return got.high === sent[want.high].frameWidth && got.low === sent[want.low].frameWidth ? got : null
  }
  const first = await waitFor(() => widthsAre({ high: 'f', low: 'q' }), { timeout: 30000, message: 'high decodes the top layer, low the lowest' })
  const before = await waitFor(async () => {
    const entry = await low.inboundVideo()
    return entry.framesDecoded >= 30 ? entry : null
  }, { timeout: 15000, message: 'low decodes steadily' })
  assert.equal((await low.inboundVideo()).frameWidth, first.low, 'low stays on the lowest layer')
  const layersOf = async (userId) => {
    const { connections } = await server.getStats(room, userId)
    const down = connections.find((c) => c.direction === 'downstream' && c.userId === userId)
    return down.tracks.find((t) => t.kind === 'video').layers
  }
  assert.deepEqual(await layersOf('low'), { current: 0, target: 0, preferred: 0, available: [0, 1, 2], temporal: null })
  assert.deepEqual(await layersOf('high'), { current: 2, target: 2, preferred: null, available: [0, 1, 2], temporal: null })

  const raised = Date.now()
  assert.deepEqual(await server.setPreferredLayers(room, 'low', 'chromium', { spatialLayer: 2 }), { spatialLayer: 2, temporalLayer: null })
  await waitFor(() => layerEvents.find((e) => e.userId === 'low' && e.spatialLayer === 2 && e.at >= raised),
    { timeout: 2000, message: 'low switched to the top layer within 2 s (its keyframe was asked for at once)' })
  const switched = layerEvents.find((e) => e.userId === 'low' && e.spatialLayer === 2).at - raised
  await waitFor(() => widthsAre({ high: 'f', low: 'f' }), { timeout: 10000, message: 'low decodes the top layer' })
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const after = await low.inboundVideo()
  console.log(`simulcast: layers ${JSON.stringify(layers)}; decoded ${JSON.stringify(first)}; low switched up ${switched} ms after the call; ` +
    `low framesDecoded ${before.framesDecoded} -> ${after.framesDecoded}, freezeCount ${before.freezeCount} -> ${after.freezeCount} (${after.totalFreezesDuration} s, ${before.framesPerSecond} fps); events ${JSON.stringify(layerEvents.map((e) => [e.userId, e.spatialLayer]))}`)
  assert.ok(after.framesDecoded - before.framesDecoded > 30, 'low kept decoding across the switch')
  assert.equal(typeof before.freezeCount, 'number', 'Chromium counts freezes')
  assert.equal(after.freezeCount, before.freezeCount, 'no freeze at the switch')

  // Temporal layers: Chromium's VP8 simulcast layers have three (L1T3). Capped to the base one,
  // low decodes about a quarter of the frames, with no gap its decoder notices; uncapped, all.
  const rate = async (ms) => {
    const a = await low.inboundVideo()
    await new Promise((resolve) => setTimeout(resolve, ms))
    const b = await low.inboundVideo()
    return { fps: (b.framesDecoded - a.framesDecoded) * 1000 / ms, width: b.frameWidth, freezes: b.freezeCount - a.freezeCount }
  }
  const full = await rate(3000)
  assert.deepEqual(await server.setPreferredLayers(room, 'low', 'chromium', { spatialLayer: 2, temporalLayer: 0 }), { spatialLayer: 2, temporalLayer: 0 })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const base = await rate(3000)
  assert.equal((await layersOf('low')).temporal, 0)
  assert.deepEqual(await server.setPreferredLayers(room, 'low', 'chromium', { spatialLayer: 2 }), { spatialLayer: 2, temporalLayer: null })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const again = await rate(3000)
  console.log(`simulcast temporal: ${full.fps} fps with every temporal layer, ${base.fps} with the base one, ${again.fps} uncapped again`)
  assert.ok(base.fps > 0 && base.fps < 0.6 * full.fps, `the base temporal layer alone: ${base.fps} fps against ${full.fps}`)
  assert.equal(base.width, full.width, 'the same spatial layer')
  assert.ok(again.fps > 0.8 * full.fps, `every temporal layer again: ${again.fps} fps against ${full.fps}`)

  // The events name the consumer, the producer and the layer, with every field of the shape.
  const event = layerEvents.find((e) => e.userId === 'high')
  assert.deepEqual(Object.keys(event).filter((k) => k !== 'at').sort(), ['producerId', 'roomId', 'spatialLayer', 'temporalLayer', 'type', 'userId'])
  assert.equal(event.producerId, 'chromium')
  assert.equal(event.type, 'layerschange')
  assert.equal(layerEvents.filter((e) => e.userId === 'high').at(-1).spatialLayer, 2)
  await low.page.close()
  await page.close()
})

test('H264 simulcast from Chromium: the capped consumer decodes the lowest layer, the other the top one, and uncapped the top one', { timeout: 90000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('simulcast-h264')
  await server.createRoom(room, { userId: 'chromium' })
  await server.addUser(room, 'top')
  await server.addUser(room, 'capped')
  const page = await browser.context.newPage()
  await page.goto(url)
  const res = await server.produce(room, 'chromium', { offer: { type: 'offer', sdp: loopbackOnly(await simulcastOffer(page, { codec: 'H264' })) } })
  await page.evaluate((answer) => window.pc.setRemoteDescription(answer), res.answer)
  const layers = await waitFor(async () => {
    const sent = await sentLayers(page)
    return ['q', 'h', 'f'].every((rid) => sent[rid]?.bytesSent > 0 && sent[rid]?.frameWidth > 0) ? sent : null
  }, { timeout: 30000, message: 'Chromium sends all three H264 layers' })
  await server.setPreferredLayers(room, 'capped', 'chromium', { spatialLayer: 0 })
  // Chromium consumers: the libwebrtc in @roamhq/wrtc has no H264 decoder (it rejects the video).
  const byId = new Map(res.outbound.map((o) => [o.id, o]))
  const top = await ChromiumConsumer.open(server, room, 'top', byId.get('top'))
  const capped = await ChromiumConsumer.open(server, room, 'capped', byId.get('capped'))
  const codec = (await server.getStats(room, 'top')).connections.find((c) => c.direction === 'downstream').tracks.find((t) => t.kind === 'video').codec
  assert.match(codec, /h264/i, 'the consumers get H264')
  const widths = async () => ({ top: (await top.inboundVideo()).frameWidth, capped: (await capped.inboundVideo()).frameWidth })
  const got = await waitFor(async () => {
    const sent = await sentLayers(page)
    const w = await widths()
    return w.top === sent.f.frameWidth && w.capped === sent.q.frameWidth ? w : null
  }, { timeout: 30000, message: 'top decodes the top layer, capped the lowest' })
  await server.setPreferredLayers(room, 'capped', 'chromium', {})
  await waitFor(async () => (await widths()).capped === (await sentLayers(page)).f.frameWidth, { timeout: 15000, message: 'capped decodes the top layer once uncapped' })
  console.log(`H264 simulcast: layers ${JSON.stringify(layers)}, decoded ${JSON.stringify(got)}, then the top layer uncapped`)
  await Promise.all([top.page.close(), capped.page.close(), page.close()])
})

test('setPreferredLayers: a producer without simulcast has layer 0, and bad input is refused with the spec\'s codes', { timeout: 60000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('layers')
  const producer = new Client(server, room, 'p')
  const consumer = new Client(server, room, 'c')
  await startCall(server, room, producer, consumer)
  assert.deepEqual(await server.setPreferredLayers(room, 'c', 'p', { spatialLayer: 1 }), { spatialLayer: 0, temporalLayer: null })
  assert.deepEqual(await server.setPreferredLayers(room, 'c', 'p', {}), { spatialLayer: 0, temporalLayer: null })
  for (const bad of [{ spatialLayer: -1 }, { spatialLayer: 1.5 }, { spatialLayer: '1' }, { spatialLayer: 256 }, { temporalLayer: true }, { spatial: 1 }]) {
    await expectCode(server.setPreferredLayers(room, 'c', 'p', bad), 'INVALID_ARGUMENT', { what: JSON.stringify(bad) })
  }
  await expectCode(server.setPreferredLayers(room, 'c', 'p', 'low'), 'INVALID_ARGUMENT')
  await expectCode(server.setPreferredLayers(room, 'p', 'p', { spatialLayer: 0 }), 'INVALID_ARGUMENT')
  await expectCode(server.setPreferredLayers(room, 'c', 'nobody', { spatialLayer: 0 }), 'USER_NOT_FOUND')
  await expectCode(server.setPreferredLayers(room, 'nobody', 'p', { spatialLayer: 0 }), 'USER_NOT_FOUND')
  await expectCode(server.setPreferredLayers(uniqueId('none'), 'c', 'p', { spatialLayer: 0 }), 'ROOM_NOT_FOUND')
  await expectCode(server.setPreferredLayers(room, 'p', 'c', { spatialLayer: 0 }), 'NOT_PRODUCING')
  // Nothing changed: the consumer still decodes.
  await consumer.waitDecoding('p')
})
