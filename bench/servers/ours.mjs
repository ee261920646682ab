// mediaserver-rs behind the benchmark's control API: MediaServer from the built addon
// (/work/main/index.js), one method per route. The addon runs in this process, so this
// process's CPU and RSS are the server's.
import { createRequire } from 'node:module'
import { serve, args } from './http-api.mjs'

const { MediaServer } = createRequire(import.meta.url)('../../index.js')
// --engine tasks|loops (default: the addon's default, or MEDIASERVER_ENGINE), --workers N (loops)
const opt = args({ port: 50000, rtcMinPort: 51000, rtcMaxPort: 59999, engine: '', workers: 0 })
const options = { listenIp: '127.0.0.1', portRange: { min: opt.rtcMinPort, max: opt.rtcMaxPort } }
if (opt.engine) options.engine = opt.engine
if (Number(opt.workers) > 0) options.workers = Number(opt.workers)
const sfu = new MediaServer(options)
await serve(sfu, { port: opt.port, extra: { '/bench/pids': () => ({ server: process.pid }) } })
console.log(JSON.stringify({ ready: true, server: 'mediaserver-rs', engine: opt.engine || process.env.MEDIASERVER_ENGINE || 'default', workers: options.workers ?? null, pids: { server: process.pid } }))
process.on('SIGTERM', async () => { await sfu.close().catch(() => {}); process.exit(0) })
