// Network configuration: single-port mode (every connection through one UDP port), ICE-TCP,
// several listen addresses, an announced address. Media checks read the receiving client's own
// getStats().

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import {
  Client, createServer, closeServer, closeEverything, deliver, candidateLines, safeJson, startCall
} from './helpers.mjs'
import { HttpMediaServer } from './http-client.mjs'

const T = { timeout: 120000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Starts fixtures/server-process.mjs with `options`; resolves to {child, url, stats}. */
async function serverProcess (options) {
  const script = fileURLToPath(new URL('./fixtures/server-process.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const m = /READY (\S+) (.*)\n/.exec(out)
      if (m) resolve(m)
    })
    child.on('exit', (code) => reject(new Error(`the server process exited (${code})`)))
  })
  return { child, url: line[1], stats: JSON.parse(line[2]) }
}

/** The UDP sockets a process holds: [{address, port}] from /proc/<pid>/fd and /proc/net/udp{,6}. */
function udpSocketsOf (pid) {
  const inodes = new Set()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1])
    } catch {}
  }
  const out = []
  for (const table of ['udp', 'udp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length < 10 || !inodes.has(cols[9])) continue
      const [hexIp, hexPort] = cols[1].split(':')
      const ip = table === 'udp' ? hexIp.match(/../g).reverse().map((h) => parseInt(h, 16)).join('.') : hexIp
      out.push({ address: ip, port: parseInt(hexPort, 16) })
    }
  }
  return out
}

/** Every user produces and consumes everyone else's media: 3 upstreams, 6 downstreams. */
async function fullMesh (server, room, ids, { checkSdp } = {}) {
  const clients = Object.fromEntries(ids.map((id) => [id, new Client(server, room, id)]))
  await server.createRoom(room)
  for (const id of ids) await server.addUser(room, id)
  for (const id of ids) {
    const res = await clients[id].produce({ audio: true, video: true })
    checkSdp?.(res.answer, `answer to ${id}`)
    for (const o of res.outbound) checkSdp?.(o.offer, `offer ${id} -> ${o.id}`)
    await deliver(res, clients)
  }
  const pairs = ids.flatMap((c) => ids.filter((p) => p !== c).map((p) => [c, p]))
  await Promise.all(pairs.map(async ([c, p]) => {
    await clients[c].waitDecoding(p)
    await clients[c].waitAudio(p)
  }))
  return clients
}

test('single-port mode: a three-user room, all six streams decoding, through one UDP socket', T, async () => {
  const { child, url, stats } = await serverProcess({ listenIp: '127.0.0.1', udpPort: 0 })
  const server = new HttpMediaServer(url)
  const port = stats.udpPort
  assert.ok(Number.isInteger(port) && port > 0, `stats().udpPort: ${safeJson(stats)}`)
  let clients = {}
  try {
    assert.deepStrictEqual(udpSocketsOf(child.pid), [{ address: '127.0.0.1', port }], 'before any call: the one shared socket')
    clients = await fullMesh(server, 'one-port', ['A', 'B', 'C'], {
      checkSdp (desc, what) {
        const udp = candidateLines(desc.sdp).filter((c) => / udp /i.test(c))
        assert.ok(udp.length > 0, `${what}: no UDP candidate`)
        for (const c of udp) assert.match(c, new RegExp(` 127\\.0\\.0\\.1 ${port} typ host`), `${what}: ${c}`)
      }
    })
    const sockets = udpSocketsOf(child.pid)
    assert.deepStrictEqual(sockets, [{ address: '127.0.0.1', port }],
      `9 connections up, and the server process holds exactly one UDP socket: ${safeJson(sockets)}`)
    const after = await server.stats()
    assert.equal(after.upstreamConnections + after.downstreamConnections, 9)
    assert.equal(after.portsInUse, 0)
    // The clients see the shared port as the server's end of every connection.
    for (const c of Object.values(clients)) {
      for (const pc of [c.upstream, ...c.downstreams.values()]) {
        const report = await pc.getStats()
        const pair = [...report.values()].find((s) => s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated)
        const remote = pair && report.get(pair.remoteCandidateId)
        assert.equal(remote?.port, port, `${c.userId}: remote candidate ${safeJson(remote)}`)
      }
    }
  } finally {
    for (const c of Object.values(clients)) c.close()
    child.kill('SIGTERM')
  }
})

test('ICE-TCP: a client that can only reach the server over TCP still decodes', T, async () => {
  const server = createServer({ min: 48300, max: 48349 }, { enableTcp: true })
  const tcpOnly = (desc) => desc && { type: desc.type, sdp: desc.sdp.split('\r\n').filter((l) => !(l.startsWith('a=candidate:') && / udp /i.test(l))).join('\r\n') }
  // The backend strips every UDP candidate, both ways: as if UDP were blocked.
  const viaTcp = {
    async produce (room, user, body) {
      const res = await server.produce(room, user, { ...body, offer: tcpOnly(body.offer) })
      return { ...res, answer: tcpOnly(res.answer), outbound: res.outbound.map((o) => ({ ...o, offer: tcpOnly(o.offer) })) }
    },
    consume: (room, user, body) => server.consume(room, user, { answers: body.answers.map((a) => ({ ...a, answer: tcpOnly(a.answer) })) })
  }
  const A = new Client(viaTcp, 'tcp', 'A')
  const B = new Client(viaTcp, 'tcp', 'B')
  try {
    await server.createRoom('tcp', { userId: 'A' })
    await server.addUser('tcp', 'B')
    const res = await A.produce({ audio: true, video: true })
    const tcpCandidates = candidateLines(res.answer.sdp)
    assert.ok(tcpCandidates.every((c) => / tcp /.test(c)), safeJson(tcpCandidates))
    assert.ok(tcpCandidates.some((c) => / 127\.0\.0\.1 48\d\d\d typ host tcptype passive/.test(c)), `a passive TCP candidate on a port of the range: ${safeJson(tcpCandidates)}`)
    await B.consumeAll(res.outbound, { from: 'A' })
    await B.waitDecoding('A')
    await B.waitAudio('A')
    const stats = await server.getStats('tcp')
    for (const c of stats.connections) {
      assert.equal(c.transport.selectedCandidatePair?.local.protocol, 'tcp', `${c.direction} ${c.userId}: ${safeJson(c.transport)}`)
    }
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})

test('several listen addresses: a candidate on each; an announced address replaces the bound one', T, async () => {
  const server = createServer({ min: 48350, max: 48399 }, { listenIp: undefined, listenIps: ['127.0.0.1', { ip: '127.0.0.3', announcedIp: '127.0.0.4' }] })
  const A = new Client(server, 'multi', 'A')
  const B = new Client(server, 'multi', 'B')
  try {
    // 127.0.0.4 leads nowhere (no NAT here): the clients connect through 127.0.0.1.
    const res = await startCall(server, 'multi', A, B)
    const addresses = candidateLines(res.answer.sdp).map((c) => c.split(' ')[4]).sort()
    assert.deepStrictEqual([...new Set(addresses)], ['127.0.0.1', '127.0.0.4'], safeJson(candidateLines(res.answer.sdp)))
    assert.ok(!res.answer.sdp.includes('127.0.0.3'), 'the bound address behind an announced one is not revealed')
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})
