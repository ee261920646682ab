#!/usr/bin/env node
// Type-checks the README's code examples against this package's index.d.ts and serve.d.ts.
//
//   node scripts/check-readme-types.mjs [README.md]
//
// Every fenced block tagged js, mjs or ts (unless its first line is `// no-typecheck`) is written
// to its own file under .readme-check/ and all of them go through one `tsc --noEmit` in strict
// mode. A js block is CommonJS (.cjs) unless it has a top-level import/export (then .mjs, as
// Node's syntax detection would run it); a ts block is an ES module (.mts), so mjs and ts blocks
// may use top-level await. `mediaserver-rs` and `mediaserver-rs/serve` resolve through the
// package's own "exports" (a self-reference: the blocks sit inside this package), exactly as a
// user's code sees them. Exit 0 when every block type-checks; else tsc's errors with README
// line:column positions, and exit 1.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** The compiler options of every check (the README's blocks and __test__/fixtures/types-usage.ts). */
export const tscArgs = [
  '--noEmit', '--pretty', 'false', '--strict', '--target', 'es2022',
  '--module', 'nodenext', '--moduleResolution', 'nodenext', '--moduleDetection', 'force',
  '--allowJs', '--checkJs', '--types', 'node'
]

/** Runs this repo's TypeScript compiler on `files` (resolved against `cwd`). */
export function tsc (files, cwd = root) {
  return spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), ...tscArgs, ...files], { cwd, encoding: 'utf8' })
}

/** The checkable blocks of a Markdown text: `{ line, indent, ext, code }`, `line` being the 1-based line of the block's first line of code. */
export function extractBlocks (markdown) {
  const blocks = []
  let open = null
  markdown.split(/\r?\n/).forEach((text, i) => {
    const fence = text.match(/^( *)(`{3,}|~{3,})\s*([^\s`]*)/)
    if (!open) {
      if (fence) open = { indent: fence[1].length, marker: fence[2], lang: fence[3].toLowerCase(), line: i + 2, lines: [] }
    } else if (fence && fence[2][0] === open.marker[0] && fence[2].length >= open.marker.length && !fence[3] && text.trim() === fence[2]) {
      const code = open.lines.join('\n') + '\n'
      const esm = /^(import|export)\s/m.test(code)
      const ext = open.lang === 'js' ? (esm ? '.mjs' : '.cjs') : open.lang === 'mjs' ? '.mjs' : open.lang === 'ts' ? '.mts' : null
      if (ext && !/^\s*\/\/\s*no-typecheck\b/.test(open.lines[0] ?? '')) blocks.push({ line: open.line, indent: open.indent, ext, code })
      open = null
    } else {
      open.lines.push(text.slice(Math.min(open.indent, text.length - text.trimStart().length)))
    }
  })
  return blocks
}

function main (readmeArg = 'README.md') {
  const readme = resolve(readmeArg)
  const shown = relative(process.cwd(), readme).startsWith('..') ? readme : relative(process.cwd(), readme)
  const blocks = extractBlocks(readFileSync(readme, 'utf8'))
  if (blocks.length === 0) {
    console.log(`${shown}: no js/mjs/ts blocks to check`)
    return 0
  }
  const dir = join(root, '.readme-check', String(process.pid))
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  try {
    const byName = new Map()
    for (const b of blocks) {
      const name = `readme-L${b.line}${b.ext}`
      writeFileSync(join(dir, name), b.code)
      byName.set(name, b)
    }
    const r = tsc([...byName.keys()], dir)
    if (r.status === 0) {
      console.log(`${shown}: all ${blocks.length} js/mjs/ts blocks type-check`)
      return 0
    }
    // "readme-L48.cjs(8,53): error TS2345: …" -> "README.md:55:53: error TS2345: …"
    const failed = new Set()
    const out = (r.stdout + r.stderr).replace(/^(readme-L\d+\.\w+)\((\d+),(\d+)\)/gm, (whole, name, l, c) => {
      const b = byName.get(name)
      if (!b) return whole
      failed.add(b)
      return `${shown}:${b.line + Number(l) - 1}:${b.indent + Number(c)}`
    })
    console.log(out.trimEnd())
    console.log(`\n${shown}: ${failed.size} of ${blocks.length} js/mjs/ts blocks fail to type-check (tsc exit ${r.status ?? r.signal})`)
    return 1
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv[2])
