// Run by bwe.test.mjs inside a private network namespace (only loopback). A Chromium producer
// sends three simulcast layers; two libwebrtc consumers, weak and strong, decode the top one.
// Then nftables lets at most LIMIT bytes a second reach weak's port, with a second's worth of
// burst (the rest is dropped on the input hook, as a policer on its downlink would; LIMIT is 60 %
// of the top layer's measured rate): weak must move to a lower layer, from its
// own receiver reports, and keep decoding, while strong keeps the top layer and the producer's
// send rate holds. Then the limit goes, and weak must come back to the top layer. Prints the
// figures as JSON.
import { execFileSync } from 'node:child_process'
import { createServer as createHttpServer } from 'node:http'
import { launchBrowser } from './browser.mjs'
import { sentLayers, simulcastOffer } from './simulcast-producer.mjs'
import { Client, closeEverything, createServer, loopbackOnly, sleep, waitFor } from './helpers.mjs'

const http = createHttpServer((_req, res) => res.end('<!doctype html><title>producer</title>'))
await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
const browser = await launchBrowser()
let result
try {
  const server = createServer(null)
  await server.createRoom('bwe', { userId: 'chromium' })
  await server.addUser('bwe', 'weak')
  await server.addUser('bwe', 'strong')
  const page = await browser.context.newPage()
  await page.goto(`http://127.0.0.1:${http.address().port}/`)
  const res = await server.produce('bwe', 'chromium', { offer: { type: 'offer', sdp: loopbackOnly(await simulcastOffer(page)) } })
  await page.evaluate((answer) => window.pc.setRemoteDescription(answer), res.answer)
  await waitFor(async () => {
    const sent = await sentLayers(page)
    return ['q', 'h', 'f'].every((rid) => sent[rid]?.bytesSent > 0) ? sent : null
  }, { timeout: 30000, message: 'Chromium sends three layers' })

  const weak = new Client(server, 'bwe', 'weak')
  const strong = new Client(server, 'bwe', 'strong')
  const byId = new Map(res.outbound.map((o) => [o.id, o]))
  await weak.consumeAll([byId.get('weak')], { from: 'chromium' })
  await strong.consumeAll([byId.get('strong')], { from: 'chromium' })

  const video = async (client) => (await client.inboundStats('chromium')).video
  /** The server's view of a consumer's downstream: its video layers and its bandwidth estimate. */
  const downstream = async (user) => {
    const { connections } = await server.getStats('bwe', user)
    const down = connections.find((c) => c.direction === 'downstream')
    return { layers: down.tracks.find((t) => t.kind === 'video').layers, estimate: down.transport.selectedCandidatePair?.availableOutgoingBitrate ?? null }
  }
  /** Chromium's send rate, all layers, over `ms`, bit/s; and each layer's. */
  const producerRate = async (ms) => {
    const a = await sentLayers(page)
    await sleep(ms)
    const b = await sentLayers(page)
    const per = Object.fromEntries(Object.keys(b).map((rid) => [rid, Math.round((b[rid].bytesSent - (a[rid]?.bytesSent ?? 0)) * 8000 / ms)]))
    return { total: Object.values(per).reduce((x, y) => x + y, 0), per }
  }
  await waitFor(async () => (await downstream('weak')).layers?.current === 2 && (await downstream('strong')).layers?.current === 2,
    { timeout: 30000, message: 'both consumers on the top layer' })
  // Let the producer's rate settle before it is measured.
  await sleep(4000)
  const before = await producerRate(3000)
  const topWidth = (await sentLayers(page)).f.frameWidth
  const LIMIT = Math.max(20000, Math.round(before.per.f / 8 * 0.6))

  // weak's port, as its own libwebrtc reports the selected pair.
  const report = await weak.downstreams.get('chromium').getStats()
  const entries = [...report.values()]
  const transport = entries.find((s) => s.type === 'transport' && s.selectedCandidatePairId)
  const pair = entries.find((s) => s.id === transport?.selectedCandidatePairId) ?? entries.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded')
  const port = entries.find((s) => s.id === pair?.localCandidateId)?.port
  if (!port) throw new Error(`weak's port not found in its stats: ${JSON.stringify(entries.filter((s) => /candidate|transport/.test(s.type)))}`)

  execFileSync('nft', ['-f', '-'], {
    input: `table inet bwe {
      counter dropped {}
      chain in {
        type filter hook input priority 0; policy accept;
        udp dport ${port} limit rate over ${LIMIT} bytes/second burst ${LIMIT} bytes counter name dropped drop
      }
    }`
  })
  const limited = Date.now()
  const down = await waitFor(async () => {
    const d = await downstream('weak')
    if (process.env.BWE_DEBUG) console.error(Date.now() - limited, JSON.stringify(d), JSON.stringify((await video(weak))), execFileSync('nft', ['list', 'counters', 'table', 'inet', 'bwe'], { encoding: 'utf8' }).replace(/\s+/g, ' '), JSON.stringify([...(await weak.downstreams.get('chromium').getStats()).values()].filter((x) => x.type === 'inbound-rtp' && x.kind === 'video').map(({ packetsLost, packetsReceived, nackCount, framesDecoded }) => ({ packetsLost, packetsReceived, nackCount, framesDecoded }))))
    return d.layers.target < 2 ? d : null
  },
    { timeout: 20000, message: 'weak moved down' })
  const downAfterMs = Date.now() - limited
  // Under the limit for a while: weak keeps decoding, strong keeps the top layer.
  const weakBefore = await video(weak)
  const strongBefore = await video(strong)
  const during = await producerRate(8000)
  const weakAfter = await video(weak)
  const strongAfter = await video(strong)
  const strongDuring = { ...(await downstream('strong')), frameWidth: (await video(strong)).frameWidth }
  const weakDuring = await downstream('weak')
  const dropped = JSON.parse(execFileSync('nft', ['-j', 'list', 'counters', 'table', 'inet', 'bwe'], { encoding: 'utf8' }))
    .nftables.find((x) => x.counter)?.counter.packets
  execFileSync('nft', ['delete', 'table', 'inet', 'bwe'])

  const freed = Date.now()
  await waitFor(async () => (await downstream('weak')).layers.current === 2, { timeout: 60000, interval: 500, message: 'weak back on the top layer' })
  const upAfterMs = Date.now() - freed
  await waitFor(async () => (await video(weak)).frameWidth === topWidth, { timeout: 10000, message: 'weak decodes the top layer again' })

  result = {
    limitBytesPerSecond: LIMIT,
    layerRates: before.per,
    producerBefore: before.total,
    producerDuring: during.total,
    downAfterMs,
    estimateAtDown: down.estimate,
    weakDuring,
    weakFramesDuring: weakAfter.framesDecoded - weakBefore.framesDecoded,
    strongFramesDuring: strongAfter.framesDecoded - strongBefore.framesDecoded,
    weakWidthDuring: weakAfter.frameWidth,
    strongDuring,
    topWidth,
    dropped,
    upAfterMs
  }
} catch (err) {
  result = { error: err.stack }
}
console.log(`BWE-RESULT ${JSON.stringify(result)}`)
await browser.close()
await closeEverything()
http.close()
process.exit(0)
