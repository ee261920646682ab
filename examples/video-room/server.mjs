// The demo room's backend: the page over HTTP, signalling over a WebSocket (`ws`), and the
// MediaServer addon called exactly as a backend would call the media server's REST API. Every
// `outbound` item is relayed to the user it names.
//
//   node examples/video-room/server.mjs [--host 127.0.0.1] [--port 3000] [--announced-ip IP]
//                                       [--listen-ip IP] [--port-min N --port-max N]
import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { extname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { WebSocketServer } from 'ws'

const require = createRequire(import.meta.url)
const { MediaServer } = require('../../index.js')

const PUBLIC = fileURLToPath(new URL('./public/', import.meta.url))
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' }

/**
 * Starts the demo. Resolves to { url, port, media, close() }.
 * `listenIp` is where media connections bind (default: `host` when it is an IP, so a demo on
 * 127.0.0.1 keeps all its traffic on loopback).
 */
export async function startDemo ({ host = '127.0.0.1', port = 3000, listenIp, announcedIp, portRange, log = console.log } = {}) {
  const media = new MediaServer({
    listenIp: listenIp ?? (/^[\d.]+$/.test(host) && host !== '0.0.0.0' ? host : undefined),
    announcedIp,
    portRange
  })
  /** roomId -> Map(userId -> ws) */
  const rooms = new Map()
  // The room's dominant speaker, for every page of the room to highlight.
  media.on('activespeaker', ({ roomId, userId }) => {
    for (const socket of rooms.get(roomId)?.values() ?? []) {
      if (socket.readyState === 1) socket.send(JSON.stringify({ type: 'speaker', id: userId }))
    }
  })

  // Which simulcast layer each page gets of each producer, for its tile's badge.
  media.on('layerschange', ({ roomId, userId, producerId, spatialLayer }) => {
    const socket = rooms.get(roomId)?.get(userId)
    if (socket?.readyState === 1) socket.send(JSON.stringify({ type: 'layer', from: producerId, spatialLayer }))
  })

  const http = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname
    const file = path === '/' || path.startsWith('/room/') ? 'index.html' : path.slice(1)
    if (!/^[\w.-]+$/.test(file)) return void res.writeHead(404).end()
    try {
      const body = await readFile(join(PUBLIC, file))
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' })
      res.end(body)
    } catch {
      res.writeHead(404).end('not found')
    }
  })

  const wss = new WebSocketServer({ server: http, path: '/ws' })
  wss.on('connection', (ws) => {
    const me = { id: randomUUID(), room: null }
    const send = (socket, message) => { if (socket?.readyState === 1) socket.send(JSON.stringify(message)) }
    const peers = () => rooms.get(me.room) ?? new Map()
    const toUser = (id, message) => send(peers().get(id), message)

    const handlers = {
      async join ({ room, userInfo }) {
        if (me.room) throw Object.assign(new Error('already joined'), { code: 'INVALID_ARGUMENT' })
        await media.createRoom(room).catch((e) => { if (e.code !== 'ROOM_EXISTS') throw e })
        const joined = await media.addUser(room, me.id, { userInfo })
        me.room = room
        if (!rooms.has(room)) rooms.set(room, new Map())
        for (const [, socket] of peers()) send(socket, { type: 'peer-joined', id: me.id, userInfo: joined.userInfo })
        peers().set(me.id, ws)
        send(ws, { type: 'joined', ...joined })
        log(`[${room}] ${me.id} joined (${peers().size} in the room)`)
      },
      async produce ({ offer, constraints }) {
        const res = await media.produce(me.room, me.id, { offer, constraints })
        send(ws, { type: 'produced', answer: res.answer, constraints: res.constraints })
        for (const item of res.outbound) {
          toUser(item.id, { type: item.offer ? 'offer' : 'constraints', from: me.id, userInfo: res.userInfo, offer: item.offer, constraints: item.constraints })
        }
      },
      async consume ({ answers }) {
        await media.consume(me.room, me.id, { answers })
      },
      async layers ({ producer, spatialLayer }) {
        const res = await media.setPreferredLayers(me.room, me.id, producer, { spatialLayer })
        send(ws, { type: 'layers', producer, ...res })
      },
      async stopProduce () {
        const res = await media.stopProduce(me.room, me.id)
        send(ws, { type: 'stopped' })
        for (const item of res.outbound) toUser(item.id, { type: 'producer-stopped', from: me.id })
      },
      async leave () {
        await leave()
        send(ws, { type: 'left' })
      }
    }

    async function leave () {
      if (!me.room) return
      const room = me.room
      me.room = null
      rooms.get(room)?.delete(me.id)
      if (rooms.get(room)?.size === 0) rooms.delete(room)
      const res = await media.removeUser(room, me.id).catch(() => null)
      for (const item of res?.outbound ?? []) send(rooms.get(room)?.get(item.id), { type: 'peer-left', id: me.id })
      log(`[${room}] ${me.id} left`)
    }

    // One message at a time per socket, in order.
    let queue = Promise.resolve()
    ws.on('message', (data) => {
      queue = queue.then(async () => {
        let message
        try {
          message = JSON.parse(data)
          const handler = handlers[message.type]
          if (!handler) throw Object.assign(new Error(`unknown message type ${message.type}`), { code: 'INVALID_ARGUMENT' })
          if (message.type !== 'join' && !me.room) throw Object.assign(new Error('join a room first'), { code: 'INVALID_ARGUMENT' })
          await handler(message)
        } catch (err) {
          send(ws, { type: 'error', request: message?.type, code: err.code ?? 'INTERNAL', message: err.message })
        }
      })
    })
    ws.on('close', () => { queue = queue.then(leave) })
  })

  await new Promise((resolve, reject) => http.once('error', reject).listen(port, host, resolve))
  const actualPort = http.address().port
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actualPort}`,
    port: actualPort,
    media,
    async close () {
      for (const client of wss.clients) client.terminate()
      wss.close()
      await new Promise((resolve) => http.close(resolve))
      await media.close()
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: process.env.HOST ?? '127.0.0.1' },
      port: { type: 'string', default: process.env.PORT ?? '3000' },
      'announced-ip': { type: 'string', default: process.env.ANNOUNCED_IP },
      'listen-ip': { type: 'string', default: process.env.LISTEN_IP },
      'port-min': { type: 'string' },
      'port-max': { type: 'string' }
    }
  })
  const portRange = values['port-min'] ? { min: Number(values['port-min']), max: Number(values['port-max'] ?? values['port-min']) } : undefined
  const demo = await startDemo({
    host: values.host,
    port: Number(values.port),
    announcedIp: values['announced-ip'],
    listenIp: values['listen-ip'],
    portRange
  })
  console.log(`video room demo on ${demo.url}  (open it in two tabs; the room is ?room=NAME)`)
  const stop = async () => { await demo.close(); process.exit(0) }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}
