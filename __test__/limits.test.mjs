// Limits (maxRooms, maxUsersPerRoom, maxConnections): past them RESOURCE_EXHAUSTED, at once,
// and the state stays as it was; media already flowing keeps flowing.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client, createServer, closeServer, closeEverything, expectCode, statsOf, withTimeout, safeJson, startCall } from './helpers.mjs'

const T = { timeout: 90000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

test('maxRooms and maxUsersPerRoom: refused past the limit, nothing created, room freed again', T, async () => {
  const server = createServer(null, { maxRooms: 2, maxUsersPerRoom: 2 })
  try {
    await server.createRoom('r1', { userId: 'a' })
    await server.createRoom('r2')
    const err = await expectCode(server.createRoom('r3', { userId: 'x' }), 'RESOURCE_EXHAUSTED')
    assert.match(err.message, /maxRooms/)
    await expectCode(server.createRoom(null), 'RESOURCE_EXHAUSTED')
    await server.addUser('r1', 'b')
    assert.match((await expectCode(server.addUser('r1', 'c', { userInfo: { n: 1 } }), 'RESOURCE_EXHAUSTED')).message, /maxUsersPerRoom/)
    assert.deepStrictEqual(await statsOf(server), { rooms: 2, users: 2, upstreamConnections: 0, downstreamConnections: 0, liveConnections: 0 })
    await server.deleteRoom('r2')
    await server.createRoom('r3') // a place is free again
    await server.removeUser('r1', 'b')
    await server.addUser('r1', 'c')
  } finally {
    await closeServer(server)
  }
})

test('maxConnections: a join that needs one connection too many is refused; the call in progress is untouched', T, async () => {
  const server = createServer({ min: 48400, max: 48449 }, { maxConnections: 2 })
  const A = new Client(server, 'cap', 'A')
  const B = new Client(server, 'cap', 'B')
  try {
    await startCall(server, 'cap', A, B) // A's upstream + A -> B: two connections
    const before = await statsOf(server)
    const err = await expectCode(withTimeout(server.addUser('cap', 'C'), 5000, 'addUser past maxConnections'), 'RESOURCE_EXHAUSTED')
    assert.match(err.message, /maxConnections/)
    assert.deepStrictEqual(await statsOf(server), before, 'C was not added and no connection was made')
    // B producing needs B's upstream + B -> A: refused too, and B is still not producing.
    const { makeOffer, createSource } = await import('./helpers.mjs')
    const source = createSource({})
    await expectCode(server.produce('cap', 'B', { offer: await makeOffer(source) }), 'RESOURCE_EXHAUSTED')
    await expectCode(server.stopProduce('cap', 'B'), 'NOT_PRODUCING')
    assert.deepStrictEqual(await statsOf(server), before, safeJson(await server.stats()))
    const s = await B.inboundStats('A')
    await B.waitDecoding('A', { above: s.video.framesDecoded + 10 })
    // Once A leaves, its two connections are free again.
    await server.removeUser('cap', 'A')
    await server.addUser('cap', 'C')
  } finally {
    A.close()
    B.close()
    await closeServer(server)
  }
})

test('bad limits and options are INVALID_ARGUMENT at construction', T, async () => {
  const { MediaServer } = await import('../index.js').then((m) => m.default ?? m)
  for (const options of [{ maxRooms: -1 }, { maxConnections: 1.5 }, { offerTimeoutMs: 0 }, { udpPort: 5, portRange: { min: 1, max: 2 } }, { nosuchoption: 1 }, { enableTcp: 'yes' }, { logLevel: 'x=[[' }]) {
    assert.throws(() => new MediaServer({ listenIp: '127.0.0.1', ...options }), (err) => err.code === 'INVALID_ARGUMENT', safeJson(options))
  }
})
