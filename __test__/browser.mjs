// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core, with a fake camera
// and microphone, for the end-to-end tests of the demo room. See shared/testing/PEERS.md.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createRequire } from 'node:module'
import { chromium } from 'playwright-core'

const require = createRequire(import.meta.url)
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Playwright passes its own --disable-features list and Chromium honours only the last such
 * switch, so ours must repeat Playwright's list and add WebRtcHideLocalIpsWithMdns: without it
 * any page touching WebRTC joins the mDNS multicast group and sends packets off the machine.
 * The list is read from the installed playwright-core, so it follows its version.
 */
export function disabledFeatures () {
  const root = dirname(require.resolve('playwright-core/package.json'))
  const bundle = readFileSync(join(root, 'lib', 'coreBundle.js'), 'utf8')
  const block = bundle.match(/disabledFeatures = \[([\s\S]*?)\]\.filter\(Boolean\)/)
  if (!block) throw new Error('cannot find the --disable-features list in playwright-core; update __test__/browser.mjs')
  const features = [...block[1].matchAll(/^\s*"([\w-]+)",?\s*(?:\/\/.*)?$/gm)].map((m) => m[1])
  if (features.length < 5) throw new Error(`implausible --disable-features list from playwright-core: ${features}`)
  return [...features, 'WebRtcHideLocalIpsWithMdns']
}

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Inside a network namespace with only loopback, Chromium gathers nothing without it.
  '--allow-loopback-in-peer-connection'
]

/** A browser with a fresh profile; `close()` removes the profile. */
export async function launchBrowser ({ args = [] } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'mediaserver-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args, `--disable-features=${disabledFeatures().join(',')}`],
    permissions: ['camera', 'microphone']
  })
  return {
    context,
    async newPage (url) {
      const page = await context.newPage()
      page.on('pageerror', (err) => console.error(`[page ${url}] ${err.message}`))
      await page.goto(url)
      await page.waitForFunction(() => window.__demo?.joined === true, null, { timeout: 20000 })
      return page
    },
    async close () {
      await context.close().catch(() => {})
      rmSync(profile, { recursive: true, force: true })
    }
  }
}

/** The page's view of what it receives and sends (see examples/video-room/public/app.js). */
export function demoStats (page) {
  return page.evaluate(() => window.__demo.stats())
}

/** Polls `fn` until it returns a truthy value; throws with `message` after `timeout` ms. */
export async function until (fn, { timeout = 15000, interval = 200, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let last
  while (Date.now() < deadline) {
    try {
      last = await fn()
      if (last) return last
    } catch (err) {
      last = err
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${message}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`)
}

/**
 * Polls `read` every `interval` ms until `key(value)` is the same on `reads` consecutive polls;
 * returns `{ first, last }`, the samples that open and close that still run. A counter that keeps
 * moving never satisfies it, and it throws after `timeout` ms: started once the event that should
 * stop a flow has happened, it proves the flow stopped (the default, a second without change, is
 * some 30 video frames or 50 audio packets of a live flow). helpers.mjs has the same as
 * `waitSteady`; this one spares the browser tests loading @roamhq/wrtc.
 */
export async function steady (read, { key = (v) => v, interval = 500, reads = 3, timeout = 15000, message = 'counter steady' } = {}) {
  const deadline = Date.now() + timeout
  const seen = []
  let run = null
  for (;;) {
    const value = await read()
    const k = JSON.stringify(key(value))
    if (run && run.k === k) {
      run.count++
      run.last = value
    } else {
      run = { k, count: 1, first: value, last: value }
    }
    seen.push(k)
    if (run.count >= reads) return { first: run.first, last: run.last }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}; last values: ${seen.slice(-12).join(' -> ')}`)
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}
