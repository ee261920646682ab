// Runs a test script inside a private network namespace (`unshare -n`: only loopback, which the
// test may shape with nftables and sysctl without touching the host), and returns the JSON the
// script printed on its line starting with `${tag} `.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export function runInPrivateNetwork (scriptUrl, { tag, setup = 'ip link set lo up', timeout = 170000 }) {
  const script = fileURLToPath(scriptUrl)
  const run = spawnSync('unshare', ['-n', '--', 'sh', '-c', `${setup} && exec "${process.execPath}" "${script}"`], { encoding: 'utf8', timeout })
  assert.equal(run.error, undefined, `could not run the namespace: ${run.error}`)
  const line = run.stdout.split('\n').find((l) => l.startsWith(`${tag} `))
  assert.ok(line, `no result from ${script} (exit ${run.status}):\n${run.stdout}\n${run.stderr}`)
  const result = JSON.parse(line.slice(tag.length + 1))
  assert.equal(result.error, undefined, result.error)
  return result
}
