// Child process of leak.test.mjs (not a test file itself): runs the WebRTC clients of the
// leak test. The MediaServer lives in the parent (the process whose fds and RSS are
// measured); every server call made here is sent to the parent over the IPC channel.
//
// Why a separate process: libwebrtc's own peer connections grow the RSS of the process that
// hosts them (about 20 KB per closed peer connection, measured here with two @roamhq/wrtc
// peers and no server at all), which would drown the server's figure.
//
// Protocol (process.send / 'message'):
//   parent -> child  { type: 'run', warmup, rounds, concurrency }
//   child  -> parent { type: 'call', id, method, args }        parent answers
//   parent -> child  { type: 'result', id, result } | { type: 'result', id, error: {code, message} }
//   child  -> parent { type: 'warm' }   (warm-up rounds done; parent measures, then sends 'go')
//   parent -> child  { type: 'go' }
//   child  -> parent { type: 'progress', rounds }   (every 50 rounds; parent logs its RSS)
//   child  -> parent { type: 'done', summary } | { type: 'failed', error }
//   parent -> child  { type: 'exit' }

import fs from 'node:fs'
import { Client, createSource, closeEverything, waitFor } from './helpers.mjs'

let nextCall = 0
const pending = new Map()

function call (method, args) {
  const id = ++nextCall
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject })
    process.send({ type: 'call', id, method, args })
  })
}

/** A stand-in for the MediaServer whose methods run in the parent process. */
const server = new Proxy({}, {
  get: (_t, method) => (...args) => call(method, args)
})

let source
let goResolve
const go = new Promise((resolve) => { goResolve = resolve })

process.on('message', async (msg) => {
  if (msg.type === 'result') {
    const p = pending.get(msg.id)
    if (!p) return
    pending.delete(msg.id)
    if (msg.error) {
      const err = new Error(msg.error.message)
      err.code = msg.error.code
      p.reject(err)
    } else {
      p.resolve(msg.result)
    }
  } else if (msg.type === 'run') {
    run(msg).catch((err) => {
      process.send({ type: 'failed', error: { message: String(err && err.stack ? err.stack : err), code: err && err.code } })
    })
  } else if (msg.type === 'go') {
    goResolve()
  } else if (msg.type === 'exit') {
    await quit(0)
  }
})
process.on('disconnect', () => { quit(1) })

async function quit (code) {
  try { await closeEverything() } catch {}
  setImmediate(() => process.exit(code))
}

let roomSeq = 0
/** One round: a room with 3 users, all producing and consuming each other; RTP on all 6 downstreams; deleteRoom. */
async function round () {
  const room = `leak-${process.pid}-${++roomSeq}`
  const ids = ['A', 'B', 'C']
  const clients = Object.fromEntries(ids.map((id) => [id, new Client(server, room, id, { source })]))
  try {
    await server.createRoom(room, { userId: 'A', userInfo: { round: roomSeq } })
    await server.addUser(room, 'B', { userInfo: {} })
    await server.addUser(room, 'C', {})
    // all three start producing at once (the server must cope with concurrent calls in a room)
    await Promise.all(ids.map(async (id) => {
      const res = await clients[id].produce({ audio: true, video: true })
      if (res.outbound.length !== 2) throw new Error(`${room}: produce(${id}) outbound has ${res.outbound.length} items`)
      await Promise.all(res.outbound.map((o) => clients[o.id].consumeAll([o], { from: id })))
    }))
    await Promise.all(ids.flatMap((c) => ids.filter((p) => p !== c).map((p) => waitFor(async () => {
      const s = await clients[c].inboundStats(p)
      return s.video.packetsReceived > 0 && s.audio.packetsReceived > 0
    }, { timeout: 20000, interval: Number(process.env.LEAK_POLL_MS || 50), message: `${room}: ${c} receives RTP (audio and video) from ${p}` }))))
    const del = await server.deleteRoom(room)
    if (!del || del.count !== 3) throw new Error(`${room}: deleteRoom returned ${JSON.stringify(del)}`)
  } finally {
    for (const c of Object.values(clients)) c.close()
  }
}

async function runRounds (n, concurrency, { progressEvery = 0 } = {}) {
  let started = 0
  let finished = 0
  const worker = async () => {
    while (started < n) {
      started++
      await round()
      finished++
      if (progressEvery && finished % progressEvery === 0 && finished < n) process.send({ type: 'progress', rounds: finished })
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
}

async function run ({ warmup, rounds, concurrency }) {
  source = createSource({ width: Number(process.env.LEAK_WIDTH || 160), height: Number(process.env.LEAK_HEIGHT || 120), fps: Number(process.env.LEAK_FPS || 30) })
  await runRounds(warmup, concurrency)
  process.send({ type: 'warm' })
  await go
  const fd0 = fs.readdirSync('/proc/self/fd').length
  const rss0 = process.memoryUsage().rss
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  await runRounds(rounds, concurrency, { progressEvery: 50 })
  const cpu = process.cpuUsage(cpu0)
  const seconds = (performance.now() - t0) / 1000
  process.send({
    type: 'done',
    summary: {
      rounds,
      seconds,
      clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
      clientFdBefore: fd0,
      clientFdAfter: fs.readdirSync('/proc/self/fd').length,
      clientRssBeforeMB: rss0 / 2 ** 20,
      clientRssAfterMB: process.memoryUsage().rss / 2 ** 20
    }
  })
}
