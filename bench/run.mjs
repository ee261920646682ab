#!/usr/bin/env node
// The benchmark, in one command: `node bench/run.mjs` (or `--quick` for a ~2 minute smoke run).
//
// For each scenario size it starts a fresh server process (ours, mediasoup with one worker,
// mediasoup with one worker per core), runs the load generator against it (a separate process),
// and keeps stepping the size up until the server misses the ceiling criteria (loss >= 0.1% or
// p99 >= 50 ms). Prints the tables, writes bench/results/<timestamp>.json and a PNG plot.
//
// Options: --quick, --duration S, --warmup S, --room 2,4,8 --fanout 10,50 (sizes),
// --servers ours-loops-1w,ours-loops-2w,mediasoup-1w,mediasoup-2w,mediasoup327-1w,mediasoup327-2w (the
// default; ours-loops-Nw = our 'loops' engine, the addon's default, with N media loops; `ours` = our
// old 'tasks' engine, runnable but not in the default list; mediasoup-Nw = 3.12.16, mediasoup327-Nw =
// 3.27.1 built by mediasoup-new/build.sh, run by its Node 22), --direct 50,200 (generator-only calibration sizes),
// --sockets client|thread (the generator's sockets: one per client connection, the default, or one
// per generator thread as before 2026-12-02), --socket-check fanout:100 (that point measured again
// with --sockets thread, for the servers where that works: ours and mediasoup),
// --threads T (generator threads), --no-wait (do not wait for a quiet machine), --no-plot,
// --rooms-fanout 100,150 --rooms-count K (scenario 'fanout-rooms': K independent rooms, each one
// publisher and M subscribers, at once: what several media loops carry; default none, K = 2),
// --max-failures K (steps past the first miss, default 0), --no-retry (a miss is recorded as it is,
// not measured once more).
import { spawn, execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync, readFileSync, statSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import os from 'node:os'

const BENCH = dirname(fileURLToPath(import.meta.url))
const LOADGEN = join(BENCH, 'loadgen/target/release/loadgen')
const MS_WORKER = join(BENCH, 'servers/node_modules/mediasoup/worker/out/Release/mediasoup-worker')
// mediasoup 3.27.1: built offline by mediasoup-new/build.sh into mediasoup-new/app-3.27.1, with its own
// Node 22 (mediasoup >= 3.14 needs Node >= 22; the system Node stays for the others).
const MS327_APP = join(BENCH, 'mediasoup-new/app-3.27.1')
const MS327_NODE = join(BENCH, 'mediasoup-new/bin/node')
const MS327_WORKER = join(MS327_APP, 'node_modules/mediasoup/worker/out/Release/mediasoup-worker')
const VENV_PY = join(BENCH, '.venv/bin/python')
const HTTP_PORT = 50000
const GEN_PORT = 50010
const RTC_MIN = 51000
const RTC_MAX = 59999
const LOSS_MAX = 0.001
const P99_MAX_MS = 50

// ---------------------------------------------------------------------------------------------
const argv = process.argv.slice(2)
const flag = (name) => argv.includes(`--${name}`)
const opt = (name, def) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : def }
const list = (s) => String(s).split(',').filter(Boolean).map(Number)
const quick = flag('quick')
const cfg = {
  quick,
  duration: Number(opt('duration', quick ? 4 : 10)),
  warmup: Number(opt('warmup', quick ? 1 : 3)),
  room: list(opt('room', quick ? '2,4,8' : '2,4,6,8,10,12,14,16,20,24')),
  fanout: list(opt('fanout', quick ? '10,50' : '10,25,50,100,150,200,300,400,500,600')),
  direct: list(opt('direct', quick ? '50' : '100,200,400')),
  'fanout-rooms': list(opt('rooms-fanout', '')),
  roomsCount: Number(opt('rooms-count', 2)),
  // Generator check: one mid-load point measured again with other generator thread counts;
  // the same server figures mean the generator was not what limited them.
  genCheck: opt('gen-check', quick ? '' : 'fanout:100:1,3'),
  servers: String(opt('servers', 'ours-loops-1w,ours-loops-2w,mediasoup-1w,mediasoup-2w,mediasoup327-1w,mediasoup327-2w')).split(','),
  sockets: String(opt('sockets', 'client')),
  // The same point with the old generator sockets (one per generator thread): the tasks engine
  // and mediasoup give one port per connection, so both socket modes work against them.
  socketCheck: opt('socket-check', quick ? '' : 'fanout:100'),
  threads: Number(opt('threads', 2)),
  videoKbps: Number(opt('video-kbps', 1000)),
  maxFailures: Number(opt('max-failures', 0)),
  retry: !flag('no-retry'),
  wait: !flag('no-wait'),
  plot: !flag('no-plot'),
}

