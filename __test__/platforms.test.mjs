// The Linux targets other than this machine's, built and run here: linux-arm64-gnu,
// linux-x64-musl and linux-arm64-musl are cross-built in release with zig (`napi build -x`,
// cargo-zigbuild; scripts/cross.mjs, the same build `npm run package` does) into target/cross
// (its own cargo target directory, so the host build in target/ stays valid), and each binary:
// - has the ELF machine of its platform, and a dynamic section that fits its libc (readelf: a
//   musl binary needs no glibc library, a glibc one needs glibc and no musl);
// - is loaded by a Node.js of its own platform, which makes a MediaServer on 127.0.0.1, asks
//   for stats() and closes it: arm64 glibc under qemu-aarch64, x64 musl under a real musl
//   loader (Debian 13's musl 1.2.5), arm64 musl under both. That Node reports its own arch and
//   libc, so a run on the wrong one fails;
// - is packed into its platform package (npm/<platform>), installed with the packed main
//   package into a fresh folder (npm install --force --os/--cpu/--libc of that platform: the
//   tarballs are for another machine), and `require('mediaserver-rs')` there, in that platform's
//   Node, loads it through the package's own loader and answers stats(). For musl this runs in
//   a private mount namespace whose /usr/bin/ldd is a musl system's (napi-rs's loader reads it
//   to tell musl from glibc; this host's is glibc's): root, like the suite's `unshare -n` tests.
// The last test feeds the same checks the wrong binary for a platform: they fail.
//
// What it needs is installed by scripts/cross-deps.sh (run by `npm test`'s pretest). A missing
// piece fails the test with its name; MEDIASERVER_SKIP_CROSS=1 skips it, loudly, outside CI only.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildCross, binaryFile, crossTargets, elfCheck, installedCheck, loadCheck, missingBuildTools, nodeRunner, packPlatform, platformOf, root } from '../scripts/cross.mjs'

const skip = process.env.MEDIASERVER_SKIP_CROSS === '1' && !process.env.CI
if (skip) console.log('\n*** MEDIASERVER_SKIP_CROSS=1: the cross-target builds and checks are SKIPPED (never under CI) ***\n')
const targetDir = join(root, 'target/cross')
const out = (platform) => join(targetDir, 'bin', platform)
const built = new Map()
const work = mkdtempSync(join(tmpdir(), 'mediaserver-platforms-'))
const dist = join(work, 'dist')
let mainTarball
before(() => {
  if (skip) return
  // The main package, packed as `npm run package` packs it (from the host build, as the
  // package test does).
  const pack = spawnSync(process.execPath, [join(root, 'scripts/package.mjs'), '--skip-build', '--out', dist], { cwd: root, encoding: 'utf8' })
  if (pack.status === 0) mainTarball = join(dist, 'mediaserver-rs-0.1.0.tgz')
  else console.log(`scripts/package.mjs --skip-build failed: ${pack.stderr}`)
})
after(() => rmSync(work, { recursive: true, force: true }))

function requireTools (platform) {
  const missing = [...missingBuildTools([crossTargets.find((t) => platformOf(t) === platform)]), ...nodeRunner(platform).missing]
  assert.deepEqual(missing, [], `the cross-target test needs: ${missing.join('; ')}. Install it all with: bash scripts/cross-deps.sh`)
}

test('the cross targets are the three other Linux ones', { skip }, () => {
  assert.deepEqual(crossTargets.map(platformOf).sort(), ['linux-arm64-gnu', 'linux-arm64-musl', 'linux-x64-musl'])
})

