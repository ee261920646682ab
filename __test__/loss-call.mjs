// Run by loss.test.mjs inside a private network namespace (only loopback): a two-page call
// through the demo backend; once it is up, the namespace's loopback starts dropping 5% of UDP
// packets at random for 20 s. Prints the figures as JSON.
import { execFileSync } from 'node:child_process'
import { startDemo } from '../examples/video-room/server.mjs'
import { launchBrowser, demoStats, until } from './browser.mjs'

const seconds = Number(process.env.LOSS_SECONDS ?? 20)
const demo = await startDemo({ host: '127.0.0.1', port: 0, log: () => {} })
const browser = await launchBrowser()
let result
try {
  const producer = await browser.newPage(`${demo.url}/?room=loss&name=producer`)
  const consumer = await browser.newPage(`${demo.url}/?room=loss&name=consumer`)
  const producerId = await producer.evaluate(() => window.__demo.userId)
  const first = await until(async () => {
    const v = (await demoStats(consumer)).producers[producerId]?.video
    return v?.framesDecoded > 0 ? v : null
  }, { timeout: 30000, message: 'first decoded frame' })
  const nft = (...args) => execFileSync('nft', args)
  nft('add', 'table', 'inet', 'loss')
  nft('add', 'chain', 'inet', 'loss', 'out', '{ type filter hook output priority 0; }')
  nft('add', 'rule', 'inet', 'loss', 'out', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', '5', 'drop')
  const start = { consumer: (await demoStats(consumer)).producers[producerId].video, producer: (await demoStats(producer)).upstream }
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
  const last = (await demoStats(consumer)).producers[producerId].video
  const upstream = (await demoStats(producer)).upstream
  const during = (key, end, begin) => (end[key] ?? 0) - (begin[key] ?? 0)
  result = {
    seconds,
    framesDecodedDuring: during('framesDecoded', last, start.consumer),
    consumer: Object.fromEntries(['packetsReceived', 'packetsLost', 'nackCount', 'freezeCount', 'retransmittedPacketsReceived']
      .map((k) => [k, during(k, last, start.consumer)])),
    producer: Object.fromEntries(['packetsSent', 'nackCount', 'retransmittedPacketsSent']
      .map((k) => [k, during(k, upstream.video, start.producer.video)])),
    producerEstimate: upstream.availableOutgoingBitrate
  }
} catch (err) {
  const pages = browser.context.pages()
  const states = await Promise.all(pages.map((p) => p.evaluate(() => ({ id: window.__demo?.userId, connections: window.__demo?.connections() })).catch((e) => e.message)))
  result = { error: `${err.message}; pages: ${JSON.stringify(states)}; server: ${JSON.stringify(await demo.media.stats())}` }
}
console.log(`LOSS-RESULT ${JSON.stringify(result)}`)
await browser.close()
await demo.close()
process.exit(0)
