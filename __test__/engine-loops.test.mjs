// The engines. The suite runs on the default, the media loops with one loop per core; here the
// media file also runs on one loop (workers: 1) and on the older 'tasks' engine (webrtc-rs's
// async connections, kept until it is removed), and rooms placed on different loops carry
// media at the same time.

import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { availableParallelism } from 'node:os'
import { Client, createServer, closeEverything, createSource, candidateLines } from './helpers.mjs'

const here = (name) => fileURLToPath(new URL(name, import.meta.url))

let source
before(() => { source = createSource() })
after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Runs a test file of the suite on `engine` (with `workers` loops); it must pass whole. */
function runOn (file, engine, workers) {
  const env = { ...process.env, MEDIASERVER_ENGINE: engine }
  // A test file run from inside a test reports to its parent runner in its own protocol
  // unless this is cleared; it reports TAP to us instead.
  delete env.NODE_TEST_CONTEXT
  if (workers) env.MEDIASERVER_WORKERS = String(workers)
  else delete env.MEDIASERVER_WORKERS
  const run = spawnSync(process.execPath, ['--test', '--test-reporter=tap', here(file)], { env, encoding: 'utf8', timeout: 300000 })
  const counts = Object.fromEntries([...run.stdout.matchAll(/^# (pass|fail|cancelled) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]))
  const failed = run.stdout.split('\n').filter((l) => l.startsWith('not ok')).join('\n')
  console.log(`${file} on ${engine} (${workers ?? 'default'} workers): ${JSON.stringify(counts)}`)
  assert.equal(run.status, 0, `${file} failed on ${engine} (exit ${run.status} ${run.signal ?? ''}):\n${failed}\n${run.stderr.slice(-2000)}`)
  assert.ok(counts.pass > 0 && !counts.fail, `${file}: ${JSON.stringify(counts)}`)
}

test('media.test on one loop', { timeout: 320000 }, () => runOn('media.test.mjs', 'loops', 1))
test('media.test on the tasks engine', { timeout: 320000 }, () => runOn('media.test.mjs', 'tasks'))

test('the default engine is the loops, one per core: connections share the loops\' ports', { timeout: 60000 }, async () => {
  const server = createServer()
  const ports = new Set()
  const rooms = availableParallelism() + 1
  for (let i = 0; i < rooms; i++) {
    const producer = new Client(server, `default-${i}`, 'p', { source })
    await server.createRoom(`default-${i}`, { userId: 'p' })
    const res = await producer.produce()
    for (const line of candidateLines(res.answer.sdp)) ports.add(Number(line.split(' ')[5]))
  }
  // The 'tasks' engine would name a port per connection: one more than there are cores.
  assert.ok(ports.size >= 1 && ports.size <= availableParallelism(), `${rooms} upstreams name ports ${[...ports]}`)
  assert.equal((await server.stats()).portsInUse, 0, 'no port leased per connection')
})

test('two rooms on two loops: each on its own port, both decode at once', { timeout: 60000 }, async () => {
  const server = createServer({ min: 45900, max: 45909 }, { engine: 'loops', workers: 2 })
  const ports = new Set()
  const consumers = []
  for (const room of ['first', 'second']) {
    const producer = new Client(server, room, 'p', { source })
    const consumer = new Client(server, room, 'c')
    await server.createRoom(room, { userId: 'p' })
    await server.addUser(room, 'c')
    const res = await producer.produce()
    for (const line of candidateLines(res.answer.sdp)) ports.add(Number(line.split(' ')[5]))
    await consumer.consumeAll(res.outbound, { from: 'p' })
    consumers.push(consumer)
  }
  assert.equal(ports.size, 2, `the rooms' connections name two loop ports: ${[...ports]}`)
  for (const port of ports) assert.ok(port >= 45900 && port <= 45909, `loop port ${port} from portRange`)
  const before = await Promise.all(consumers.map((c) => c.waitDecoding('p')))
  const after = await Promise.all(consumers.map((c, i) => c.waitDecoding('p', { above: before[i].video.framesDecoded + 30 })))
  assert.ok(after.every((s) => s.audio.packetsReceived > 0))
  const stats = await server.stats()
  assert.equal(stats.portsInUse, 0, 'connections on the loops lease no port of their own')
})

test('MEDIASERVER_ENGINE reaches the server the test files above make (the loops take workers, the tasks refuse it)', () => {
  const script = "const { MediaServer } = require(process.argv[1]); try { new MediaServer({ listenIp: '127.0.0.1', workers: 1 }).close().then(() => console.log('accepted')) } catch (e) { console.log(e.code) }"
  const run = (engine) => spawnSync(process.execPath, ['-e', script, here('../index.js')], {
    env: { ...process.env, MEDIASERVER_ENGINE: engine }, encoding: 'utf8', timeout: 30000
  }).stdout.trim()
  assert.equal(run('loops'), 'accepted')
  assert.equal(run('tasks'), 'INVALID_ARGUMENT')
})

test('MEDIASERVER_WORKERS alone reaches the loops; it gives way to udpPort (one port, one loop)', () => {
  const script = "const { MediaServer } = require(process.argv[1]); try { new MediaServer({ listenIp: '127.0.0.1', ...JSON.parse(process.argv[2]) }).close().then(() => console.log('accepted')) } catch (e) { console.log(e.code) }"
  const run = (workers, options = {}) => {
    const env = { ...process.env, MEDIASERVER_WORKERS: workers }
    delete env.MEDIASERVER_ENGINE
    return spawnSync(process.execPath, ['-e', script, here('../index.js'), JSON.stringify(options)], { env, encoding: 'utf8', timeout: 30000 }).stdout.trim()
  }
  assert.equal(run('0'), 'INVALID_ARGUMENT', 'workers: 0 from the environment is read, and refused')
  assert.equal(run('2'), 'accepted')
  assert.equal(run('2', { udpPort: 0 }), 'accepted', 'udpPort runs one loop whatever the environment says')
  assert.equal(run('2', { engine: 'tasks' }), 'accepted', 'the tasks engine takes no workers, from the environment neither')
})
