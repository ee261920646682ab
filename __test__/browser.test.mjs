// End to end in headless Chromium: pages of the demo room (examples/video-room) with a fake
// camera and microphone, against the demo backend and the addon. Every check reads the
// receiving page's own getStats().

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startDemo } from '../examples/video-room/server.mjs'
import { launchBrowser, demoStats, until, steady } from './browser.mjs'

const T = { timeout: 120000 }
let demo
let browser
/** The server's constraintschange events, as the backend would get them. */
const constraintEvents = []

before(async () => {
  demo = await startDemo({ host: '127.0.0.1', port: 0, portRange: { min: 46000, max: 46999 }, log: () => {} })
  demo.media.on('constraintschange', (e) => constraintEvents.push(e))
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await demo?.close()
})

let roomSerial = 0
async function joinRoom (count, query = '') {
  const room = `e2e-${process.pid}-${++roomSerial}`
  const pages = []
  for (let i = 0; i < count; i++) pages.push(await browser.newPage(`${demo.url}/?room=${room}&name=p${i}${query}`))
  const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.__demo.userId)))
  return { room, pages, ids }
}

async function closePages (pages) {
  for (const page of pages) await page.close().catch(() => {})
}

/** What `page` receives from producer `id`. */
async function inbound (page, id) {
  return (await demoStats(page)).producers[id] ?? { video: null, audio: null }
}

async function waitVideo (page, id, { above = 0, timeout = 15000 } = {}) {
  return until(async () => {
    const v = (await inbound(page, id)).video
    return v && v.framesDecoded > above && v.frameWidth > 0 ? v : null
  }, { timeout, message: `video from ${id} decoded past ${above} frames` })
}

async function waitAudio (page, id, { above = 0, timeout = 15000 } = {}) {
  return until(async () => {
    const a = (await inbound(page, id)).audio
    return a && a.packetsReceived > above ? a : null
  }, { timeout, message: `audio from ${id} past ${above} packets` })
}

/**
 * Asserts that a counter of `page`'s inbound stats from `id` stops growing. Called once the server
 * has applied what should stop it (its constraintschange event): the counter is polled until it
 * has not moved for a second (`steady`), which fails if it keeps moving. The counter must still
 * be there, so that stats that lost their entry cannot pass for "stopped".
 */
async function assertStopped (page, id, read, what) {
  const { last } = await steady(async () => read(await inbound(page, id)), { message: `${what} to stop growing` })
  assert.ok(last > 0, `${what}: no counter to watch (${last})`)
}

test('three pages: each decodes the other two and receives their audio', T, async () => {
  const started = Date.now()
  const { pages, ids } = await joinRoom(3)
  try {
    for (const [i, page] of pages.entries()) {
      for (const [j, id] of ids.entries()) {
        if (i === j) continue
        const v = await waitVideo(page, id)
        const a = await waitAudio(page, id)
        // Growing, not just non-zero.
        await waitVideo(page, id, { above: v.framesDecoded + 10 })
        await waitAudio(page, id, { above: a.packetsReceived + 10 })
      }
    }
    console.log(`three pages: every stream decoding ${Date.now() - started} ms after the first page opened`)
    // Chromium offers the AEAD-AES-GCM SRTP profiles (RFC 7714) after AES-CM; the server picks
    // by its own order (patches/rtc-dtls), so every leg uses AES-128-GCM.
    for (const page of pages) {
      const ciphers = await page.evaluate(() => window.__demo.srtpCiphers())
      for (const cipher of [ciphers.upstream, ...Object.values(ciphers.remotes)]) {
        assert.match(cipher ?? 'none', /^(SRTP_)?AEAD_AES_128_GCM$/, `SRTP ciphers of a page: ${JSON.stringify(ciphers)}`)
      }
    }
    const stats = await demo.media.stats()
    assert.equal(stats.upstreamConnections, 3)
    assert.equal(stats.downstreamConnections, 6)
  } finally {
    await closePages(pages)
  }
})

