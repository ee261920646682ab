// Docs that travel with the package. README.md and docs/*.md are what an npm user gets, so:
// every relative link resolves to a file of this repository that `npm pack` ships (and a
// `#fragment` to a heading of its target); no text points outside the package (`../shared`,
// `/work/`); and docs/API.md names every error code of src/sfu/error.rs with its HTTP status and
// has a section for every method of the MediaServer class in index.d.ts, so the docs cannot
// silently fall behind the code. The last test feeds the same checks broken input: they fail.
//
// Builds nothing: `npm pack --dry-run --json` only lists the files (the .node binary may be
// missing in a fresh checkout; no doc links to it).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Paths (relative to the root, `/`-separated) of what `npm pack` would put in the tarball. */
function packedFiles () {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000
  })
  const [pack] = JSON.parse(out)
  return new Set(pack.files.map((f) => f.path))
}

/** The Markdown files an npm user reads: README.md and docs/*.md (relative to the root). */
function docFiles () {
  const docs = existsSync(join(root, 'docs'))
    ? readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)
    : []
  return ['README.md', ...docs.sort()]
}

/** `text` with its fenced code blocks blanked (line breaks kept, so line numbers stay). */
function withoutFences (text) {
  const lines = text.split('\n')
  let fence = null
  return lines.map((line) => {
    const m = /^ {0,3}(`{3,}|~{3,})/.exec(line)
    if (fence) {
      if (m && m[1][0] === fence[0] && m[1].length >= fence.length && line.trim() === m[1]) fence = null
      return ''
    }
    if (m) { fence = m[1]; return '' }
    return line
  }).join('\n')
}

/** `text` without fenced blocks and inline code spans (blanked, line breaks kept). */
function withoutCode (text) {
  return withoutFences(text).replace(/(`+)([\s\S]*?[^`])\1(?!`)/g, (span) => span.replace(/[^\n]/g, ' '))
}

/** Every link target outside code: inline links and images, reference definitions, HTML href/src. */
export function linksOf (text) {
  const prose = withoutCode(text)
  const found = []
  const lineAt = (index) => prose.slice(0, index).split('\n').length
  const patterns = [
    /!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g,
    /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/gm,
    /\b(?:href|src)\s*=\s*["']([^"']+)["']/g
  ]
  for (const pattern of patterns) {
    for (const m of prose.matchAll(pattern)) {
      found.push({ target: m[1].replace(/^<|>$/g, ''), line: lineAt(m.index) })
    }
  }
  return found.sort((a, b) => a.line - b.line)
}

/** The anchors GitHub (and npm, which follows it) gives the headings of `text`. */
export function anchorsOf (text) {
  const seen = new Map()
  const anchors = new Set()
  for (const line of withoutFences(text).split('\n')) {
    const m = /^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(line)
    if (!m) continue
    const plain = m[1].replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    const base = plain.toLowerCase().replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '').replace(/\s/g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    anchors.add(n === 0 ? base : `${base}-${n}`)
  }
  return anchors
}

/**
 * The problems of the links of one Markdown file (`file`, relative to `base`): targets that are
 * absolute, leave the repository, do not exist, are not in `packed`, or name a missing heading.
 * `read(path)` returns a file's text (for anchors), `exists(path)` and `isDir(path)` look at the
 * repository. External links (`https:`, `mailto:` …) are not checked.
 */
export function linkProblems ({ file, text, packed, read, exists, isDir }) {
  const problems = []
  const shipped = (path) => packed.has(path) || (isDir(path) && [...packed].some((p) => p.startsWith(`${path}/`)))
  for (const { target, line } of linksOf(text)) {
    const where = `${file}:${line}: ${target}`
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
    if (target.startsWith('/') || isAbsolute(target)) { problems.push(`${where}: an absolute path, which no npm user has`); continue }
    const [rawPath, fragment] = target.split('#', 2)
    const pathPart = decodeURIComponent(rawPath.split('?')[0])
    let path = file
    if (pathPart !== '') {
      const abs = resolve(root, dirname(file), pathPart)
      path = relative(root, abs).split(sep).join('/')
      if (path === '' || path.startsWith('..') || isAbsolute(path)) { problems.push(`${where}: outside the package`); continue }
      if (!exists(path)) { problems.push(`${where}: no such file in the repository`); continue }
      if (!shipped(path)) { problems.push(`${where}: not in what npm pack ships`); continue }
    }
    if (fragment !== undefined && fragment !== '' && path.endsWith('.md')) {
      const anchors = anchorsOf(path === file ? text : read(path))
      if (!anchors.has(decodeURIComponent(fragment).toLowerCase())) problems.push(`${where}: no heading #${fragment} in ${path}`)
    }
  }
  return problems
}

/** Mentions of places outside the package, anywhere in `text` (code included). */
export function outsideMentions (file, text) {
  const problems = []
  text.split('\n').forEach((line, i) => {
    for (const bad of ['../shared', '/work/']) if (line.includes(bad)) problems.push(`${file}:${i + 1}: mentions ${bad}`)
  })
  return problems
}

/** Every error code of src/sfu/error.rs with the HTTP status its `http_status()` gives it. */
export function errorTable (rust) {
  const body = (name) => {
    const start = rust.indexOf(`pub fn ${name}(`)
    assert.ok(start >= 0, `error.rs has no fn ${name}`)
    return rust.slice(start, rust.indexOf('\n    }\n', start))
  }
  const codes = new Map()
  for (const m of body('code').matchAll(/SfuError::(\w+)(?:\([^)]*\))?\s*=>\s*"([A-Z_]+)"/g)) codes.set(m[1], m[2])
  const statuses = new Map()
  for (const m of body('http_status').matchAll(/((?:\|?\s*SfuError::\w+(?:\([^)]*\))?\s*)+)=>\s*(\d{3})/g)) {
    for (const v of m[1].matchAll(/SfuError::(\w+)/g)) statuses.set(v[1], Number(m[2]))
  }
  assert.ok(codes.size > 0, 'no error codes found in error.rs')
  return [...codes].map(([variant, code]) => {
    assert.ok(statuses.has(variant), `error.rs: http_status() has no arm for ${variant}`)
    return { code, status: statuses.get(variant) }
  })
}