const SERVERS = {
  ours: { label: 'mediaserver-rs (tasks)', script: 'servers/ours.mjs', args: ['--engine', 'tasks'] },
  // One room runs on one loop: with one room, the second loop of 'loops-2w' idles.
  'ours-loops-1w': { label: 'mediaserver-rs (loops, 1 worker)', script: 'servers/ours.mjs', args: ['--engine', 'loops', '--workers', '1'] },
  'ours-loops-2w': { label: 'mediaserver-rs (loops, 2 workers)', script: 'servers/ours.mjs', args: ['--engine', 'loops', '--workers', '2'] },
  'mediasoup-1w': { label: 'mediasoup 3.12.16, 1 worker', script: 'servers/mediasoup.mjs', args: ['--workers', '1'] },
  'mediasoup-2w': { label: 'mediasoup 3.12.16, 2 workers', script: 'servers/mediasoup.mjs', args: ['--workers', String(os.cpus().length)] },
  'mediasoup327-1w': { label: 'mediasoup 3.27.1, 1 worker', script: 'servers/mediasoup.mjs', node: MS327_NODE, args: ['--workers', '1', '--mediasoup-app', MS327_APP] },
  'mediasoup327-2w': { label: 'mediasoup 3.27.1, 2 workers', script: 'servers/mediasoup.mjs', node: MS327_NODE, args: ['--workers', String(os.cpus().length), '--mediasoup-app', MS327_APP] },
}
for (const key of cfg.servers) if (!SERVERS[key]) { console.error(`unknown server ${key}; known: ${Object.keys(SERVERS).join(', ')}`); process.exit(2) }

const SCENARIOS = ['room', 'fanout', 'fanout-rooms']
const TITLE = {
  room: 'Room of N users (all publish, all subscribe)',
  fanout: 'One publisher, M subscribers',
  'fanout-rooms': `${cfg.roomsCount} rooms at once, each one publisher and M subscribers`,
}
const log = (...a) => console.error(...a)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------------------------
// Prerequisites: the generator, mediasoup, matplotlib.

function prepare () {
  log('== building the load generator (cargo build --release in bench/loadgen)')
  execFileSync('cargo', ['build', '--release', '--quiet'], { cwd: join(BENCH, 'loadgen'), stdio: 'inherit' })
  if (cfg.servers.some((s) => s.startsWith('mediasoup'))) {
    if (!existsSync(MS_WORKER)) {
      log('== mediasoup 3.12.16 is missing: building it offline (about 4 minutes)')
      execFileSync('bash', [join(BENCH, 'mediasoup/build_mediasoup_offline.sh'), join(BENCH, 'servers')], { stdio: 'inherit' })
    }
  }
  if (cfg.servers.some((s) => s.startsWith('mediasoup327')) && !(existsSync(MS327_WORKER) && existsSync(MS327_NODE))) {
    log('== mediasoup 3.27.1 is missing: building it offline (mediasoup-new/build.sh, about 6-10 minutes)')
    execFileSync('nice', ['bash', join(BENCH, 'mediasoup-new/build.sh'), '3.27.1'], { stdio: 'inherit' })
  }
  if (!existsSync(join(BENCH, 'servers/node_modules/sdp-transform'))) {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: join(BENCH, 'servers'), stdio: 'inherit' })
  }
  if (cfg.plot && spawnSync(VENV_PY, ['-c', 'import matplotlib'], { stdio: 'ignore' }).status !== 0) {
    log('== installing matplotlib into bench/.venv')
    execFileSync('python3', ['-m', 'venv', join(BENCH, '.venv')], { stdio: 'inherit' })
    execFileSync(VENV_PY, ['-m', 'pip', 'install', '--quiet', 'matplotlib'], { stdio: 'inherit' })
  }
}

