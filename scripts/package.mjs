// `npm run package [-- --out DIR] [-- --skip-build]`: builds the addon for every target of
// package.json's `napi.targets` this machine can build, puts each binary in its platform
// package (npm/<platform>, made by `napi create-npm-dirs`), and packs the main package (with
// an `optionalDependencies` entry per platform package, as napi-rs's `pre-publish` writes it)
// and every platform package that has its binary, into DIR (default: dist/).
//
// The host's target builds with `napi build`; the other Linux targets cross-build with zig
// (scripts/cross.mjs: `napi build -x`, cargo-zigbuild, into target/cross) when rustup has their
// standard library and cargo-zigbuild and zig are there (bash scripts/cross-deps.sh installs
// them); macOS and Windows are declared and built by .github/workflows/release.yml on hosted
// runners. `--skip-build` packs the binaries already built (`npm run build` in the repository,
// cross builds in npm/<platform>/), as the test suite does.

import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createRequire } from 'node:module'

import { buildCross, missingBuildTools } from './cross.mjs'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const { platformOf } = createRequire(import.meta.url)(join(root, 'platform.js'))
const { values } = parseArgs({ options: { out: { type: 'string', default: join(root, 'dist') }, 'skip-build': { type: 'boolean', default: false } } })
const out = resolve(values.out)
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts })

const host = run('rustc', ['-vV']).match(/^host: (.+)$/m)[1]
const built = []
const skipped = []
for (const target of pkg.napi.targets) {
  const platform = platformOf(target)
  const binary = `${pkg.napi.binaryName}.${platform}.node`
  if (target === host) {
    if (!values['skip-build']) run('npx', ['napi', 'build', '--platform', '--release', '--js', 'binding.js'], { stdio: 'inherit' })
    if (!existsSync(join(root, binary))) throw new Error(`${binary} is missing: run npm run build`)
    copyFileSync(join(root, binary), join(root, 'npm', platform, binary))
    built.push(platform)
  } else if (!target.includes('linux')) {
    // macOS and Windows need their SDKs: the release workflow builds those.
    skipped.push(`${platform}: built by the release workflow (${target} needs its SDK)`)
  } else if (!values['skip-build'] && missingBuildTools([target]).length) {
    skipped.push(`${platform}: missing ${missingBuildTools([target]).join(', ')} (bash scripts/cross-deps.sh)`)
  } else {
    const dir = join(root, 'npm', platform)
    if (!values['skip-build']) buildCross(target, dir, { targetDir: process.env.CARGO_TARGET_DIR ?? join(root, 'target/cross') })
    rmSync(join(dir, 'index.d.ts'), { force: true })
    if (existsSync(join(dir, binary))) built.push(platform)
    else skipped.push(`${platform}: not built (run without --skip-build)`)
  }
}

rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
const pack = (dir) => JSON.parse(run('npm', ['pack', '--json', '--pack-destination', out], { cwd: dir }))[0]

// The main package: the files npm would pack, without binaries (they travel in the platform
// packages), with a manifest for users rather than for development.
const stage = join(out, 'stage')
const files = JSON.parse(run('npm', ['pack', '--dry-run', '--json']))[0].files.map((f) => f.path)
for (const file of files.filter((f) => !f.endsWith('.node'))) {
  mkdirSync(dirname(join(stage, file)), { recursive: true })
  cpSync(join(root, file), join(stage, file))
}
const manifest = { ...pkg, files: pkg.files.filter((f) => !f.includes('.node')) }
delete manifest.devDependencies
manifest.scripts = { install: pkg.scripts.install }
manifest.optionalDependencies = Object.fromEntries(pkg.napi.targets.map((t) => [`${pkg.name}-${platformOf(t)}`, pkg.version]))
writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n')
const packed = [pack(stage)]
rmSync(stage, { recursive: true, force: true })
for (const platform of built) packed.push(pack(join(root, 'npm', platform)))

for (const p of packed) console.log(`${join(out, p.filename)}\t${(statSync(join(out, p.filename)).size / 1e6).toFixed(1)} MB packed, ${(p.unpackedSize / 1e6).toFixed(1)} MB unpacked`)
for (const s of skipped) console.log(`not built here: ${s}`)