/** The codes of `table` that `api` lacks as a table row "| `CODE` | STATUS |". */
export function missingCodes (api, table) {
  return table.filter(({ code, status }) => !new RegExp(`^\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`, 'm').test(api))
    .map(({ code, status }) => `${code} (${status})`)
}

/** The method names declared on `export declare class MediaServer` in a .d.ts text. */
export function mediaServerMethods (dts) {
  const start = dts.indexOf('export declare class MediaServer')
  assert.ok(start >= 0, 'index.d.ts declares no class MediaServer')
  const end = dts.indexOf('\n}', start)
  const names = [...dts.slice(start, end).matchAll(/^\s+(\w+)\s*(?:<[^(]*>)?\s*\(/gm)].map((m) => m[1])
  return [...new Set(names)].filter((n) => n !== 'constructor')
}

/** The methods without a heading of their own in `api` ("### `name(…)`"). */
export function missingMethods (api, methods) {
  return methods.filter((name) => !new RegExp(`^#{2,4} .*\`(?:new )?${name}\\(`, 'm').test(api))
}

const repo = {
  read: (p) => readFileSync(join(root, p), 'utf8'),
  exists: (p) => existsSync(join(root, p)),
  isDir: (p) => existsSync(join(root, p)) && statSync(join(root, p)).isDirectory()
}

test('npm pack ships README.md, docs/API.md and docs/DEPLOY.md', () => {
  const packed = packedFiles()
  for (const f of ['README.md', 'docs/API.md', 'docs/DEPLOY.md']) assert.ok(packed.has(f), `${f} is not in npm pack's file list`)
})

test('README.md and docs/*.md: every relative link is a file npm pack ships, every #anchor a heading', () => {
  const packed = packedFiles()
  const problems = []
  let links = 0
  for (const file of docFiles()) {
    const text = repo.read(file)
    links += linksOf(text).length
    problems.push(...linkProblems({ file, text, packed, ...repo }))
  }
  assert.ok(links > 20, `only ${links} links found: is the link parser broken?`)
  assert.deepStrictEqual(problems, [])
})

test('nothing in README.md or docs/*.md points outside the package (../shared, /work/)', () => {
  const problems = docFiles().flatMap((file) => outsideMentions(file, repo.read(file)))
  assert.deepStrictEqual(problems, [])
})

test('docs/API.md lists every error code of src/sfu/error.rs with its HTTP status', () => {
  const table = errorTable(repo.read('src/sfu/error.rs'))
  assert.ok(table.length >= 11, `only ${table.length} codes read from error.rs`)
  assert.deepStrictEqual(missingCodes(repo.read('docs/API.md'), table), [])
})

test('docs/API.md has a section for every method of MediaServer in index.d.ts', () => {
  const methods = mediaServerMethods(repo.read('index.d.ts'))
  assert.ok(methods.includes('createRoom') && methods.includes('close'), `methods read from index.d.ts: ${methods}`)
  assert.deepStrictEqual(missingMethods(repo.read('docs/API.md'), methods), [])
})

test('the checks fail on broken docs: a missing file, an unshipped file, a bad anchor, an outside path, a missing code or method', () => {
  const packed = new Set(['README.md', 'docs/API.md', 'index.d.ts'])
  const text = [
    '# Title', '## A section', '',
    'ok: [api](docs/API.md), [types](index.d.ts), [here](#a-section), [web](https://example.com)',
    'missing: [gone](docs/NOPE.md)',
    'unshipped: [src](src/sfu/error.rs)',
    'anchor: [bad](#no-such-section) and [bad too](docs/API.md#no-such-heading)',
    'outside: [spec](../shared/spec/API.md), [abs](/work/main/README.md)',
    '`[in code](nowhere.md)` is not a link',
    '```', '[in a fence](nowhere.md)', '```'
  ].join('\n')
  const problems = linkProblems({ file: 'README.md', text, packed, ...repo })
  assert.equal(problems.length, 6, problems.join('\n'))
  for (const bad of ['docs/NOPE.md: no such file', 'src/sfu/error.rs: not in what npm pack ships', '#no-such-section: no heading',
    'docs/API.md#no-such-heading: no heading', '../shared/spec/API.md: outside the package', '/work/main/README.md: an absolute path']) {
    assert.ok(problems.some((p) => p.includes(bad)), `expected a problem "${bad}" in:\n${problems.join('\n')}`)
  }
  assert.equal(outsideMentions('README.md', text).length, 2)
  const table = [{ code: 'ROOM_NOT_FOUND', status: 404 }, { code: 'BRAND_NEW', status: 418 }]
  assert.deepStrictEqual(missingCodes('| `ROOM_NOT_FOUND` | 404 | no room |\n| `BRAND_NEW` | 400 | wrong status |', table), ['BRAND_NEW (418)'])
  const dts = 'export declare class MediaServer {\n  constructor(options?: X)\n  on<K extends E>(event: K): this\n  metrics(): Promise<string>\n}\n'
  assert.deepStrictEqual(mediaServerMethods(dts), ['on', 'metrics'])
  assert.deepStrictEqual(missingMethods('### `on(event, listener)`\n', ['on', 'metrics']), ['metrics'])
})