function loadavg () { return os.loadavg().map((x) => Math.round(x * 100) / 100) }

async function waitQuiet () {
  if (!cfg.wait) return { waited_s: 0, load: loadavg() }
  const t0 = Date.now()
  while (os.loadavg()[0] >= 0.7 && Date.now() - t0 < 20 * 60_000) {
    log(`== 1-minute load ${os.loadavg()[0].toFixed(2)} >= 0.7: waiting (up to 20 minutes)`)
    await sleep(30_000)
  }
  return { waited_s: Math.round((Date.now() - t0) / 1000), load: loadavg(), quiet: os.loadavg()[0] < 0.7 }
}

// Which build of our addon was measured (it is rebuilt by others between runs).
function addonIdentity () {
  const file = join(BENCH, '..', 'mediaserver-rs.linux-x64-gnu.node')
  try {
    const st = statSync(file)
    const md5 = createHash('md5').update(readFileSync(file)).digest('hex')
    return { file: 'mediaserver-rs.linux-x64-gnu.node', built: st.mtime.toISOString(), bytes: st.size, md5 }
  } catch { return null }
}

function machine () {
  const sh = (c, a) => { try { return execFileSync(c, a, { encoding: 'utf8' }).trim() } catch { return null } }
  const lscpu = sh('lscpu', []) ?? ''
  const field = (k) => lscpu.split('\n').find((l) => l.startsWith(k))?.split(':').slice(1).join(':').trim()
  return {
    cpu: field('Model name'), cpus: os.cpus().length, hypervisor: field('Hypervisor vendor') ?? null,
    mem_gib: Math.round(os.totalmem() / 2 ** 30), kernel: sh('uname', ['-r']), os: sh('sh', ['-c', '. /etc/os-release && echo $PRETTY_NAME']),
    node: process.version, rustc: sh('rustc', ['--version']),
  }
}

// ---------------------------------------------------------------------------------------------
// One measurement: a fresh server, the generator against it.

function startServer (key) {
  const s = SERVERS[key]
  const child = spawn(s.node ?? 'node', [join(BENCH, s.script), '--port', String(HTTP_PORT), '--rtc-min-port', String(RTC_MIN), '--rtc-max-port', String(RTC_MAX), ...s.args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d) => { err += d; if (err.length > 20000) err = err.slice(-10000) })
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`${key} did not start: ${err}`)), 20000)
    child.stdout.on('data', (d) => {
      out += d
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (line) { clearTimeout(timer); resolve({ child, info: JSON.parse(line), stderr: () => err }) }
    })
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${key} exited (${code}): ${err}`)) })
  })
}

async function stopServer (srv) {
  const { child, info } = srv
  if (child.exitCode !== null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  const t = setTimeout(() => child.kill('SIGKILL'), 5000)
  await gone
  clearTimeout(t)
  // mediasoup workers end with their parent; make sure before the next server binds ports.
  for (const [name, pid] of Object.entries(info.pids)) {
    if (name === 'server' || name === 'node') continue
    for (let i = 0; i < 50; i++) { try { process.kill(pid, 0) } catch { break } await sleep(100) }
    try { process.kill(pid, 'SIGKILL') } catch {}
  }
}

function runLoadgen (args, timeoutS) {
  return new Promise((resolve) => {
    const child = spawn(LOADGEN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''; let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d; if (err.length > 50000) err = err.slice(-20000) })
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000)
    child.on('exit', (code) => {
      clearTimeout(t)
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (!line) return resolve({ error: `loadgen exited ${code}: ${err.split('\n').filter((l) => !l.includes(' WARN ')).slice(-8).join(' | ')}` })
      resolve(JSON.parse(line))
    })
  })
}

function passes (r) {
  return !r.error && r.setup_ok && r.flowing === r.downstream_connections && r.loss < LOSS_MAX && r.latency.p99_ms < P99_MAX_MS
}

async function measure (key, scenario, n, threads = cfg.threads, sockets = cfg.sockets) {
  // Our addon may be rebuilt by others during a run: which build each point of ours ran on.
  const addonBuilt = key.startsWith('ours') ? (() => { try { return statSync(join(BENCH, '..', 'mediaserver-rs.linux-x64-gnu.node')).mtime.toISOString() } catch { return null } })() : undefined
  const srv = await startServer(key)
  await sleep(300)
  const pids = Object.entries(srv.info.pids).map(([k, v]) => `${k}=${v}`).join(',')
  const rooms = scenario === 'fanout-rooms' ? cfg.roomsCount : 1
  const setupTimeout = 20 + n * rooms * (scenario === 'room' ? 1 : 0.15)
  const args = ['--server', `http://127.0.0.1:${HTTP_PORT}`, '--scenario', scenario === 'fanout-rooms' ? 'fanout' : scenario, '--rooms', String(rooms), '--n', String(n),
    '--warmup', String(cfg.warmup), '--duration', String(cfg.duration), '--threads', String(threads),
    '--port-base', String(GEN_PORT), '--video-kbps', String(cfg.videoKbps), '--setup-timeout', String(setupTimeout), '--server-pids', pids, '--sockets', sockets]
  const r = await runLoadgen(args, setupTimeout * 3 + cfg.warmup + cfg.duration + 60)
  await stopServer(srv)
  const err = srv.stderr().split('\n').filter((l) => l && !l.includes(' WARN ')).slice(-5)
  // (the generator reports scenario 'fanout' for 'fanout-rooms': ours goes last)
  return { ...r, server: key, label: SERVERS[key].label, scenario, n, generator_threads: threads, generator_sockets: sockets, addon_built: addonBuilt, server_stderr_tail: err, pass: passes(r) }
}

