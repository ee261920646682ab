// A Chromium producer asking for simulcast (three sendEncodings, rids q/h/f, scaled down by
// 4/2/1). The server forwards one stream per kind, so it answers with one layer (the first of
// a=simulcast, RFC 8853's most preferred) and the browser sends that one alone: the consumer
// decodes one steady resolution, with no keyframe every time another layer's packets arrive.
// Before, the three layers were mixed into one stream (the resolution flickered and frames froze).

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as createHttpServer } from 'node:http'
import { launchBrowser } from './browser.mjs'
import { Client, closeEverything, createServer, loopbackOnly, mediaSections, uniqueId, waitFor, wrtc } from './helpers.mjs'

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

/** Every video inbound-rtp entry of the consumer's connection, as the consumer's libwebrtc reports it. */
async function inboundVideo (client, producerId) {
  const report = await client.downstreams.get(producerId).getStats()
  return [...report.values()].filter((s) => s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video')
}

test('Chromium with three simulcast encodings: the answer asks for one, and the consumer decodes one steady resolution', { timeout: 90000 }, async () => {
  const server = createServer(null)
  const room = uniqueId('simulcast')
  await server.createRoom(room, { userId: 'chromium' })
  await server.addUser(room, 'viewer')
  const page = await browser.context.newPage()
  page.on('pageerror', (err) => console.error(`[page] ${err.message}`))
  await page.goto(url)
  const offerSdp = await page.evaluate(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 1280, height: 720 } })
    const pc = new RTCPeerConnection()
    window.pc = pc
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' })
    pc.addTransceiver(stream.getVideoTracks()[0], {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4 },
        { rid: 'h', scaleResolutionDownBy: 2 },
        { rid: 'f', scaleResolutionDownBy: 1 }
      ]
    })
    await pc.setLocalDescription()
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve()
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve())
    })
    return pc.localDescription.sdp
  })
  const video = mediaSections(offerSdp).find((s) => s.kind === 'video')
  assert.ok(video.lines.includes('a=simulcast:send q;h;f'), 'Chromium offers simulcast q;h;f')

  const res = await server.produce(room, 'chromium', { offer: { type: 'offer', sdp: loopbackOnly(offerSdp) } })
  assert.deepEqual(res.constraints, { audio: true, video: true })
  const answered = mediaSections(res.answer.sdp).find((s) => s.kind === 'video')
  assert.deepEqual(answered.lines.filter((l) => /^a=(rid|simulcast):/.test(l)), ['a=rid:q recv', 'a=simulcast:recv q'],
    'the answer accepts one layer')
  await page.evaluate((answer) => window.pc.setRemoteDescription(answer), res.answer)

  // The browser now sends one video encoding.
  const sending = await waitFor(async () => {
    const layers = await page.evaluate(async () => {
      const report = await window.pc.getStats()
      return [...report.values()].filter((s) => s.type === 'outbound-rtp' && s.kind === 'video').map((s) => ({ rid: s.rid, bytesSent: s.bytesSent, frameWidth: s.frameWidth }))
    })
    return layers.some((l) => l.bytesSent > 0) ? layers : null
  }, { timeout: 15000, message: 'Chromium sends video' })
  const viewer = new Client(server, room, 'viewer')
  await viewer.consumeAll(res.outbound, { from: 'chromium' })
  const first = await viewer.waitDecoding('chromium', { timeout: 20000 })
  await viewer.waitAudio('chromium')

  // ~5 s of decoding, read every 250 ms: one width throughout, frames keep coming.
  const widths = new Set()
  const samples = []
  const until = Date.now() + 5000
  while (Date.now() < until) {
    const [entry, ...others] = await inboundVideo(viewer, 'chromium')
    assert.equal(others.length, 0, 'one video stream at the consumer')
    if (entry.frameWidth) widths.add(entry.frameWidth)
    samples.push({ framesDecoded: entry.framesDecoded, keyFramesDecoded: entry.keyFramesDecoded })
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  const last = samples.at(-1)
  const layers = await page.evaluate(async () => {
    const report = await window.pc.getStats()
    return [...report.values()].filter((s) => s.type === 'outbound-rtp' && s.kind === 'video' && s.bytesSent > 0).map((s) => ({ rid: s.rid, frameWidth: s.frameWidth }))
  })
  console.log(`simulcast producer: Chromium sends ${JSON.stringify(layers)} (first read ${JSON.stringify(sending)}); ` +
    `consumer widths over 5 s: ${[...widths].join(', ')}; framesDecoded ${first.video.framesDecoded} -> ${last.framesDecoded}, keyFramesDecoded ${last.keyFramesDecoded}`)
  assert.equal(layers.length, 1, `Chromium sends one video encoding: ${JSON.stringify(layers)}`)
  assert.equal(widths.size, 1, `one steady resolution at the consumer, saw ${[...widths].join(', ')}`)
  assert.ok(last.framesDecoded - samples[0].framesDecoded > 60, `frames keep being decoded: ${samples[0].framesDecoded} -> ${last.framesDecoded}`)
  for (let i = 4; i < samples.length; i += 4) {
    assert.ok(samples[i].framesDecoded > samples[i - 4].framesDecoded, `decoding went on in every second: ${JSON.stringify(samples)}`)
  }
  assert.ok(last.keyFramesDecoded <= 3, `no keyframe pattern: ${last.keyFramesDecoded} keyframes decoded`)
  await page.close()
})
