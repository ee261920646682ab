// mediaserver-rs behind the benchmark's control API: MediaServer from the built addon
// (/work/main/index.js), one method per route. The addon runs in this process, so this
// process's CPU and RSS are the server's.
import { createRequire } from 'node:module'
import { serve, args } from './http-api.mjs'

const { MediaServer } = createRequire(import.meta.url)('../../index.js')
const opt = args({ port: 50000, rtcMinPort: 51000, rtcMaxPort: 59999 })
const sfu = new MediaServer({ listenIp: '127.0.0.1', portRange: { min: opt.rtcMinPort, max: opt.rtcMaxPort } })
await serve(sfu, { port: opt.port, extra: { '/bench/pids': () => ({ server: process.pid }) } })
console.log(JSON.stringify({ ready: true, server: 'mediaserver-rs', pids: { server: process.pid } }))
process.on('SIGTERM', async () => { await sfu.close().catch(() => {}); process.exit(0) })
