// SRTP crypto with a peer that offers no AEAD-AES-GCM profile. libwebrtc as @roamhq/wrtc builds
// it leaves GCM off (its CryptoOptions default), so the server, which offers and accepts the
// GCM profiles first (Chromium's legs use them: browser.test.mjs), must still connect with
// AES-CM + HMAC-SHA1. Read from the peers' own transport stats, on both engines.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client, createServer, startCall, closeEverything, uniqueId } from './helpers.mjs'

after(closeEverything)
// libwebrtc (wrtc) can crash at a natural exit once tracks were used: exit explicitly.
after(() => setImmediate(() => process.exit(process.exitCode ?? 0)))

async function ciphersOf (pc) {
  const ciphers = []
  ;(await pc.getStats()).forEach((s) => { if (s.type === 'transport' && s.srtpCipher) ciphers.push(s.srtpCipher) })
  return ciphers
}

for (const engine of ['loops', 'tasks']) {
  test(`a peer without GCM profiles connects and decodes with AES_CM_128_HMAC_SHA1_80 (${engine})`, { timeout: 60000 }, async () => {
    const server = createServer(undefined, { engine })
    const room = uniqueId()
    const a = new Client(server, room, 'a')
    const b = new Client(server, room, 'b')
    await startCall(server, room, a, b)
    assert.deepEqual(await ciphersOf(a.upstream), ['AES_CM_128_HMAC_SHA1_80'], "producer's leg")
    assert.deepEqual(await ciphersOf(b.downstreams.get('a')), ['AES_CM_128_HMAC_SHA1_80'], "consumer's leg")
  })
}
