// No head-of-line blocking: a consumer that cannot keep up loses packets at its own bounded
// queue, counted in its stats, and the other consumers of the same producer on the same media
// loop keep their decoded frame rate. Runs slow-consumer-call.mjs in a private network
// namespace (`unshare -n`, only loopback) whose nftables rules make one ICE-TCP consumer's link
// too slow for the video; its small TCP receive buffers (net.ipv4.tcp_rmem is per namespace)
// make the backlog reach the server in seconds rather than a minute.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runInPrivateNetwork } from './namespace.mjs'

const setup = 'ip link set lo up && sysctl -q -w net.ipv4.tcp_rmem="4096 16384 32768"'

test('a consumer too slow for the video loses packets at its own queue; the others keep their frame rate', { timeout: 180000 }, () => {
  const r = runInPrivateNetwork(new URL('./slow-consumer-call.mjs', import.meta.url), { tag: 'SLOW-RESULT', setup })
  console.log(`decoded frames/s before and while S was too slow: ${JSON.stringify(r.rates)}; S: ${JSON.stringify(r.slow)}`)
  assert.ok(r.slow.dropped > 0, `the slow consumer's queue dropped nothing: ${JSON.stringify(r.slow)}`)
  assert.deepEqual(r.othersDropped, [0, 0], 'the UDP consumers lost nothing at the server')
  for (const [who, [before, during]] of Object.entries(r.rates)) {
    assert.ok(before > 5, `${who} decoded only ${before} frames/s before`)
    assert.ok(during >= 0.6 * before, `${who} fell from ${before} to ${during} frames/s while S was too slow`)
  }
})