async function calibrate (n) {
  const args = ['--scenario', 'direct', '--n', String(n), '--warmup', String(cfg.warmup), '--duration', String(cfg.duration),
    '--threads', String(cfg.threads), '--port-base', String(GEN_PORT), '--video-kbps', String(cfg.videoKbps), '--sockets', cfg.sockets]
  const r = await runLoadgen(args, 120 + cfg.duration)
  return { server: 'none (direct)', scenario: 'direct', n, ...r, pass: passes(r) }
}

// ---------------------------------------------------------------------------------------------
// Tables.

const f = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x)) ? '-' : Number(x).toFixed(d)
const pct = (x) => (x === undefined || x === null || Number.isNaN(x)) ? '-' : (x * 100).toFixed(x < 0.001 ? 3 : 2) + '%'

function row (r) {
  if (r.error) return [r.n, 'ERROR: ' + r.error.slice(0, 100)]
  return [
    r.n, r.downstream_connections, f(r.forwarded_pps, 0), f(r.server_cpu_us_per_packet, 2), `${f(r.server_cpu_user_us_per_packet, 1)} + ${f(r.server_cpu_sys_us_per_packet, 1)}`, f(r.server_cpu_share * 100, 0) + '%',
    f(r.latency.p50_ms, 3), f(r.latency.p99_ms, 2), f(r.latency.max_ms, 1), pct(r.loss),
    f(r.rss_load_kb / 1024, 0), f(r.rss_per_connection_kb, 0), f(r.produce_to_answer_ms?.p50, 1), f(r.add_user_to_first_packet_ms?.p50, 0),
    f(r.generator.cpu_share * 100, 0) + '%', r.machine_cpu_window ? f(r.machine_cpu_window.busy_cores - r.server_cpu_share - r.generator.cpu_share, 2) : '-', r.udp_counters_window?.RcvbufErrors ?? '-', (r.pass ? 'ok' : 'MISS') + (r.attempt === 2 ? ' (2nd)' : ''),
  ]
}
const HEAD = ['size', 'down conns', 'fwd pkt/s', 'CPU µs/pkt', 'user + sys', 'CPU', 'p50 ms', 'p99 ms', 'max ms', 'loss', 'RSS MB', 'KB/conn', 'produce→answer ms', 'addUser→1st pkt ms', 'gen CPU', 'other CPU', 'UDP drops', 'ceiling']

function table (head, rows) {
  const w = head.map((h, i) => Math.max(String(h).length, ...rows.map((r) => String(r[i] ?? '').length)))
  const line = (r) => '| ' + r.map((c, i) => String(c ?? '').padStart(w[i])).join(' | ') + ' |'
  return [line(head), '|' + w.map((x) => '-'.repeat(x + 2)).join('|') + '|', ...rows.map(line)].join('\n')
}

