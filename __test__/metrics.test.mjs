// Metrics: `metrics()` and `GET /metrics` scraped during a real call (two libwebrtc clients
// through the server), on each engine, read with a strict parser of the text format
// (prometheus.mjs): the counts match the call (rooms, users, connections by direction and
// state), the counters move while media flows, the call's end shows, and the process's own
// figures are there. The HTTP route honours the token like every route.
//
// Ports: media on 127.0.0.1, 48700-48749 (loops), 48750-48799 (tasks), 48800-48809 (options).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { Client, createServer, closeServer, closeEverything, expectCode, safeJson, startCall, waitFor } from './helpers.mjs'
import { request } from './http-client.mjs'
import { parseMetrics } from './prometheus.mjs'

const require = createRequire(import.meta.url)
const { serve, metricsContentType } = require('../serve.js')

const T = { timeout: 90000 }

after(async () => {
  await closeEverything()
  setImmediate(() => process.exit(process.exitCode ?? 0))
})

/** Every family metrics() writes of the server (the process's come after them). */
const SERVER_FAMILIES = [
  'mediaserver_rooms', 'mediaserver_users', 'mediaserver_connections', 'mediaserver_connection_state_changes_total',
  'mediaserver_live_connections', 'mediaserver_ports_in_use', 'mediaserver_forwarded_packets_total',
  'mediaserver_forwarded_bytes_total', 'mediaserver_nacks_received_total', 'mediaserver_plis_received_total',
  'mediaserver_firs_received_total', 'mediaserver_nacks_sent_total', 'mediaserver_plis_sent_total'
]
const PROCESS_FAMILIES = [
  'process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total',
  'process_start_time_seconds', 'process_resident_memory_bytes',
  ...(process.platform === 'linux' ? ['process_virtual_memory_bytes', 'process_open_fds', 'process_max_fds'] : []),
  'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes'
]
const OPEN_STATES = ['new', 'connecting', 'connected', 'disconnected', 'failed']

/** The open connections of `m` per direction and state, e.g. { upstream: { connected: 1, … }, … }. */
function connections (m) {
  const out = {}
  for (const direction of ['upstream', 'downstream']) {
    out[direction] = Object.fromEntries(OPEN_STATES.map((state) => [state, m.get('mediaserver_connections', { direction, state })]))
  }
  return out
}

const only = (state, n) => Object.fromEntries(OPEN_STATES.map((s) => [s, s === state ? n : 0]))

