// The addon in a Node process: the process exits on its own once its handles are done (the
// runtime keeps nothing alive), with or without close(); and concurrent calls on one room end
// in a consistent state.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createServer, closeServer, closeEverything, MediaSource, makeOffer, uniqueId } from './helpers.mjs'

const addonPath = fileURLToPath(new URL('../index.js', import.meta.url))
const T = { timeout: 60000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Runs `script` in a child node with the offer on stdin; resolves {code, signal, stdout, ms}. */
function runChild (script, offer, { timeout = 20000 } = {}) {
  return new Promise((resolve) => {
    const started = Date.now()
    const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, ADDON: addonPath } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const killer = setTimeout(() => child.kill('SIGKILL'), timeout)
    child.on('exit', (code, signal) => {
      clearTimeout(killer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
    child.stdin.end(JSON.stringify(offer))
  })
}

const CHILD = (closeAtEnd) => `
  const { MediaServer } = require(process.env.ADDON)
  let input = ''
  process.stdin.on('data', (d) => { input += d })
  process.stdin.on('end', async () => {
    const server = new MediaServer({ listenIp: '127.0.0.1' })
    await server.createRoom('r', { userId: 'a' })
    await server.addUser('r', 'b')
    const res = await server.produce('r', 'a', { offer: JSON.parse(input) })
    const stats = await server.stats()
    console.log(JSON.stringify({ outbound: res.outbound.length, live: stats.liveConnections }))
    ${closeAtEnd ? 'await server.close(); console.log(JSON.stringify(await server.stats().catch((e) => e.code)))' : ''}
  })
`

let offer
test('setup: a real producer offer from libwebrtc', T, async () => {
  const source = new MediaSource()
  offer = await makeOffer(source)
  source.close()
  assert.match(offer.sdp, /m=video/)
})

for (const closeAtEnd of [false, true]) {
  test(`a process holding live connections exits by itself ${closeAtEnd ? 'after close()' : 'without close()'}`, T, async () => {
    const r = await runChild(CHILD(closeAtEnd), offer)
    assert.equal(r.signal, null, `the child was killed (it did not exit on its own): ${r.stderr}`)
    assert.equal(r.code, 0, r.stderr)
    const [first, second] = r.stdout.trim().split('\n')
    assert.deepEqual(JSON.parse(first), { outbound: 1, live: 2 }, 'it held an upstream and a downstream connection')
    if (closeAtEnd) assert.equal(JSON.parse(second), 'SERVER_CLOSED')
    console.log(`child exited by itself in ${r.ms} ms`)
  })
}

test('concurrent calls on one room end in a consistent state', T, async () => {
  const server = createServer({ min: 45000, max: 45199 })
  const room = uniqueId('busy')
  await server.createRoom(room)
  const ids = Array.from({ length: 12 }, (_, i) => `u${i}`)
  // Everyone joins at once, and the same ids race to join twice.
  const joins = await Promise.allSettled([...ids, ...ids].map((id) => server.addUser(room, id)))
  assert.equal(joins.filter((j) => j.status === 'fulfilled').length, ids.length)
  assert.ok(joins.filter((j) => j.status === 'rejected').every((j) => j.reason.code === 'USER_EXISTS'))
  // Four producers at once, while others leave and unknown users are asked for.
  const calls = [
    ...ids.slice(0, 4).map((id) => server.produce(room, id, { offer })),
    ...ids.slice(8).map((id) => server.removeUser(room, id)),
    server.stopProduce(room, 'nobody').catch((e) => e.code)
  ]
  const results = await Promise.allSettled(calls)
  for (const r of results) assert.equal(r.status, 'fulfilled', r.reason?.stack)
  assert.equal(results.at(-1).value, 'USER_NOT_FOUND')
  const stats = await server.stats()
  // 8 users left, 4 of them producing: each producer has a downstream to each of the 7 others.
  assert.equal(stats.users, 8)
  assert.equal(stats.upstreamConnections, 4)
  assert.equal(stats.downstreamConnections, 4 * 7)
  assert.equal((await server.deleteRoom(room)).count, 8)
  const after = await server.stats()
  assert.deepEqual([after.rooms, after.users, after.upstreamConnections, after.downstreamConnections, after.portsInUse], [0, 0, 0, 0, 0])
  await closeServer(server)
})
