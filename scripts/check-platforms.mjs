// `node scripts/check-platforms.mjs`: checks the cross-built binaries in npm/<platform>/ (made by
// `npm run package`) the way the test suite's __test__/platforms.test.mjs checks its own builds
// (scripts/cross.mjs): each binary's ELF machine and the libc its dynamic section needs, and a
// load by a Node.js of its platform (arm64 under qemu-aarch64, musl under Debian 13's musl
// loader; bash scripts/cross-deps.sh installs them) that makes a MediaServer, asks for stats()
// and closes it.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { binaryFile, crossTargets, elfCheck, loadCheck, platformOf, root } from './cross.mjs'

let failed = 0
for (const target of crossTargets) {
  const platform = platformOf(target)
  const binary = join(root, 'npm', platform, binaryFile(platform))
  if (!existsSync(binary)) {
    console.log(`${platform}: not built`)
    continue
  }
  const elf = elfCheck(binary, platform)
  const load = loadCheck(platform, binary)
  if (!elf.ok || !load.ok) failed++
  console.log(`${platform}: ${elf.machine}; needs ${elf.needed.join(', ') || 'nothing (static)'}: ${elf.ok ? 'ok' : 'WRONG'}`)
  console.log(`  loaded: ${load.ok ? `Node ${load.self.version} ${load.self.arch} ${load.self.glibc ? `glibc ${load.self.glibc}` : 'musl'}, stats ${JSON.stringify(load.stats)}` : `FAILED ${load.error}`}`)
}
process.exit(failed ? 1 : 0)
