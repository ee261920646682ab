// Leak test: 200 rounds of (a room with 3 users all producing and consuming each other,
// RTP flowing on all 6 downstreams, then deleteRoom) against one MediaServer in THIS
// process. Afterwards this process's open fds return to their count before the run, its
// RSS has grown by less than 20 MB, and stats() is back to zero.
//
// The WebRTC clients run in a child process (leak-clients.mjs) that calls the server here
// over IPC: libwebrtc's own peer connections grow their host's RSS by themselves (about
// 20 KB per closed peer connection, measured with two @roamhq/wrtc peers and no server),
// which would otherwise drown the server's figure. So the fd and RSS figures below are the
// server's (plus Node's) alone.
//
// Knobs (environment): LEAK_ROUNDS (200), LEAK_WARMUP (12), LEAK_CONCURRENCY (4 rooms at once).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import v8 from 'node:v8'
import vm from 'node:vm'
import { createServer, closeServer, closeEverything, openFdCount, waitFor, waitStatsEqual, sleep } from './helpers.mjs'

v8.setFlagsFromString('--expose-gc')
const gc = globalThis.gc || vm.runInNewContext('gc')

const ROUNDS = Number(process.env.LEAK_ROUNDS || 200)
const WARMUP = Number(process.env.LEAK_WARMUP || 12)
const CONCURRENCY = Number(process.env.LEAK_CONCURRENCY || 4)
const RSS_LIMIT_MB = 20

const zero = { rooms: 0, users: 0, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 }

let child = null

async function settle () {
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(200)
  }
}

test(`leak: ${ROUNDS} rounds of a 3-user all-producing room; fds and RSS come back`, { timeout: 240000 }, async () => {
  const server = createServer({ min: 44000, max: 44999 })
  let failure = null
  let resolveWarm, resolveDone
  const warm = new Promise((resolve) => { resolveWarm = resolve })
  const done = new Promise((resolve) => { resolveDone = resolve })

  child = fork(new URL('./leak-clients.mjs', import.meta.url), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const childExit = new Promise((resolve) => child.once('exit', (code, signal) => {
    if (!failure) failure = new Error(`client process exited early (code ${code}, signal ${signal})`)
    resolveWarm(); resolveDone()
    resolve()
  }))
  child.on('message', async (msg) => {
    if (msg.type === 'call') {
      try {
        const result = await server[msg.method](...msg.args)
        child.connected && child.send({ type: 'result', id: msg.id, result })
      } catch (err) {
        child.connected && child.send({ type: 'result', id: msg.id, error: { code: err.code, message: err.message } })
      }
    } else if (msg.type === 'progress') {
      gc()
      console.log(`leak: after ${msg.rounds} rounds: server process RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MB, fds ${openFdCount()}`)
    } else if (msg.type === 'warm') {
      resolveWarm()
    } else if (msg.type === 'done') {
      resolveDone(msg.summary)
    } else if (msg.type === 'failed') {
      failure = new Error(`a round failed: ${msg.error.message}${msg.error.code ? ` (code ${msg.error.code})` : ''}`)
      resolveWarm(); resolveDone()
    }
  })

  try {
    child.send({ type: 'run', warmup: WARMUP, rounds: ROUNDS, concurrency: CONCURRENCY })
    await warm
    if (failure) throw failure
    await waitStatsEqual(server, zero, { timeout: 15000 })
    await settle()
    const fdBefore = openFdCount()
    const rssBefore = process.memoryUsage().rss
    const t0 = performance.now()
    let rssPeak = rssBefore
    const peakTimer = setInterval(() => { rssPeak = Math.max(rssPeak, process.memoryUsage().rss) }, 200)
    const cpu0 = process.cpuUsage()
    child.send({ type: 'go' })
    const summary = await done
    clearInterval(peakTimer)
    const cpu = process.cpuUsage(cpu0)
    if (failure) throw failure
    const seconds = (performance.now() - t0) / 1000

    // everything the server held is gone...
    await waitStatsEqual(server, zero, { timeout: 15000 })
    // ...and so are its fds (give closing sockets a moment)
    let fdAfter = openFdCount()
    try {
      await waitFor(() => (fdAfter = openFdCount()) <= fdBefore, { timeout: 10000, interval: 100, message: 'fds back to their count before the run' })
    } catch {}
    await settle()
    await sleep(500)
    await settle()
    const rssAfter = process.memoryUsage().rss
    const mb = (b) => (b / 2 ** 20).toFixed(1)
    console.log(`leak: ${ROUNDS} rounds (${CONCURRENCY} rooms at once, after ${WARMUP} warm-up rounds) in ${seconds.toFixed(1)} s ` +
      `(${(seconds / ROUNDS * 1000).toFixed(0)} ms/round); CPU: server process ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, ` +
      `client process ${summary.clientCpuSeconds.toFixed(1)} s`)
    console.log(`leak: server process fds ${fdBefore} -> ${fdAfter}, RSS ${mb(rssBefore)} MB -> ${mb(rssAfter)} MB ` +
      `(+${mb(rssAfter - rssBefore)} MB, limit ${RSS_LIMIT_MB} MB; peak during the run ${mb(rssPeak)} MB)`)
    console.log(`leak: client process fds ${summary.clientFdBefore} -> ${summary.clientFdAfter}, ` +
      `RSS ${summary.clientRssBeforeMB.toFixed(1)} MB -> ${summary.clientRssAfterMB.toFixed(1)} MB (not asserted)`)
    const problems = []
    if (fdAfter > fdBefore) problems.push(`open fds did not return to their count before the run: ${fdBefore} -> ${fdAfter}`)
    if (rssAfter - rssBefore >= RSS_LIMIT_MB * 2 ** 20) problems.push(`RSS grew by ${mb(rssAfter - rssBefore)} MB over ${ROUNDS} rounds (limit ${RSS_LIMIT_MB} MB)`)
    assert.deepStrictEqual(problems, [], problems.join('; '))
  } finally {
    if (child.connected) child.send({ type: 'exit' })
    const killer = setTimeout(() => { try { child.kill('SIGKILL') } catch {} }, 10000)
    await childExit
    clearTimeout(killer)
    await closeServer(server)
  }
})

after(closeEverything)
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))
