// `npm install mediaserver-rs` as a user gets it: the main package and the linux-x64-gnu
// platform package, packed by `npm run package` (scripts/package.mjs) from the binary the suite
// built, installed by file path into a fresh folder whose PATH has no cargo and no rustc. There a
// Node script makes a two-user call through the installed package, and the receiver's
// libwebrtc decodes the video. Also: the loader's error names the platform and the supported
// ones when no binary fits.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const work = mkdtempSync(join(tmpdir(), 'mediaserver-package-'))
after(() => rmSync(work, { recursive: true, force: true }))

/** PATH without any directory that holds cargo or rustc. */
function pathWithoutRust () {
  const hasRust = (dir) => { try { return readdirSync(dir).some((f) => f === 'cargo' || f === 'rustc') } catch { return false } }
  return process.env.PATH.split(delimiter).filter((dir) => !hasRust(dir)).join(delimiter)
}

// Run in the fresh folder: a producer and a consumer (libwebrtc, from the repository's own
// dev dependencies: the user's app would bring its own peers) through the installed package.
const CALL = `
const { MediaServer } = require('mediaserver-rs')
const wrtc = require(process.env.WRTC)
const started = Number(process.env.STARTED)
const gather = (pc) => new Promise((resolve) => { if (pc.iceGatheringState === 'complete') resolve(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve() })
;(async () => {
  const server = new MediaServer({ listenIp: '127.0.0.1' })
  await server.createRoom('r')
  await server.addUser('r', 'a')
  await server.addUser('r', 'b')
  const source = new wrtc.nonstandard.RTCVideoSource()
  const track = source.createTrack()
  const frame = { width: 320, height: 240, data: new Uint8ClampedArray(320 * 240 * 1.5) }
  let n = 0
  const timer = setInterval(() => { frame.data.fill(n++ % 256, 0, 320 * 240); source.onFrame(frame) }, 33)
  const up = new wrtc.RTCPeerConnection()
  up.addTrack(track)
  await up.setLocalDescription(await up.createOffer())
  await gather(up)
  const res = await server.produce('r', 'a', { offer: { type: 'offer', sdp: up.localDescription.sdp } })
  await up.setRemoteDescription(res.answer)
  const down = new wrtc.RTCPeerConnection()
  await down.setRemoteDescription(res.outbound.find((o) => o.id === 'b').offer)
  await down.setLocalDescription(await down.createAnswer())
  await gather(down)
  await server.consume('r', 'b', { id: 'a', answer: { type: 'answer', sdp: down.localDescription.sdp } })
  let decoded = 0
  for (let i = 0; i < 200 && decoded === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    ;(await down.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') decoded = s.framesDecoded ?? 0 })
  }
  console.log('CALL-RESULT ' + JSON.stringify({ decoded, msFromInstall: Date.now() - started, resolved: require.resolve('mediaserver-rs') }))
  clearInterval(timer); track.stop(); up.close(); down.close()
  await server.close()
  process.exit(0)
})().catch((e) => { console.log('CALL-RESULT ' + JSON.stringify({ error: e.stack })); process.exit(0) })
`

test('the packed main and linux-x64-gnu packages install into a fresh folder without Rust, and a call there decodes video', { timeout: 300000 }, () => {
  const dist = join(work, 'dist')
  const pack = spawnSync(process.execPath, [join(root, 'scripts/package.mjs'), '--skip-build', '--out', dist], { cwd: root, encoding: 'utf8' })
  assert.equal(pack.status, 0, pack.stderr)
  // Cross-built platform packages (npm run package on a machine with zig) may be there too.
  const tarballs = ['mediaserver-rs-0.1.0.tgz', 'mediaserver-rs-linux-x64-gnu-0.1.0.tgz']
  for (const t of tarballs) assert.ok(readdirSync(dist).includes(t), `${t} not packed: ${pack.stdout}`)

  const app = join(work, 'app')
  const env = { ...process.env, PATH: pathWithoutRust() }
  delete env.INIT_CWD
  assert.notEqual(spawnSync('sh', ['-c', 'command -v cargo || command -v rustc'], { env }).status, 0, 'cargo is still on PATH')
  spawnSync('mkdir', ['-p', app])
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  const started = Date.now()
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', ...tarballs.map((t) => join(dist, t))], { cwd: app, env, encoding: 'utf8', timeout: 240000 })
  assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`)
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/mediaserver-rs/package.json'), 'utf8'))
  assert.ok(installed.optionalDependencies['mediaserver-rs-linux-x64-gnu'], 'the main package names its platform packages')
  assert.ok(!readdirSync(join(app, 'node_modules/mediaserver-rs')).some((f) => f.endsWith('.node')), 'the main package carries no binary')

  const wrtcPath = dirname(fileURLToPath(import.meta.resolve('@roamhq/wrtc/package.json')))
  const call = spawnSync(process.execPath, ['-e', CALL], { cwd: app, env: { ...env, WRTC: wrtcPath, STARTED: String(started) }, encoding: 'utf8', timeout: 60000 })
  const line = call.stdout.split('\n').find((l) => l.startsWith('CALL-RESULT '))
  assert.ok(line, `no result (exit ${call.status}):\n${call.stdout}\n${call.stderr}`)
  const r = JSON.parse(line.slice('CALL-RESULT '.length))
  assert.equal(r.error, undefined, r.error)
  assert.ok(r.resolved.startsWith(join(app, 'node_modules')), `loaded from ${r.resolved}`)
  assert.ok(r.decoded > 0, 'the receiver decoded no frame')
  console.log(`install to first decoded frame: ${r.msFromInstall} ms (npm install ${tarballs.join(' + ')}, then a two-user call)`)
})

test('with no binary for the platform, the error names it and the supported platforms', () => {
  const script = "Object.defineProperty(process, 'arch', { value: 's390x' }); try { require(process.argv[1]) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }"
  const run = spawnSync(process.execPath, ['-e', script, join(root, 'index.js')], { encoding: 'utf8' })
  const { code, message } = JSON.parse(run.stdout)
  assert.equal(code, 'ERR_MEDIASERVER_NO_BINARY')
  assert.match(message, /linux-s390x-gnu/)
  for (const p of ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']) assert.match(message, new RegExp(p))
})
