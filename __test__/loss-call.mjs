// Run by loss.test.mjs inside a private network namespace whose loopback drops 5% of UDP
// packets: a two-page call through the demo backend, 20 s long; prints the figures as JSON.
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
  }, { timeout: 30000, message: 'first decoded frame under loss' })
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
  const last = (await demoStats(consumer)).producers[producerId].video
  const upstream = (await demoStats(producer)).upstream
  result = {
    seconds,
    framesDecodedDuring: last.framesDecoded - first.framesDecoded,
    consumer: last,
    producerNacksReceived: upstream.video.nackCount,
    producerRetransmitted: upstream.video,
    producerEstimate: upstream.availableOutgoingBitrate
  }
} catch (err) {
  result = { error: err.message }
}
console.log(`LOSS-RESULT ${JSON.stringify(result)}`)
await browser.close()
await demo.close()
process.exit(0)
