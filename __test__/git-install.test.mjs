// `npm install` of the repository as a git dependency: npm clones it, installs its dev
// dependencies, runs its `prepare` script (scripts/install.js) and packs it, as it does for
// `npm install git+https://…`. No prebuilt binary matches there (the repository names no
// platform package), so with cargo on PATH the prepare step builds the addon, and the installed
// package carries it and loads: a Node script in the fresh folder makes a MediaServer and asks
// for stats(). Without cargo, the install says so and requiring the package throws
// ERR_MEDIASERVER_NO_BINARY.
//
// The clone is of this repository's HEAD (committed work only), by git+file:// from a fresh
// folder. CARGO_TARGET_DIR=target/git-dep (its own, kept between runs: the dependencies compile
// once; the crate itself compiles on every run, as its path, npm's clone, changes; and the
// host build in target/ is not overwritten by a build of HEAD).

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const work = mkdtempSync(join(tmpdir(), 'mediaserver-git-install-'))
after(() => rmSync(work, { recursive: true, force: true }))

const repo = join(work, 'repo')
execFileSync('git', ['clone', '--quiet', root, repo])
const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, encoding: 'utf8' }).trim()

/** PATH without any directory that holds cargo or rustc. */
function pathWithoutRust () {
  const hasRust = (dir) => { try { return readdirSync(dir).some((f) => f === 'cargo' || f === 'rustc') } catch { return false } }
  return process.env.PATH.split(delimiter).filter((dir) => !hasRust(dir)).join(delimiter)
}

/** A fresh folder with `npm install git+file://<clone>` run in it; returns the folder and npm's run. */
function installAsGitDependency (name, env) {
  const app = join(work, name)
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }))
  const started = Date.now()
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', `git+file://${repo}`], { cwd: app, env, encoding: 'utf8', timeout: 40 * 60000 })
  return { app, install, started, output: `${install.stdout}\n${install.stderr}` }
}

const USE = `
const started = Number(process.env.STARTED)
try {
  const { MediaServer } = require('mediaserver-rs')
  const server = new MediaServer({ listenIp: '127.0.0.1' })
  server.stats().then(async (stats) => {
    const msFromInstall = Date.now() - started
    await server.close()
    console.log('USE-RESULT ' + JSON.stringify({ stats, msFromInstall, resolved: require.resolve('mediaserver-rs') }))
  })
} catch (e) {
  console.log('USE-RESULT ' + JSON.stringify({ code: e.code, message: e.message }))
}`

function use (app, env, started) {
  const run = spawnSync(process.execPath, ['-e', USE], { cwd: app, env: { ...env, STARTED: String(started) }, encoding: 'utf8', timeout: 60000 })
  const line = run.stdout.split('\n').find((l) => l.startsWith('USE-RESULT '))
  assert.ok(line, `no result (exit ${run.status}):\n${run.stdout}\n${run.stderr}`)
  return JSON.parse(line.slice('USE-RESULT '.length))
}

const baseEnv = () => {
  const env = { ...process.env, CARGO_TARGET_DIR: join(root, 'target/git-dep') }
  delete env.INIT_CWD
  return env
}

test(`as a git dependency (HEAD ${head}), npm install builds the addon with cargo, and it loads`, { timeout: 45 * 60000 }, () => {
  const env = baseEnv()
  const { app, install, started, output } = installAsGitDependency('with-cargo', env)
  assert.equal(install.status, 0, `npm install failed:\n${output.slice(-4000)}`)
  assert.match(output, /building the native addon with cargo/, 'the prepare script did not build')
  const pkgDir = join(app, 'node_modules/mediaserver-rs')
  const binaries = readdirSync(pkgDir).filter((f) => f.endsWith('.node'))
  assert.deepEqual(binaries, ['mediaserver-rs.linux-x64-gnu.node'], 'the installed package has no binary built for this platform')
  assert.ok(!existsSync(join(app, 'node_modules/mediaserver-rs-linux-x64-gnu')), 'a prebuilt platform package was installed')
  const installMs = Date.now() - started

  const r = use(app, env, started)
  assert.equal(r.code, undefined, r.message)
  assert.ok(r.resolved.startsWith(pkgDir), `loaded from ${r.resolved}`)
  assert.equal(r.stats.rooms, 0)
  console.log(`git dependency: npm install (clone, dev dependencies, cargo build) ${(installMs / 1000).toFixed(0)} s; install to first stats(): ${(r.msFromInstall / 1000).toFixed(1)} s`)
})

test(`as a git dependency without cargo on PATH, the install says so and require throws ERR_MEDIASERVER_NO_BINARY`, { timeout: 20 * 60000 }, () => {
  const env = { ...baseEnv(), PATH: pathWithoutRust() }
  assert.notEqual(spawnSync('sh', ['-c', 'command -v cargo || command -v rustc'], { env }).status, 0, 'cargo is still on PATH')
  const { app, install, output } = installAsGitDependency('without-cargo', env)
  assert.equal(install.status, 0, `npm install failed:\n${output.slice(-4000)}`)
  assert.match(output, /mediaserver-rs: no binary yet, and no cargo to build one: install Rust/)
  assert.deepEqual(readdirSync(join(app, 'node_modules/mediaserver-rs')).filter((f) => f.endsWith('.node')), [])
  const r = use(app, env, Date.now())
  assert.equal(r.code, 'ERR_MEDIASERVER_NO_BINARY', JSON.stringify(r))
  assert.match(r.message, /the native binary for linux-x64-gnu is missing/)
})
