// Active speaker end to end in headless Chromium: Chromium's fake microphone plays a loud tone
// (a WAV file this test writes; the default fake device only beeps briefly), Chromium sends its
// audio level in every packet (RFC 6464, as the server negotiates), the server names a speaker
// (`activespeaker`), and the demo room outlines that user's tile on the other page.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDemo } from '../examples/video-room/server.mjs'
import { launchBrowser, until } from './browser.mjs'

const dir = mkdtempSync(join(tmpdir(), 'speaker-'))
let demo
let browser

/** 10 s of a 440 Hz tone at -6 dBFS, 48 kHz mono 16-bit PCM (Chromium loops it). */
function toneWav (path) {
  const rate = 48000
  const samples = rate * 10
  const data = Buffer.alloc(samples * 2)
  for (let i = 0; i < samples; i++) data.writeInt16LE(Math.round(Math.sin(2 * Math.PI * 440 * i / rate) * 16000), i * 2)
  const header = Buffer.alloc(44)
  header.write('RIFF', 0); header.writeUInt32LE(36 + data.length, 4); header.write('WAVE', 8)
  header.write('fmt ', 12); header.writeUInt32LE(16, 16); header.writeUInt16LE(1, 20); header.writeUInt16LE(1, 22)
  header.writeUInt32LE(rate, 24); header.writeUInt32LE(rate * 2, 28); header.writeUInt16LE(2, 32); header.writeUInt16LE(16, 34)
  header.write('data', 36); header.writeUInt32LE(data.length, 40)
  writeFileSync(path, Buffer.concat([header, data]))
}

before(async () => {
  const wav = join(dir, 'tone.wav')
  toneWav(wav)
  demo = await startDemo({ host: '127.0.0.1', port: 0, log: () => {} })
  browser = await launchBrowser({ args: [`--use-file-for-fake-audio-capture=${wav}`] })
})

after(async () => {
  await browser?.close()
  await demo?.close()
  rmSync(dir, { recursive: true, force: true })
})

test('a Chromium page speaking is named by activespeaker, and the demo outlines its tile on the other page', { timeout: 90000 }, async () => {
  const events = []
  demo.media.on('activespeaker', (e) => events.push(e))
  const room = `speaker-${process.pid}`
  const pages = []
  for (let i = 0; i < 2; i++) pages.push(await browser.newPage(`${demo.url}/?room=${room}&name=p${i}`))
  const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.__demo.userId)))
  const event = await until(() => events.find((e) => e.roomId === room), { timeout: 30000, message: 'an activespeaker event' })
  assert.ok(ids.includes(event.userId), `the speaker ${event.userId} is one of the pages ${ids}`)
  const other = pages[ids.indexOf(event.userId) === 0 ? 1 : 0]
  const outlined = await until(() => other.evaluate((id) => window.__demo.speaker === id && document.querySelector(`.tile.speaking[data-user="${id}"]`) !== null, event.userId),
    { timeout: 10000, message: 'the speaker\'s tile outlined on the other page' })
  assert.ok(outlined)
})
