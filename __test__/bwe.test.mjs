// Bandwidth estimation per consumer: one consumer's downlink is limited (nftables, inside a
// private network namespace: see bwe-call.mjs). It moves to a lower simulcast layer and keeps
// decoding; the other consumer keeps the top layer; the producer's send rate does not fall;
// and once the limit goes, the weak consumer comes back to the top layer.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runInPrivateNetwork } from './namespace.mjs'

test('a consumer on a limited downlink moves to a lower layer and back; the others and the producer do not notice', { timeout: 200000 }, () => {
  const r = runInPrivateNetwork(new URL('./bwe-call.mjs', import.meta.url), { tag: 'BWE-RESULT', timeout: 190000 })
  console.log(`bwe: ${JSON.stringify(r)}`)
  assert.ok(r.dropped > 0, 'the limit dropped nothing: was the top layer under it?')
  assert.ok(r.weakDuring.layers.current < 2 && r.weakDuring.estimate !== null, `weak is on a lower layer under the limit: ${JSON.stringify(r.weakDuring)}`)
  assert.ok(r.weakWidthDuring < r.topWidth, `weak decodes a smaller picture: ${r.weakWidthDuring} (top ${r.topWidth})`)
  // Each try of the top layer (the estimate grows back into it, and the limit cuts it again)
  // costs weak a keyframe wait; it still decodes a good share of what strong does.
  assert.ok(r.weakFramesDuring > 0.2 * r.strongFramesDuring, `weak kept decoding: ${r.weakFramesDuring} frames in 8 s, strong ${r.strongFramesDuring}`)
  assert.equal(r.strongDuring.layers.current, 2, 'strong keeps the top layer')
  assert.equal(r.strongDuring.frameWidth, r.topWidth)
  assert.equal(r.strongDuring.estimate, null, 'strong lost nothing: no limit on its estimate')
  assert.ok(r.producerDuring > 0.7 * r.producerBefore, `the producer's send rate held: ${r.producerBefore} -> ${r.producerDuring} bit/s`)
})
