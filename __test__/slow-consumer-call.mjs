// Run by slow-consumer.test.mjs inside a private network namespace (only loopback). One
// producer, three consumers on one media loop: B and C over UDP, S over ICE-TCP (every UDP
// candidate stripped both ways, as for a client whose UDP is blocked). Once all three decode,
// nftables lets the server's TCP segments reach S at no more than 16 kB/s, a fraction of the
// video: S cannot keep up. Over the next 12 s, B's and C's decoded frame rates are compared
// with the 6 s before, and the server's stats say what S lost at its own queue. Prints the
// figures as JSON.
//
// The namespace's small TCP receive buffers (set by the test) keep S's kernel from hiding the
// backlog for long; the server sets a small send buffer on its ICE-TCP sockets for the same
// reason (src/engine/media_loop.rs).
import { execFileSync } from 'node:child_process'
import { Client, createServer, closeEverything, sleep } from './helpers.mjs'

const tcpOnly = (desc) => desc && { type: desc.type, sdp: desc.sdp.split('\r\n').filter((l) => !(l.startsWith('a=candidate:') && / udp /i.test(l))).join('\r\n') }
const framesOf = async (client) => (await client.inboundStats('A')).video.framesDecoded
const rates = async (clients, ms) => {
  const before = await Promise.all(clients.map(framesOf))
  await sleep(ms)
  const after = await Promise.all(clients.map(framesOf))
  return after.map((f, i) => (f - before[i]) / (ms / 1000))
}

let result
try {
  const server = createServer(undefined, { enableTcp: true, engine: 'loops', workers: 1 })
  const viaTcp = {
    consume: (room, user, body) => server.consume(room, user, { answers: body.answers.map((a) => ({ ...a, answer: tcpOnly(a.answer) })) })
  }
  await server.createRoom('slow', { userId: 'A' })
  for (const id of ['B', 'C', 'S']) await server.addUser('slow', id)
  const A = new Client(server, 'slow', 'A', { sourceOptions: { width: 640, height: 480 } })
  const B = new Client(server, 'slow', 'B')
  const C = new Client(server, 'slow', 'C')
  const S = new Client(viaTcp, 'slow', 'S')
  const res = await A.produce({ audio: true, video: true })
  await B.consumeAll(res.outbound, { from: 'A' })
  await C.consumeAll(res.outbound, { from: 'A' })
  await S.consumeAll(res.outbound.map((o) => ({ ...o, offer: tcpOnly(o.offer) })), { from: 'A' })
  for (const c of [B, C, S]) await c.waitDecoding('A', { timeout: 20000 })

  const downstreamOf = async (user) => (await server.getStats('slow', user)).connections.find((c) => c.direction === 'downstream')
  const sLeg = await downstreamOf('S')
  const tcpPort = sLeg?.transport.selectedCandidatePair?.local.port
  if (sLeg?.transport.selectedCandidatePair?.local.protocol !== 'tcp') throw new Error(`S is not on TCP: ${JSON.stringify(sLeg?.transport)}`)
  // Let the encoder's rate settle, then measure before.
  await sleep(3000)
  const [bBefore, cBefore] = await rates([B, C], 6000)
  const sDecodedBefore = await framesOf(S)
  execFileSync('nft', ['-f', '-'], {
    input: `table inet slow {
      chain in {
        type filter hook input priority 0; policy accept;
        tcp sport ${tcpPort} limit rate over 16 kbytes/second drop
      }
    }`
  })
  const [bDuring, cDuring] = await rates([B, C], 12000)
  const sLegAfter = await downstreamOf('S')
  const others = await Promise.all(['B', 'C'].map(downstreamOf))
  result = {
    rates: { B: [bBefore, bDuring], C: [cBefore, cDuring] },
    slow: {
      dropped: sLegAfter.transport.packetsDropped,
      decodedDuring: (await framesOf(S)) - sDecodedBefore,
      state: sLegAfter.state
    },
    othersDropped: others.map((c) => c.transport.packetsDropped)
  }
} catch (err) {
  result = { error: err.stack }
}
console.log(`SLOW-RESULT ${JSON.stringify(result)}`)
await closeEverything()
process.exit(0)