function ratioRows (results, scenario, other, mine = 'ours') {
  const rows = []
  for (const a of results.filter((r) => r.server === mine && r.scenario === scenario && !r.error)) {
    const b = results.find((r) => r.server === other && r.scenario === scenario && r.n === a.n && !r.error)
    if (!b) continue
    const q = (x, y) => (y ? f(x / y, 2) : '-')
    rows.push([a.n, q(a.server_cpu_us_per_packet, b.server_cpu_us_per_packet), q(a.forwarded_pps, b.forwarded_pps),
      q(a.latency.p50_ms, b.latency.p50_ms), q(a.latency.p99_ms, b.latency.p99_ms), q(a.latency.max_ms, b.latency.max_ms),
      `${pct(a.loss)} / ${pct(b.loss)}`, q(a.rss_load_kb, b.rss_load_kb), q(a.rss_per_connection_kb, b.rss_per_connection_kb),
      q(a.produce_to_answer_ms?.p50, b.produce_to_answer_ms?.p50), q(a.add_user_to_first_packet_ms?.p50, b.add_user_to_first_packet_ms?.p50)])
  }
  return rows
}
const RATIO_HEAD = ['size', 'CPU/pkt', 'fwd pkt/s', 'p50', 'p99', 'max', 'loss (ours / theirs)', 'RSS', 'RSS/conn', 'produce→answer', 'addUser→1st pkt']

function ceilings (results) {
  const out = {}
  for (const key of cfg.servers) {
    out[key] = {}
    for (const sc of SCENARIOS) {
      const rs = results.filter((r) => r.server === key && r.scenario === sc).sort((a, b) => a.n - b.n)
      let ceiling = null
      for (const r of rs) { if (r.pass) ceiling = r.n; else break }
      const tested = rs.map((r) => r.n)
      const firstMiss = rs.find((r) => !r.pass)
      // Latency at half the ceiling load: the measured size closest to half the ceiling.
      let half = null
      if (ceiling) {
        const target = ceiling / 2
        half = rs.filter((r) => r.pass).reduce((best, r) => (!best || Math.abs(r.n - target) < Math.abs(best.n - target) ? r : best), null)
      }
      out[key][sc] = {
        ceiling, tested, first_miss: firstMiss ? { n: firstMiss.n, loss: firstMiss.loss, p99_ms: firstMiss.latency?.p99_ms, error: firstMiss.error ?? firstMiss.setup_error ?? null } : null,
        at_half_ceiling: half ? { n: half.n, p50_ms: half.latency.p50_ms, p99_ms: half.latency.p99_ms } : null,
        // Cost linear in forwarded packets: least squares of server CPU share on forwarded pkt/s.
        linear_fit: fit(rs.filter((r) => !r.error && r.received_packets > 0).map((r) => [r.forwarded_pps, r.server_cpu_share])),
        // Memory per connection as the slope of RSS (KB) on the number of connections.
        rss_fit_kb_per_connection: (() => { const x = fit(rs.filter((r) => !r.error && r.rss_load_kb).map((r) => [r.connections, r.rss_load_kb / 1e6])); return x ? x.us_per_packet : null })(),
      }
    }
  }
  return out
}

function fit (pts) {
  if (pts.length < 3) return null
  const n = pts.length
  const mx = pts.reduce((s, p) => s + p[0], 0) / n; const my = pts.reduce((s, p) => s + p[1], 0) / n
  const sxx = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0); const sxy = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
  const syy = pts.reduce((s, p) => s + (p[1] - my) ** 2, 0)
  const slope = sxy / sxx; const intercept = my - slope * mx
  return { us_per_packet: Math.round(slope * 1e6 * 100) / 100, idle_cpu_share: Math.round(intercept * 1000) / 1000, r2: Math.round((sxy * sxy) / (sxx * syy) * 1000) / 1000 }
}

// ---------------------------------------------------------------------------------------------

