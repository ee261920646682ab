// The control API both benchmark servers expose: the routes of shared/spec/API.md over
// node:http, JSON in and out, errors as { error: { code, message } } with the spec's statuses.
// `sfu` has the MediaServer method names; `extra` adds GET routes (e.g. /bench/pids).
import http from 'node:http'

const STATUS = {
  INVALID_ARGUMENT: 400, INVALID_SDP: 400, ROOM_NOT_FOUND: 404, USER_NOT_FOUND: 404,
  ROOM_EXISTS: 409, USER_EXISTS: 409, NOT_PRODUCING: 409, NO_PENDING_OFFER: 409,
  RESOURCE_EXHAUSTED: 503, SERVER_CLOSED: 503, INTERNAL: 500,
}

export function serve (sfu, { host = '127.0.0.1', port, extra = {} }) {
  const server = http.createServer(async (req, res) => {
    let body = ''
    for await (const chunk of req) body += chunk
    const send = (status, value) => {
      const text = JSON.stringify(value ?? {})
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
      res.end(text)
    }
    try {
      const json = body ? JSON.parse(body) : {}
      const p = new URL(req.url, 'http://x').pathname.split('/').filter(Boolean).map(decodeURIComponent)
      let result
      if (req.method === 'GET' && extra[req.url]) result = await extra[req.url]()
      else if (p[0] !== 'rooms') return send(404, { error: { code: 'NOT_FOUND', message: req.url } })
      else if (req.method === 'POST' && p.length === 2) result = await sfu.createRoom(p[1], json)
      else if (req.method === 'POST' && p.length === 4) result = await sfu.addUser(p[1], p[3], json)
      else if (req.method === 'POST' && p[4] === 'produce') result = await sfu.produce(p[1], p[3], json)
      else if (req.method === 'POST' && p[4] === 'consume') result = await sfu.consume(p[1], p[3], json)
      else if (req.method === 'DELETE' && p[4] === 'produce') result = await sfu.stopProduce(p[1], p[3])
      else if (req.method === 'DELETE' && p.length === 4) result = await sfu.removeUser(p[1], p[3])
      else if (req.method === 'DELETE' && p.length === 2) result = await sfu.deleteRoom(p[1])
      else return send(404, { error: { code: 'NOT_FOUND', message: `${req.method} ${req.url}` } })
      send(200, result)
    } catch (err) {
      const code = err.code in STATUS ? err.code : 'INTERNAL'
      if (code === 'INTERNAL') console.error(err)
      send(STATUS[code], { error: { code, message: String(err.message ?? err) } })
    }
  })
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)))
}

export function args (defaults) {
  const out = { ...defaults }
  const a = process.argv.slice(2)
  for (let i = 0; i < a.length; i++) {
    const k = a[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase())
    out[k] = typeof defaults[k] === 'number' ? Number(a[++i]) : a[++i]
  }
  return out
}
