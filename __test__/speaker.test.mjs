// Active speaker: three libwebrtc producers in one room, one playing a loud tone and two near
// silence. Their packets carry the audio level (RFC 6464, which the server negotiates); the
// server names the loud one in an `activespeaker` event, follows the loudness when it moves to
// another producer, and does not move on a 100 ms burst from a third. With audioLevelIntervalMs
// the `audiolevels` events report each producer's level.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client, createServer, closeEverything, sleep, uniqueId, waitFor } from './helpers.mjs'

after(closeEverything)
// libwebrtc (wrtc) can crash at a natural exit once tracks were used: exit explicitly.
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))

const LOUD = 8000 // about -12 dBov
const QUIET = 8 // about -72 dBov

test('activespeaker names the loud producer, follows the loudness, and ignores a 100 ms burst', { timeout: 90000 }, async () => {
  const server = createServer(undefined, { audioLevelIntervalMs: 500 })
  const room = uniqueId('speaker')
  const events = []
  const levels = []
  server.on('activespeaker', (e) => events.push(e))
  server.on('audiolevels', (e) => { if (e.roomId === room) levels.push(e) })
  await server.createRoom(room, { userId: 'a' })
  const clients = {}
  for (const [id, amplitude] of [['a', LOUD], ['b', QUIET], ['c', QUIET]]) {
    if (id !== 'a') await server.addUser(room, id)
    clients[id] = new Client(server, room, id, { sourceOptions: { video: false, amplitude } })
    const res = await clients[id].produce({ audio: true, video: false })
    assert.match(res.answer.sdp, /a=extmap:\d+ urn:ietf:params:rtp-hdrext:ssrc-audio-level/, 'the answer negotiates the audio level')
  }
  const speakerEvents = () => events.filter((e) => e.roomId === room)
  await waitFor(() => speakerEvents().length > 0, { timeout: 15000, message: 'a first activespeaker event' })
  assert.deepEqual(speakerEvents(), [{ type: 'activespeaker', roomId: room, userId: 'a' }])
  // The levels of the same moment: a loud, b and c near silence (dBov).
  await waitFor(() => levels.at(-1)?.levels.length === 3, { timeout: 5000, message: 'an audiolevels event with all three' })
  const level = Object.fromEntries(levels.at(-1).levels.map((l) => [l.userId, l.level]))
  assert.equal(levels.at(-1).type, 'audiolevels')
  assert.ok(level.a > -25 && level.b < -60 && level.c < -60, `levels: ${JSON.stringify(level)}`)

  // The loud one changes: a goes quiet, c speaks.
  clients.a.source.amplitude = QUIET
  clients.c.source.amplitude = LOUD
  await waitFor(() => speakerEvents().length > 1, { timeout: 15000, message: 'the speaker to move' })
  assert.deepEqual(speakerEvents().map((e) => e.userId), ['a', 'c'])

  // b shouts for 100 ms: no change.
  clients.b.source.amplitude = LOUD * 4
  await sleep(100)
  clients.b.source.amplitude = QUIET
  await sleep(3000)
  assert.deepEqual(speakerEvents().map((e) => e.userId), ['a', 'c'], 'a 100 ms burst moved the speaker')
})
