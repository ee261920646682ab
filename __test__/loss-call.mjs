// Run by loss.test.mjs inside a private network namespace (only loopback): a two-page call
// through the demo backend; once it is up, the namespace starts dropping 5% of UDP packets at
// random for 20 s. Prints the figures as JSON.
//
// The packets are dropped on the INPUT hook, after they left their sender, as a lossy network
// (or netem) would. A rule on the OUTPUT hook does not make 5% loss for every sender: the
// dropped packet's sendto() fails with EPERM, and Chromium's UDP socket sends the very same
// datagram again at once when sendto() fails that way (strace of the pages' network thread: 62
// EPERMs in 4 s, each followed by an identical sendto that succeeded, bar the ~5% of retries
// that were dropped too). So Chromium's own legs, producer→server included, lost about 0.25% of
// their packets: some 3 of 1300 video packets in 20 s, and now and then none, which is how the
// server once had nothing to NACK. webrtc-rs does not retry, so the server's legs lost 5%.
//
// To show that the loss reached the leg whose NACKs the test checks, two counters count the
// producer's video packets (its SSRC, which SRTP leaves in the clear) arriving at the port of
// its upstream connection: those dropped, and those let through.
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
  await until(async () => {
    const v = (await demoStats(consumer)).producers[producerId]?.video
    return v?.framesDecoded > 0 ? v : null
  }, { timeout: 30000, message: 'first decoded frame' })

  // The producer's upstream as the server sees it: its port, and the SSRC of the video it sends.
  const upstream = async () => {
    const { connections } = await demo.media.getStats('loss', producerId)
    const up = connections.find((c) => c.direction === 'upstream')
    return { port: up?.transport.selectedCandidatePair?.local.port, video: up?.tracks.find((t) => t.kind === 'video') }
  }
  const leg = await until(async () => { const u = await upstream(); return u.port && u.video?.ssrc ? u : null },
    { timeout: 10000, message: 'the server\'s view of the producer\'s upstream' })
  execFileSync('nft', ['-f', '-'], {
    input: `table inet loss {
      counter producer_video_passed {}
      counter producer_video_dropped {}
      chain in {
        type filter hook input priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < 5 jump lose
        udp dport ${leg.port} @th,128,32 ${leg.video.ssrc} counter name producer_video_passed
      }
      chain lose {
        udp dport ${leg.port} @th,128,32 ${leg.video.ssrc} counter name producer_video_dropped
        drop
      }
    }`
  })
  const counters = () => Object.fromEntries(JSON.parse(execFileSync('nft', ['-j', 'list', 'counters', 'table', 'inet', 'loss'], { encoding: 'utf8' }))
    .nftables.filter((x) => x.counter).map((x) => [x.counter.name, x.counter.packets]))

  const start = {
    consumer: (await demoStats(consumer)).producers[producerId].video,
    producer: (await demoStats(producer)).upstream.video,
    server: (await upstream()).video
  }
  // The measurement window: how the call fares under loss is what is measured over it.
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
  // The server asks for a lost packet at its next NACK tick (100 ms) after a later one arrives.
  // If the window ended with no NACK counted by the producer yet, give it a few more seconds,
  // with the loss still on, rather than read the figures too early.
  await until(async () => (await demoStats(producer)).upstream.video.nackCount > start.producer.nackCount,
    { timeout: 5000, message: 'a NACK counted by the producer' }).catch(() => {})

  const last = (await demoStats(consumer)).producers[producerId].video
  const sent = (await demoStats(producer)).upstream
  const server = (await upstream()).video
  const drops = counters()
  const during = (key, end, begin) => (end[key] ?? 0) - (begin[key] ?? 0)
  result = {
    seconds,
    framesDecodedDuring: during('framesDecoded', last, start.consumer),
    consumer: Object.fromEntries(['packetsReceived', 'packetsLost', 'nackCount', 'freezeCount', 'retransmittedPacketsReceived']
      .map((k) => [k, during(k, last, start.consumer)])),
    producer: Object.fromEntries(['packetsSent', 'nackCount', 'retransmittedPacketsSent']
      .map((k) => [k, during(k, sent.video, start.producer)])),
    // What the server counts on the producer's upstream: NACKs it sent, packets it received.
    server: Object.fromEntries(['packetsReceived', 'nackCount'].map((k) => [k, during(k, server, start.server)])),
    // The producer's video packets on their way to the server: dropped by the rule, let through.
    producerLeg: { dropped: drops.producer_video_dropped, passed: drops.producer_video_passed },
    producerEstimate: sent.availableOutgoingBitrate
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
