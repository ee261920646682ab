// The demo room with simulcast: a page broadcasting two layers (?simulcast=1), and a page that
// switches that producer's tile to low and back to high. Proof is the receiving page's own
// stats: the frameWidth it decodes, and the layer badge the server's layerschange events set.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startDemo } from '../examples/video-room/server.mjs'
import { launchBrowser, demoStats, until } from './browser.mjs'

let demo
let browser
after(async () => {
  await browser?.close()
  await demo?.close()
})

test('demo room: a simulcast producer, and a viewer\'s low / high switch on its tile', { timeout: 120000 }, async () => {
  demo = await startDemo({ host: '127.0.0.1', port: 0, log: () => {} })
  browser = await launchBrowser()
  const producer = await browser.newPage(`${demo.url}/?room=layers&name=producer&simulcast=1`)
  const viewer = await browser.newPage(`${demo.url}/?room=layers&name=viewer`)
  const producerId = await producer.evaluate(() => window.__demo.userId)
  const width = async () => (await demoStats(viewer)).producers[producerId]?.video?.frameWidth ?? 0
  const badge = () => viewer.evaluate((id) => document.querySelector(`.tile[data-user="${id}"] .layer-badge`)?.textContent ?? '', producerId)
  const high = await until(async () => { const w = await width(); return w === 640 && w }, { timeout: 30000, message: 'the viewer decodes the 640 px layer' })
  await until(async () => (await badge()) === 'layer 1', { message: 'the badge says layer 1' })

  await viewer.evaluate((id) => window.__demo.setLow(id, true), producerId)
  const low = await until(async () => { const w = await width(); return w === 320 && w }, { timeout: 15000, message: 'low: the viewer decodes the 320 px layer' })
  await until(async () => (await badge()) === 'layer 0', { message: 'the badge says layer 0' })
  assert.equal(await viewer.evaluate((id) => document.querySelector(`.tile[data-user="${id}"] .quality`).textContent, producerId), 'high')

  await viewer.evaluate((id) => window.__demo.setLow(id, false), producerId)
  const viewerId = await viewer.evaluate(() => window.__demo.userId)
  const layers = async () => {
    const { connections } = await demo.media.getStats('layers', viewerId)
    return connections.find((c) => c.direction === 'downstream')?.tracks.find((t) => t.kind === 'video')?.layers
  }
  await until(async () => (await width()) === 640, { timeout: 15000, message: 'high again: 640 px' }).catch(async (err) => {
    throw new Error(`${err.message}; the server: ${JSON.stringify(await layers())}`)
  })
  await until(async () => (await badge()) === 'layer 1', { message: 'the badge says layer 1 again' })
  // Decoding goes on at the top layer.
  const frames = async () => (await demoStats(viewer)).producers[producerId].video.framesDecoded
  const before = await frames()
  await until(async () => (await frames()) > before + 10, { message: 'frames keep being decoded' })
  const stats = await demoStats(viewer)
  console.log(`demo simulcast: high ${high} px, low ${low} px; viewer ${JSON.stringify(stats.producers[producerId].video)}`)
})