for (const target of crossTargets) {
  const platform = platformOf(target)
  test(`${platform}: cross-built with zig, the right ELF machine and libc, loaded by a ${platform} Node that calls stats(), and so is its installed package`, { skip, timeout: 45 * 60000 }, () => {
    requireTools(platform)
    const started = Date.now()
    const binary = buildCross(target, out(platform), { targetDir, stdio: ['ignore', 'ignore', 'pipe'] })
    const buildMs = Date.now() - started
    built.set(platform, binary)

    const elf = elfCheck(binary, platform)
    assert.ok(elf.ok, `${platform}: ${elf.machine} (want ${elf.wantMachine}), needs ${elf.needed.join(', ')}`)
    if (platform.endsWith('musl')) assert.ok(!elf.needed.some((n) => /libc\.so\.6|ld-linux/.test(n)), elf.needed.join(', '))

    const load = loadCheck(platform, binary)
    assert.ok(load.ok, `${platform} did not load: ${load.error}`)
    assert.equal(load.self.arch, platform.includes('arm64') ? 'arm64' : 'x64', 'the Node that loaded it is of another arch')
    assert.equal(load.self.glibc === null, platform.endsWith('musl'), `the Node that loaded it runs on ${load.self.glibc ? `glibc ${load.self.glibc}` : 'musl'}`)
    assert.equal(load.stats.rooms, 0)
    assert.equal(load.stats.liveConnections, 0)

    // Packed and installed as a user of that platform gets it, and loaded by the package's loader.
    assert.ok(mainTarball && existsSync(mainTarball), 'the main package was not packed (npm run build first)')
    const tarball = packPlatform(platform, binary, dist)
    const app = join(work, `app-${platform}`)
    mkdirSync(app)
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
    const [, cpu, libc] = platform.split('-')
    const env = { ...process.env }
    delete env.INIT_CWD
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--force', '--os=linux', `--cpu=${cpu}`, `--libc=${libc === 'gnu' ? 'glibc' : 'musl'}`, mainTarball, tarball], { cwd: app, env, encoding: 'utf8', timeout: 240000 })
    assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`)
    assert.deepEqual(readdirSync(join(app, 'node_modules')).filter((d) => d.startsWith('mediaserver-rs')).sort(), ['mediaserver-rs', `mediaserver-rs-${platform}`])
    const used = installedCheck(platform, app)
    assert.ok(used.ok, `require('mediaserver-rs') in ${platform}'s Node failed: ${used.error}`)
    assert.deepEqual(used.loaded, [join(app, 'node_modules', `mediaserver-rs-${platform}`, binaryFile(platform))], 'the loader picked another binary')
    assert.equal(used.stats.rooms, 0)

    console.log(`${platform}: built in ${(buildMs / 1000).toFixed(0)} s, ${(statSync(binary).size / 1e6).toFixed(1)} MB; ${elf.machine}, needs ${elf.needed.join(', ')}; ` +
      `loaded by Node ${load.self.version} ${load.self.arch} ${load.self.glibc ? `glibc ${load.self.glibc}` : 'musl'} in ${load.ms} ms: stats ${JSON.stringify(load.stats)}; ` +
      `packed ${(statSync(tarball).size / 1e6).toFixed(1)} MB, installed with the main package and loaded by require('mediaserver-rs')`)
  })
}

test('the checks fail for a binary of another platform', { skip }, (t) => {
  const host = join(root, binaryFile('linux-x64-gnu'))
  assert.ok(existsSync(host), `${host} is missing: npm run build`)
  const arm64Gnu = built.get('linux-arm64-gnu')
  const x64Musl = built.get('linux-x64-musl')
  assert.ok(arm64Gnu && x64Musl, 'the cross builds above did not run')
  // A glibc binary passed off as musl, and the other way round; an arm64 one as x64.
  assert.equal(elfCheck(host, 'linux-x64-musl').ok, false)
  assert.equal(elfCheck(x64Musl, 'linux-x64-gnu').ok, false)
  assert.equal(elfCheck(arm64Gnu, 'linux-x64-gnu').ok, false)
  assert.equal(elfCheck(arm64Gnu, 'linux-arm64-musl').ok, false)
  // The glibc build does not load under musl, nor the musl build under glibc's arm64 Node.
  const glibcUnderMusl = loadCheck('linux-x64-musl', host)
  assert.equal(glibcUnderMusl.ok, false, 'the glibc binary loaded under musl')
  assert.equal(loadCheck('linux-arm64-gnu', x64Musl).ok, false, 'the x64 binary loaded under qemu-aarch64')
  t.diagnostic(`glibc build under musl: ${glibcUnderMusl.error.split('\n').find((l) => /Error|error/.test(l)) ?? glibcUnderMusl.error.slice(0, 200)}`)
})
