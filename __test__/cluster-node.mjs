// One cluster node in its own process, for __test__/cluster.test.mjs and bench/cluster-rpc.mjs:
// a MediaServer with the `cluster` option given as JSON in argv[2], driven over IPC.
//
//   parent -> child  { id, method, args }   a MediaServer method ('close' included)
//   child -> parent  { id, value } | { id, error: { code, message } }
//                    { ready: nodeId }       once Redis is reached and the node registered
//                    { event }               every event the server emits, as it emits it
//
// The node exits when its parent goes away (the IPC channel closes), so a test that dies never
// leaves it behind.

import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'

const require = createRequire(import.meta.url)
const { MediaServer } = require('../index.js')

const options = JSON.parse(process.argv[2])
/** process.send while the parent is there (a node outlives its IPC channel by a moment when closing). */
const send = (message) => { if (process.connected) process.send(message) }
const media = new MediaServer(options)
for (const name of ['connectionstatechange', 'constraintschange', 'roomclosed', 'offertimeout', 'activespeaker', 'layerschange']) {
  media.on(name, (event) => send({ event }))
}

process.on('message', async ({ id, method, args = [] }) => {
  try {
    const value = await media[method](...args)
    send({ id, value: value ?? null })
  } catch (err) {
    send({ id, error: { code: err?.code, message: String(err?.message ?? err) } })
  }
  if (method === 'close') process.disconnect?.()
})
process.on('disconnect', () => {
  media.close().catch(() => {}).finally(() => process.exit(0))
})

for (;;) {
  const stats = await media.stats()
  if (stats.redisConnected) break
  await sleep(20)
}
send({ ready: options.cluster.nodeId })
