// announcedIp behind a real 1:1 mapping: in a private network namespace (`unshare -n`, only
// loopback, so nothing can leave the machine), nftables maps 127.0.0.2 to 127.0.0.1. The server
// binds 127.0.0.1 and announces 127.0.0.2: its candidates name only the announced address, and
// the call works through the mapping (the server's packets outside a mapped flow are dropped, so
// no direct path can stand in for it).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const script = fileURLToPath(new URL('./nat-call.mjs', import.meta.url))

test('announcedIp: candidates carry only the announced address, and media flows through the 1:1 mapping', { timeout: 120000 }, () => {
  const run = spawnSync('unshare', ['-n', '--', 'sh', '-c', `ip link set lo up && exec "${process.execPath}" "${script}"`], {
    encoding: 'utf8', timeout: 100000
  })
  const line = run.stdout.split('\n').find((l) => l.startsWith('NAT-RESULT '))
  assert.ok(line, `no result (status ${run.status}, signal ${run.signal}): ${run.stderr.slice(-2000)}`)
  const r = JSON.parse(line.slice('NAT-RESULT '.length))
  assert.equal(r.error, undefined, r.error)
  assert.deepStrictEqual(r.addresses, ['127.0.0.2'], 'the server\'s candidates name the announced address only')
  assert.ok(r.framesDecoded > 10 && r.audioPackets > 0, JSON.stringify(r))
  assert.equal(r.upstreamRemote, '127.0.0.2', 'the producer reaches the server at its announced address')
  assert.equal(r.downstreamRemote, '127.0.0.2', 'so does the consumer')
})
