// The types: the README's js/mjs/ts examples type-check against index.d.ts and serve.d.ts
// (scripts/check-readme-types.mjs), that check does fail on a wrong example, and a fixture using
// the whole typed surface type-checks with every misuse in it rejected (`@ts-expect-error`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tsc } from '../scripts/check-readme-types.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const script = join(root, 'scripts/check-readme-types.mjs')

function checkReadme (path) {
  return spawnSync(process.execPath, [script, path], { cwd: root, encoding: 'utf8' })
}

test("the README's code blocks type-check", () => {
  const r = checkReadme(join(root, 'README.md'))
  assert.equal(r.status, 0, `scripts/check-readme-types.mjs failed:\n${r.stdout}${r.stderr}`)
})

test('a wrong README example fails the check, with its README line', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'readme-types-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const readme = join(dir, 'README.md')
  writeFileSync(readme, [
    '# broken', //                                                    1
    '', //                                                            2
    '```sh', //                                                       3
    'this is not checked', //                                         4
    '```', //                                                         5
    '', //                                                            6
    '```js', //                                                       7
    "const { MediaServer } = require('mediaserver-rs')", //          8
    "new MediaServer({ portRange: { min: 'x', max: 2 } })", //        9
    '```', //                                                        10
    '', //                                                           11
    '```mjs', //                                                     12
    "import { MediaServer } from 'mediaserver-rs'", //               13
    'const media = new MediaServer()', //                            14
    "await media.produce('r', 'u', { constraints: {} })", //         15
    '```', //                                                        16
    '', //                                                           17
    '```js', //                                                      18
    '// no-typecheck', //                                            19
    'this is not checked either (', //                               20
    '```', //                                                        21
    '', //                                                           22
    '```ts', //                                                      23
    "import { MediaServer } from 'mediaserver-rs'", //               24
    "const s: number = (await new MediaServer().stats()).rooms", //  25
    '```', //                                                        26
    ''
  ].join('\n'))
  const r = checkReadme(readme)
  const out = r.stdout + r.stderr
  assert.equal(r.status, 1, out)
  assert.match(out, /README\.md:9:\d+: error TS2322: Type 'string' is not assignable to type 'number'/)
  assert.match(out, /README\.md:15:\d+: error TS\d+: .*ConstraintsPatch/)
  assert.doesNotMatch(out, /README\.md:(4|20|25):/)
  assert.match(out, /2 of 3 js\/mjs\/ts blocks fail/)
})

test('the fixture using the whole typed surface type-checks (every misuse in it rejected)', () => {
  const r = tsc([join(root, '__test__/fixtures/types-usage.ts')])
  assert.equal(r.status, 0, `tsc --noEmit __test__/fixtures/types-usage.ts:\n${r.stdout}${r.stderr}`)
})
