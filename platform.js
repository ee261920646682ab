'use strict'
// Platform names as the per-platform packages use them (`linux-x64-gnu`, `darwin-arm64`,
// `win32-x64-msvc`): for a Rust target triple, and for this process.

/** The platform of a Rust target triple (package.json's `napi.targets`). */
function platformOf (triple) {
  const [arch, vendor, os, abi] = triple.split('-')
  const cpu = { x86_64: 'x64', aarch64: 'arm64' }[arch] ?? arch
  const system = { apple: 'darwin', pc: 'win32' }[vendor] ?? os
  return [system, cpu, system === 'darwin' ? null : abi].filter(Boolean).join('-')
}

/** This process's platform. */
function currentPlatform () {
  const { platform, arch } = process
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform !== 'linux') return `${platform}-${arch}`
  const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime
  return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
}

module.exports = { platformOf, currentPlatform }
