'use strict'
// npm's `install` step. From the registry, the platform's prebuilt package brings the binary,
// and this does nothing. From a git checkout (a git dependency, or a clone), where no binary
// matches, it builds one with cargo when cargo is there; otherwise it says what is missing and
// lets the install finish (requiring the package then gives the same message).
const { execFileSync, spawnSync } = require('node:child_process')
const { copyFileSync, existsSync } = require('node:fs')
const { join, resolve } = require('node:path')

const root = join(__dirname, '..')
const loads = () => spawnSync(process.execPath, ['-e', 'require(process.argv[1])', join(root, 'index.js')], { stdio: 'ignore' }).status === 0

if (loads()) process.exit(0)
// `npm install` / `npm ci` in the repository itself: development, where `npm run build` (and
// `npm test`) build the addon; only an install into another project builds here.
if (process.env.INIT_CWD && resolve(process.env.INIT_CWD) === root) process.exit(0)
if (!existsSync(join(root, 'Cargo.toml'))) {
  console.warn('mediaserver-rs: no prebuilt binary for this platform, and no Rust source to build one from (see the README, "Install")')
  process.exit(0)
}
if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.warn('mediaserver-rs: no binary yet, and no cargo to build one: install Rust (https://rustup.rs), then run `npm run build`')
  process.exit(0)
}
console.log('mediaserver-rs: building the native addon with cargo (a few minutes, once) ...')
execFileSync('cargo', ['build', '--release', '--lib'], { cwd: root, stdio: 'inherit' })
const { platform } = process
const library = { linux: 'libmediaserver_rs.so', darwin: 'libmediaserver_rs.dylib', win32: 'mediaserver_rs.dll' }[platform]
const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
// The name binding.js looks for first: mediaserver-rs.<platform>.node.
const { napi } = require('../package.json')
const here = require('../platform.js').currentPlatform()
copyFileSync(join(targetDir, 'release', library), join(root, `${napi.binaryName}.${here}.node`))
if (!loads()) {
  console.error('mediaserver-rs: built, but the binary does not load')
  process.exit(1)
}
