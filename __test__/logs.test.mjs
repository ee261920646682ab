// Logs: warnings and errors only by default, to stderr, one line each with room and user ids;
// the level from MEDIASERVER_LOG (RUST_LOG syntax) or the logLevel option; or to a callback.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const addon = fileURLToPath(new URL('../index.js', import.meta.url))
const T = { timeout: 60000 }

/** Runs `body` (async JS, with `MediaServer` in scope) in a child node; returns {status, stdout, stderr}. */
function child (body, env = {}) {
  const script = `const { MediaServer } = require(${JSON.stringify(addon)});\n(async () => {\n${body}\n})().catch((e) => { console.error('FAILED', e); process.exit(1) })`
  const run = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, MEDIASERVER_LOG: '', ...env }, encoding: 'utf8', timeout: 30000 })
  return run
}

const SCENARIO = `
  const m = new MediaServer({ listenIp: '127.0.0.1' })
  await m.createRoom('log-room', { userId: 'log-user' })
  await m.addUser('log-room', 'second-user')
  await m.removeUser('log-room', 'second-user')
  await m.deleteRoom('log-room')
  await m.close()
`

test('default: nothing below warnings on stderr', T, () => {
  const run = child(SCENARIO)
  assert.equal(run.status, 0, run.stderr)
  assert.doesNotMatch(run.stderr, /INFO|DEBUG/, run.stderr)
})

test('MEDIASERVER_LOG=info: one line per event on stderr, with the room and user ids', T, () => {
  const run = child(SCENARIO, { MEDIASERVER_LOG: 'info' })
  assert.equal(run.status, 0, run.stderr)
  const lines = run.stderr.trim().split('\n')
  const added = lines.find((l) => l.includes('user added'))
  assert.ok(added, run.stderr)
  assert.match(added, /INFO .*user added.* room=log-room user=second-user/)
  assert.match(lines.find((l) => l.includes('room created')), /room=log-room user=log-user/)
  assert.ok(lines.every((l) => /^\d{4}-\d\d-\d\dT\S+ +(INFO|WARN|ERROR) /.test(l)), run.stderr)
})

test('the logLevel option overrides MEDIASERVER_LOG; a filter per module works', T, () => {
  const run = child(SCENARIO.replace("{ listenIp: '127.0.0.1' }", "{ listenIp: '127.0.0.1', logLevel: 'warn,mediaserver_rs::sfu::room=info' }"), { MEDIASERVER_LOG: 'error' })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stderr, /user added/, 'room logs at info')
  assert.doesNotMatch(run.stderr, /room created/, 'mediaserver_rs::sfu stays at warn')
})

test('onLog: records go to the callback (and not to stderr) as plain objects', T, () => {
  const run = child(`
    const records = []
    const m = new MediaServer({ listenIp: '127.0.0.1', logLevel: 'info', onLog: (r) => records.push(r) })
    await m.createRoom('cb-room', { userId: 'cb-user' })
    await m.close()
    await new Promise((resolve) => setTimeout(resolve, 200))
    console.log(JSON.stringify(records))
  `)
  assert.equal(run.status, 0, run.stderr)
  assert.doesNotMatch(run.stderr, /room created/)
  const records = JSON.parse(run.stdout)
  const created = records.find((r) => r.message === 'room created')
  assert.ok(created, run.stdout)
  assert.deepStrictEqual({ ...created, time: 0 }, { level: 'info', target: 'mediaserver_rs::sfu', message: 'room created', fields: { room: 'cb-room', user: 'cb-user' }, time: 0 })
  assert.ok(Math.abs(created.time - Date.now()) < 60000)
})