for (const [engine, portRange] of [['loops', { min: 48700, max: 48749 }], ['tasks', { min: 48750, max: 48799 }]]) {
  test(`during a call (engine '${engine}'): metrics() and GET /metrics count it, and the counters move`, T, async () => {
    const server = createServer(portRange, { engine })
    const token = randomBytes(16).toString('hex')
    const http = await serve({ host: '127.0.0.1', port: 0, media: server, token })
    const scrapeHttp = async () => {
      const res = await request(http.url, 'GET', '/metrics', { token })
      assert.equal(res.status, 200, res.text.slice(0, 500))
      assert.equal(res.contentType, 'text/plain; version=0.0.4; charset=utf-8')
      return parseMetrics(res.text)
    }
    const A = new Client(server, 'metered', 'A')
    const B = new Client(server, 'metered', 'B')
    try {
      const idle = parseMetrics(await server.metrics())
      assert.deepStrictEqual([...idle.families.keys()], [...SERVER_FAMILIES, ...PROCESS_FAMILIES])
      for (const [name, family] of idle.families) assert.ok(family.help.length > 10, `${name} has a HELP text`)
      assert.equal(idle.get('mediaserver_rooms'), 0)
      assert.deepStrictEqual(connections(idle), { upstream: only('new', 0), downstream: only('new', 0) })

      await startCall(server, 'metered', A, B)
      const call = await waitFor(async () => {
        const m = parseMetrics(await server.metrics())
        const c = connections(m)
        return c.upstream.connected === 1 && c.downstream.connected === 1 && m.get('mediaserver_forwarded_packets_total') > 0 ? m : null
      }, { timeout: 15000, message: 'metrics() shows the call connected and forwarding' })
      const stats = await server.stats()
      assert.equal(call.get('mediaserver_rooms'), 1)
      assert.equal(call.get('mediaserver_users'), 2)
      assert.deepStrictEqual(connections(call), { upstream: only('connected', 1), downstream: only('connected', 1) },
        'one upstream, one downstream, both connected, nothing else open')
      const entered = (direction, state) => call.get('mediaserver_connection_state_changes_total', { direction, state })
      assert.equal(entered('upstream', 'new'), 1, 'one upstream made')
      assert.equal(entered('downstream', 'new'), 1, 'one downstream made')
      assert.ok(entered('upstream', 'connected') >= 1 && entered('downstream', 'connected') >= 1)
      assert.equal(entered('upstream', 'closed') + entered('downstream', 'closed'), 0)
      assert.equal(call.get('mediaserver_ports_in_use'), stats.portsInUse)
      assert.ok(call.get('mediaserver_live_connections') >= 2)
      const packets = call.get('mediaserver_forwarded_packets_total')
      const bytes = call.get('mediaserver_forwarded_bytes_total')
      assert.ok(bytes > packets * 12, `${bytes} bytes in ${packets} packets: an RTP header is 12 bytes`)
      assert.ok(call.get('mediaserver_plis_sent_total') >= 1, 'the server asked A for a keyframe when B joined')
      for (const name of ['mediaserver_nacks_received_total', 'mediaserver_plis_received_total', 'mediaserver_firs_received_total', 'mediaserver_nacks_sent_total']) {
        assert.ok(Number.isInteger(call.get(name)) && call.get(name) >= 0, name)
      }
      // The process's own figures.
      assert.ok(call.get('process_cpu_seconds_total') > 0)
      assert.ok(Math.abs(call.get('process_cpu_seconds_total') -
        call.get('process_cpu_user_seconds_total') - call.get('process_cpu_system_seconds_total')) < 1e-6)
      assert.ok(call.get('process_resident_memory_bytes') > 10e6, `RSS ${call.get('process_resident_memory_bytes')}`)
      assert.ok(call.get('nodejs_heap_size_used_bytes') > 0)
      const started = Date.now() / 1000 - process.uptime()
      assert.ok(Math.abs(call.get('process_start_time_seconds') - started) < 5, `start time ${call.get('process_start_time_seconds')} vs ${started}`)
      if (process.platform === 'linux') assert.ok(call.get('process_open_fds') > 3)

      // Over HTTP: the same families, counters that only grow, and media that keeps flowing.
      const overHttp = await scrapeHttp()
      assert.deepStrictEqual([...overHttp.families.keys()], [...call.families.keys()])
      assert.deepStrictEqual(connections(overHttp), connections(call))
      const later = await waitFor(async () => {
        const m = await scrapeHttp()
        return m.get('mediaserver_forwarded_packets_total') > packets + 50 ? m : null
      }, { timeout: 10000, message: 'GET /metrics: forwarded packets grow while media flows' })
      assert.ok(later.get('mediaserver_forwarded_bytes_total') > bytes)
      assert.ok(later.get('process_cpu_seconds_total') >= call.get('process_cpu_seconds_total'))
      assert.ok(later.get('mediaserver_plis_sent_total') >= call.get('mediaserver_plis_sent_total'))

      // The token guards it like every route.
      const denied = await request(http.url, 'GET', '/metrics')
      assert.equal(denied.status, 401)
      assert.equal(denied.body?.error?.code, 'UNAUTHENTICATED')
      const wrong = await request(http.url, 'GET', '/metrics', { token: token + 'x' })
      assert.equal(wrong.status, 401)

      // The call ends: its connections leave the gauge and are counted closed.
      await server.removeUser('metered', 'A')
      await server.removeUser('metered', 'B')
      const ended = await waitFor(async () => {
        const m = parseMetrics(await server.metrics())
        return m.families.get('mediaserver_connections').samples.every((s) => s.value === 0) ? m : null
      }, { timeout: 10000, message: 'no connection open after both users left' })
      assert.equal(ended.get('mediaserver_rooms'), 0, 'the last user out deleted the room')
      assert.equal(ended.get('mediaserver_connection_state_changes_total', { direction: 'upstream', state: 'closed' }), 1)
      assert.equal(ended.get('mediaserver_connection_state_changes_total', { direction: 'downstream', state: 'closed' }), 1)
      assert.ok(ended.get('mediaserver_forwarded_packets_total') >= later.get('mediaserver_forwarded_packets_total'), 'a counter never goes down')
    } finally {
      A.close()
      B.close()
      await http.close()
      await closeServer(server)
    }
  })
}