test('a new page decodes the others quickly, and the producer\'s bandwidth estimate ramps up', T, async () => {
  const { pages, ids } = await joinRoom(1)
  try {
    const joined = Date.now()
    const late = await browser.newPage(`${demo.url}/?room=${(await pages[0].evaluate(() => new URLSearchParams(location.search).get('room')))}&name=late`)
    await waitVideo(late, ids[0])
    console.log(`join to first decoded remote frame: ${Date.now() - joined} ms (page load included)`)
    pages.push(late)
    // availableOutgoingBitrate of the producer's selected candidate pair, fed by the server's
    // congestion feedback: it must reach 1 Mbit/s within 15 s.
    const estimate = await until(async () => {
      const up = (await demoStats(pages[0])).upstream
      return up?.availableOutgoingBitrate >= 1_000_000 ? up : null
    }, { timeout: 15000, message: 'availableOutgoingBitrate >= 1 Mbit/s' })
    const before = estimate.video.bytesSent
    await new Promise((resolve) => setTimeout(resolve, 5000))
    const after = (await demoStats(pages[0])).upstream
    const kbps = ((after.video.bytesSent - before) * 8) / 5000
    console.log(`producer: estimate ${(after.availableOutgoingBitrate / 1e6).toFixed(2)} Mbit/s, sending ${kbps.toFixed(0)} kbit/s of video`)
  } finally {
    await closePages(pages)
  }
})

for (const kind of ['video', 'audio']) {
  test(`mute ${kind} on one page stops it for the others; unmute resumes it within 2 s`, T, async () => {
    const { room, pages, ids } = await joinRoom(3)
    const read = kind === 'video' ? (s) => s.video?.framesDecoded : (s) => s.audio?.packetsReceived
    const wait = kind === 'video' ? waitVideo : waitAudio
    try {
      for (const page of pages.slice(1)) await wait(page, ids[0])
      await pages[0].evaluate((k) => k === 'video' ? window.__demo.setVideo(false) : window.__demo.setAudio(false), kind)
      await until(() => constraintEvents.some((e) => e.roomId === room && e.userId === ids[0] && e.constraints[kind] === false),
        { message: `the server reports ${kind} muted` })
      for (const page of pages.slice(1)) await assertStopped(page, ids[0], read, `${kind} from the muted page`)
      // The other kind keeps flowing.
      const other = kind === 'video' ? waitAudio : waitVideo
      const otherRead = kind === 'video' ? (s) => s.audio.packetsReceived : (s) => s.video.framesDecoded
      await other(pages[1], ids[0], { above: otherRead(await inbound(pages[1], ids[0])) + 5 })

      const before = await Promise.all(pages.slice(1).map(async (p) => read(await inbound(p, ids[0]))))
      const unmuted = Date.now()
      await pages[0].evaluate((k) => k === 'video' ? window.__demo.setVideo(true) : window.__demo.setAudio(true), kind)
      for (const [i, page] of pages.slice(1).entries()) await wait(page, ids[0], { above: before[i], timeout: 2000 })
      console.log(`${kind} resumed on both other pages ${Date.now() - unmuted} ms after unmute`)
    } finally {
      await closePages(pages)
    }
  })
}

test('stop and restart broadcasting; leave and rejoin by reload: the others follow', T, async () => {
  const { pages, ids } = await joinRoom(2)
  const [a, b] = pages
  try {
    await waitVideo(b, ids[0])
    await a.evaluate(() => window.__demo.stopBroadcast())
    await until(async () => (await demo.media.stats()).upstreamConnections === 1, { message: 'the server closed the upstream' })
    await until(async () => (await inbound(b, ids[0])).video === null, { message: 'b closed its connection for a' })
    await a.evaluate(() => window.__demo.startBroadcast())
    await waitVideo(b, ids[0])

    // Reload: the backend removes the old user when its socket closes; the page joins anew.
    await a.reload()
    await a.waitForFunction(() => window.__demo?.joined === true, null, { timeout: 20000 })
    const newId = await a.evaluate(() => window.__demo.userId)
    assert.notEqual(newId, ids[0])
    await until(async () => !(await b.evaluate(() => window.__demo.remoteIds())).includes(ids[0]), { message: 'b dropped the old tile' })
    await waitVideo(b, newId)
    await waitVideo(a, ids[1])
    const stats = await demo.media.stats()
    assert.equal(stats.users >= 2, true)
  } finally {
    await closePages(pages)
  }
})

for (const codec of ['VP8', 'VP9', 'H264', 'AV1']) {
  test(`a producer forced to ${codec}: the consumer decodes ${codec}`, T, async () => {
    const { room, pages, ids } = await joinRoom(1, `&codec=${codec}`)
    const consumer = await browser.newPage(`${demo.url}/?room=${room}&name=viewer`)
    pages.push(consumer)
    try {
      const v = await waitVideo(consumer, ids[0], { timeout: 20000 })
      assert.equal(v.codec, `video/${codec}`)
      await waitVideo(consumer, ids[0], { above: v.framesDecoded + 10 })
    } finally {
      await closePages(pages)
    }
  })
}