async function main () {
  prepare()
  const started = new Date()
  const quiet = await waitQuiet()
  const meta = { started: started.toISOString(), config: cfg, machine: machine(), addon: addonIdentity(), load_at_start: quiet, criteria: { loss_below: LOSS_MAX, p99_below_ms: P99_MAX_MS } }
  log(`== machine: ${meta.machine.cpu}, ${meta.machine.cpus} CPUs, kernel ${meta.machine.kernel}; load ${quiet.load.join(' ')}`)
  const results = []
  const retried = []
  const calibration = []

  // The generator alone (no server): its floor, and a check that it keeps up.
  for (const n of cfg.direct) {
    log(`== generator calibration: direct, ${n} publisher→subscriber pairs`)
    const r = await calibrate(n)
    calibration.push(r)
    log(r.error ?? `   ${f(r.forwarded_pps, 0)} pkt/s, p50 ${r.latency.p50_ms} ms, p99 ${r.latency.p99_ms} ms, loss ${pct(r.loss)}, generator CPU ${f(r.generator.cpu_share * 100, 0)}%`)
  }

  for (const scenario of SCENARIOS) {
    const sizes = cfg[scenario]
    const misses = Object.fromEntries(cfg.servers.map((s) => [s, 0]))
    for (const n of sizes) {
      for (const key of cfg.servers) {
        if (misses[key] > cfg.maxFailures) continue
        log(`== ${scenario} ${scenario === 'room' ? 'N' : 'M'}=${n}: ${SERVERS[key].label}`)
        let r
        for (let attempt = 1; attempt <= 2; attempt++) {
          try { r = await measure(key, scenario, n) } catch (e) { r = { server: key, label: SERVERS[key].label, scenario, n, error: String(e.message ?? e).slice(0, 500), pass: false } }
          r.attempt = attempt
          // A miss is measured once more (other jobs share this machine); it stays a miss
          // only if the second measurement misses too. Both are kept in the JSON.
          if (r.pass || attempt === 2 || !cfg.retry) break
          log(`   MISS (${r.error ?? `loss ${pct(r.loss)}, p99 ${r.latency?.p99_ms} ms`}, machine busy ${r.machine_cpu_window?.busy_cores ?? '?'} cores): measuring once more`)
          retried.push(r)
        }
        results.push(r)
        log(r.error ? `   ERROR ${r.error}` : `   ${f(r.forwarded_pps, 0)} pkt/s, CPU ${f(r.server_cpu_us_per_packet, 2)} µs/pkt (${f(r.server_cpu_share * 100, 0)}%), p50 ${r.latency.p50_ms} p99 ${r.latency.p99_ms} max ${r.latency.max_ms} ms, loss ${pct(r.loss)}, flowing ${r.flowing}/${r.downstream_connections}, gen CPU ${f(r.generator.cpu_share * 100, 0)}% ${r.pass ? '' : 'MISS'}`)
        if (!r.pass) misses[key]++
      }
    }
  }
  // Generator check: the same point with other generator thread counts.
  const genCheck = []
  if (cfg.genCheck) {
    const [scenario, n, threads] = cfg.genCheck.split(':')
    for (const key of cfg.servers.filter((k) => !k.startsWith('mediasoup') || k.endsWith('-1w'))) {
      const base = results.find((r) => r.server === key && r.scenario === scenario && r.n === Number(n))
      if (base) genCheck.push(base)
      for (const t of threads.split(',').map(Number)) {
        log(`== generator check: ${scenario} ${n}, ${SERVERS[key].label}, ${t} generator thread(s)`)
        try { genCheck.push(await measure(key, scenario, Number(n), t)) } catch (e) { log(`   ERROR ${e.message}`) }
      }
    }
  }
  // Socket check: the same point with the generator's old sockets (one per thread), against the
  // servers that give every connection its own port; the same figures = the change of sockets
  // did not change what is measured.
  const socketCheck = []
  if (cfg.socketCheck) {
    const [scenario, n] = cfg.socketCheck.split(':')
    for (const key of cfg.servers.filter((k) => k === 'ours' || k.startsWith('mediasoup'))) {
      const base = results.find((r) => r.server === key && r.scenario === scenario && r.n === Number(n))
      if (base) socketCheck.push(base)
      const other = cfg.sockets === 'client' ? 'thread' : 'client'
      log(`== socket check: ${scenario} ${n}, ${SERVERS[key].label}, generator sockets '${other}'`)
      try { socketCheck.push(await measure(key, scenario, Number(n), cfg.threads, other)) } catch (e) { log(`   ERROR ${e.message}`) }
    }
  }
  const finished = new Date()
  const summary = ceilings(results)
  const out = { ...meta, finished: finished.toISOString(), load_at_end: loadavg(), addon_at_end: addonIdentity(), calibration, generator_check: genCheck, socket_check: socketCheck, results, first_attempts_that_missed: retried, summary }
  mkdirSync(join(BENCH, 'results'), { recursive: true })
  const stamp = started.toISOString().replace(/[:.]/g, '-').slice(0, 19)
  const file = join(BENCH, 'results', `${stamp}${quick ? '-quick' : ''}.json`)
  writeFileSync(file, JSON.stringify(out, null, 1))

  // Terminal tables.
  const md = []
  md.push(`Machine: ${meta.machine.cpu} (${meta.machine.cpus} CPUs, ${meta.machine.hypervisor ? meta.machine.hypervisor + ' guest' : 'bare metal'}), ${meta.machine.mem_gib} GiB, ${meta.machine.os}, kernel ${meta.machine.kernel}, Node ${meta.machine.node}`)
  if (meta.addon) md.push(`Our addon: ${meta.addon.file} built ${meta.addon.built}, ${meta.addon.bytes} bytes, md5 ${meta.addon.md5}`)
  if (out.addon_at_end && meta.addon && out.addon_at_end.md5 !== meta.addon.md5) md.push(`**Our addon was rebuilt during the run**: at the end built ${out.addon_at_end.built}, md5 ${out.addon_at_end.md5} (each point's \`addon_built\` in the JSON says which build it ran on).`)
  md.push(`Generator sockets: ${cfg.sockets === 'client' ? 'one per client connection' : 'one per generator thread'}, ${cfg.threads} generator threads.`)
  md.push(`Load average (1/5/15 min) at start ${quiet.load.join(' / ')}${quiet.quiet === false ? ' (the machine did not become quiet within 20 minutes)' : ''}, at end ${out.load_at_end.join(' / ')}. Each point: ${cfg.warmup} s warm-up, ${cfg.duration} s measured. Media per publisher: Opus-sized audio 50 pkt/s + VP8-sized video ${cfg.videoKbps} kbit/s at 30 fps.`)
  md.push('')
  md.push('Generator alone (direct publisher→subscriber pairs, no server):')
  md.push(table(['pairs', 'pkt/s', 'p50 ms', 'p99 ms', 'max ms', 'loss', 'gen CPU', 'send lag p99 µs'], calibration.map((r) => r.error ? [r.n, r.error] : [r.n, f(r.forwarded_pps, 0), f(r.latency.p50_ms, 3), f(r.latency.p99_ms, 2), f(r.latency.max_ms, 1), pct(r.loss), f(r.generator.cpu_share * 100, 0) + '%', r.generator.send_lag_p99_us])))
  if (genCheck.length) {
    md.push('')
    md.push('Generator check (one point measured with 1, 2 and 3 generator threads; same server figures = the generator did not limit them):')
    md.push(table(['server', 'point', 'gen threads', 'fwd pkt/s', 'CPU µs/pkt', 'p50 ms', 'p99 ms', 'loss', 'gen CPU', 'UDP rcvbuf drops'], genCheck.map((r) => r.error
      ? [r.label, `${r.scenario} ${r.n}`, r.generator_threads, r.error]
      : [r.label, `${r.scenario} ${r.n}`, r.generator_threads, f(r.forwarded_pps, 0), f(r.server_cpu_us_per_packet, 2), f(r.latency.p50_ms, 3), f(r.latency.p99_ms, 2), pct(r.loss), f(r.generator.cpu_share * 100, 0) + '%', r.udp_counters_window?.RcvbufErrors])))
  }
  if (socketCheck.length) {
    md.push('')
    md.push(`Socket check (one point measured with the generator's sockets per client connection and per generator thread; same server figures = the socket change did not change them):`)
    md.push(table(['server', 'point', 'gen sockets', 'fwd pkt/s', 'CPU µs/pkt', 'user + sys', 'p50 ms', 'p99 ms', 'loss', 'gen CPU', 'other CPU', 'UDP rcvbuf drops'], socketCheck.map((r) => r.error
      ? [r.label, `${r.scenario} ${r.n}`, r.generator_sockets, r.error]
      : [r.label, `${r.scenario} ${r.n}`, r.generator_sockets, f(r.forwarded_pps, 0), f(r.server_cpu_us_per_packet, 2), `${f(r.server_cpu_user_us_per_packet, 1)} + ${f(r.server_cpu_sys_us_per_packet, 1)}`, f(r.latency.p50_ms, 3), f(r.latency.p99_ms, 2), pct(r.loss), f(r.generator.cpu_share * 100, 0) + '%', r.machine_cpu_window ? f(r.machine_cpu_window.busy_cores - r.server_cpu_share - r.generator.cpu_share, 2) : '-', r.udp_counters_window?.RcvbufErrors])))
  }
  for (const scenario of SCENARIOS) {
    for (const key of cfg.servers) {
      const rs = results.filter((r) => r.server === key && r.scenario === scenario)
      if (!rs.length) continue
      md.push('')
      md.push(`${TITLE[scenario]} — ${SERVERS[key].label}`)
      md.push(table(HEAD, rs.map(row)))
    }
    // Each of our engines against each mediasoup configuration, and the loops against the tasks.
    const pairs = []
    for (const mine of cfg.servers.filter((s) => s.startsWith('ours'))) {
      for (const other of cfg.servers.filter((s) => s.startsWith('mediasoup'))) pairs.push([mine, other])
      if (mine !== 'ours' && cfg.servers.includes('ours')) pairs.push([mine, 'ours'])
    }
    for (const [mine, other] of pairs) {
      const rows = ratioRows(results, scenario, other, mine)
      if (!rows.length) continue
      md.push('')
      md.push(`${scenario} — ratio ${SERVERS[mine].label} / ${SERVERS[other].label} (below 1: the first is lower)`)
      md.push(table(RATIO_HEAD, rows))
    }
  }
  md.push('')
  md.push(`Ceiling (largest size with loss < ${LOSS_MAX * 100}% and p99 < ${P99_MAX_MS} ms, every connection receiving):`)
  md.push(table(['server', 'room N', 'fanout M', `${cfg.roomsCount} rooms × fanout M`, 'room at ~half ceiling p50/p99 ms', 'fanout at ~half ceiling p50/p99 ms', 'CPU fit µs/pkt (room, fanout)', 'RSS fit KB/conn (room, fanout)'], cfg.servers.map((k) => {
    const s = summary[k]
    const h = (x) => x.at_half_ceiling ? `N/M=${x.at_half_ceiling.n}: ${x.at_half_ceiling.p50_ms} / ${x.at_half_ceiling.p99_ms}` : '-'
    const c = (x) => !x.tested.length ? '-' : x.ceiling === null ? `< ${x.tested[0]}` : (x.first_miss ? String(x.ceiling) : `>= ${x.ceiling} (largest tested)`)
    return [SERVERS[k].label, c(s.room), c(s.fanout), c(s['fanout-rooms']), h(s.room), h(s.fanout), `${s.room.linear_fit?.us_per_packet ?? '-'} (R² ${s.room.linear_fit?.r2 ?? '-'}), ${s.fanout.linear_fit?.us_per_packet ?? '-'} (R² ${s.fanout.linear_fit?.r2 ?? '-'})`, `${f(s.room.rss_fit_kb_per_connection, 0)}, ${f(s.fanout.rss_fit_kb_per_connection, 0)}`]
  })))
  const text = md.join('\n')
  console.log(text)
  writeFileSync(file.replace(/\.json$/, '.md'), text + '\n')
  log(`\n== results: ${file}`)

  if (cfg.plot) {
    const png = file.replace(/\.json$/, '.png')
    const p = spawnSync(VENV_PY, [join(BENCH, 'plot.py'), file, png], { stdio: 'inherit' })
    if (p.status === 0) log(`== plot: ${png}`)
  }
}

main().catch((e) => { console.error(e); process.exit(1) })