test('metrics({ process: false }) leaves the process out; bad options are INVALID_ARGUMENT; a closed server is SERVER_CLOSED (503 over HTTP)', T, async () => {
  const server = createServer({ min: 48800, max: 48809 })
  const http = await serve({ host: '127.0.0.1', port: 0, media: server })
  try {
    const m = parseMetrics(await server.metrics({ process: false }))
    assert.deepStrictEqual([...m.families.keys()], SERVER_FAMILIES)
    assert.deepStrictEqual([...parseMetrics(await server.metrics({ process: true })).families.keys()], [...SERVER_FAMILIES, ...PROCESS_FAMILIES])
    assert.deepStrictEqual([...parseMetrics(await server.metrics({})).families.keys()], [...SERVER_FAMILIES, ...PROCESS_FAMILIES])
    await expectCode(server.metrics({ process: 'no' }), 'INVALID_ARGUMENT')
    await expectCode(server.metrics({ proces: false }), 'INVALID_ARGUMENT')
    await expectCode(server.metrics('text'), 'INVALID_ARGUMENT')
    assert.equal(metricsContentType, 'text/plain; version=0.0.4; charset=utf-8')

    await server.createRoom('kept', { userId: 'u' })
    const res = await request(http.url, 'GET', '/metrics')
    assert.equal(res.status, 200)
    assert.equal(parseMetrics(res.text).get('mediaserver_users'), 1, safeJson(res.text.slice(0, 300)))

    await closeServer(server)
    await expectCode(server.metrics(), 'SERVER_CLOSED')
    const closed = await request(http.url, 'GET', '/metrics')
    assert.equal(closed.status, 503)
    assert.equal(closed.body?.error?.code, 'SERVER_CLOSED')
  } finally {
    await http.close()
    await closeServer(server)
  }
})

test('the parser of these tests rejects what Prometheus would', () => {
  const good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="a \\"b\\" \\\\ \\n"} 3\n# HELP b B.\n# TYPE b gauge\nb -Inf\n'
  const parsed = parseMetrics(good)
  assert.equal(parsed.get('a_total', { x: '1', y: 'a "b" \\ \n' }), 3)
  assert.equal(parsed.get('b'), -Infinity)
  const bad = {
    'no final line feed': good.slice(0, -1),
    'a sample before any TYPE': 'a 1\n',
    'TYPE without HELP': '# TYPE a gauge\na 1\n',
    'a counter without _total': '# HELP a A.\n# TYPE a counter\na 1\n',
    'a gauge named _total': '# HELP a_total A.\n# TYPE a_total gauge\na_total 1\n',
    'a sample of another family': '# HELP a A.\n# TYPE a gauge\nb 1\n',
    'a family twice': '# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\na 2\n',
    'a series twice': '# HELP a A.\n# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',
    'a bad value': '# HELP a A.\n# TYPE a gauge\na one\n',
    'an unquoted label value': '# HELP a A.\n# TYPE a gauge\na{x=1} 1\n',
    'a family without samples': '# HELP a A.\n# TYPE a gauge\n',
    'a blank line': '# HELP a A.\n# TYPE a gauge\n\na 1\n'
  }
  for (const [what, text] of Object.entries(bad)) assert.throws(() => parseMetrics(text), Error, what)
})
