// A two-page call under 5% packet loss, inside a private network namespace (`unshare -n`) that
// holds only loopback, so nothing can leave the machine. Once the call is up, the namespace's
// loopback drops 5% of UDP packets at random. The issue asked for `tc qdisc ... netem loss 5%`;
// this kernel is built without netem (CONFIG_NET_SCH_NETEM), so the same loss is made with
// nftables (`numgen random mod 100 < 5 drop`), which it has, on the input hook: on the output
// hook Chromium sees the drop (EPERM) and sends the packet again, so its own legs lost almost
// nothing (see loss-call.mjs).
// The loss starts after the connections are up: with loss from the first packet, webrtc-rs
// 0.21.1's DTLS handshake stalls in about one run in four (connectionState stays 'connecting'
// with ICE 'connected'); that is reported on its own, and this test is about media under loss.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runInPrivateNetwork } from './namespace.mjs'

test('5% loss on every UDP packet: the call still decodes, with NACKs in both directions', { timeout: 180000 }, () => {
  const r = runInPrivateNetwork(new URL('./loss-call.mjs', import.meta.url), { tag: 'LOSS-RESULT' })
  console.log(`under 5% loss for ${r.seconds} s: ${r.framesDecodedDuring} frames decoded, ` +
    `consumer: ${JSON.stringify(r.consumer)}; producer: ${JSON.stringify(r.producer)}; ` +
    `server, upstream: ${JSON.stringify(r.server)}; producer's video to the server: ${JSON.stringify(r.producerLeg)}`)
  assert.ok(r.consumer.nackCount > 0, 'the consumer sent no NACK: did the loss rule drop anything?')
  assert.ok(r.framesDecodedDuring > r.seconds * 5, `only ${r.framesDecodedDuring} frames decoded in ${r.seconds} s`)
  assert.ok(r.consumer.retransmittedPacketsReceived > 0, 'the server answered none of the consumer\'s NACKs')
  // The server can only NACK what it lost: first, that the loss reached the producer's video.
  assert.ok(r.producerLeg.dropped > 0 && r.producerLeg.passed > 0,
    `the loss rule dropped none of the producer's video packets to the server: ${JSON.stringify(r.producerLeg)}`)
  assert.ok(r.server.nackCount > 0,
    `the server sent the producer no NACK, though ${r.producerLeg.dropped} of its video packets were dropped`)
  assert.ok(r.producer.nackCount > 0,
    `the producer counted none of the server's ${r.server.nackCount} NACKs (${r.producerLeg.dropped} of its video packets were dropped)`)
})
