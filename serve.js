'use strict'
// The HTTP server: the media-server REST API of ../shared/spec/API.md served over HTTP on top
// of the addon, so that a backend written against the original media server can switch
// without code changes. One route per MediaServer method; 200 with exactly the JSON the method
// resolves to, or the spec's status and `{ "error": { "code", "message" } }`.
//
//   const { serve } = require('mediaserver-rs/serve')
//   const http = await serve({ port: 8080, announcedIp: '203.0.113.7', token: process.env.MEDIASERVER_TOKEN })
//   ...
//   await http.close()
//
// With a `token`, every request must carry `Authorization: Bearer <token>` (401 UNAUTHENTICATED
// otherwise, before its body is read and before it reaches the MediaServer). Without one, serve()
// listens only on a loopback address unless `insecure: true` says that something else guards it.

const crypto = require('node:crypto')
const { STATUS_CODES } = require('node:http')
const net = require('node:net')
const Fastify = require('fastify')

/** The HTTP status of every error code (the spec's error table). */
const httpStatus = Object.freeze({
  INVALID_ARGUMENT: 400,
  INVALID_SDP: 400,
  ROOM_NOT_FOUND: 404,
  USER_NOT_FOUND: 404,
  ROOM_EXISTS: 409,
  USER_EXISTS: 409,
  NOT_PRODUCING: 409,
  NO_PENDING_OFFER: 409,
  RESOURCE_EXHAUSTED: 503,
  SERVER_CLOSED: 503,
  INTERNAL: 500,
  UNAVAILABLE: 503
})

/** The Content-Type of `GET /metrics`: Prometheus's text exposition format. */
const metricsContentType = 'text/plain; version=0.0.4; charset=utf-8'

/** Request bodies up to this size reach the addon (which rejects an SDP over 64 KiB itself). */
const BODY_LIMIT = 1024 * 1024

/** fastify's limit on one path parameter (an id); longer ones are INVALID_ARGUMENT like any bad id. */
const MAX_PARAM_LENGTH = 16 * 1024

/** The keys serve() reads itself; every other key is a MediaServer constructor option. */
const SERVE_KEYS = new Set(['host', 'port', 'media', 'token', 'insecure'])

/** A token is what fits in an HTTP header unchanged: visible ASCII, no spaces. */
const TOKEN_PATTERN = /^[\x21-\x7e]+$/

/** 127.0.0.0/8 and ::1 (BlockList also matches their IPv4-mapped and long IPv6 spellings). */
const LOOPBACK = new net.BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/**
 * Whether `host` is a loopback address: `localhost`, 127.0.0.0/8 or ::1. Anything else (the
 * wildcards `0.0.0.0` and `::`, an interface's address, any other host name) is reachable from
 * elsewhere, or may be.
 */
function isLoopbackHost (host) {
  if (typeof host !== 'string') return false
  if (host.toLowerCase() === 'localhost') return true
  const family = net.isIP(host)
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6')
}

/** An Error of class `Ctor` with the spec's `code: 'INVALID_ARGUMENT'`. */
function invalidArgument (message, Ctor = Error) {
  const err = new Ctor(message)
  err.code = 'INVALID_ARGUMENT'
  return err
}

/** An error the HTTP layer answers with itself (not one of the addon's). */
class HttpError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** The status and body for any error: an addon error, a framework error, or ours. */
function errorReply (err) {
  if (err instanceof HttpError) return [err.status, err.code, err.message]
  const code = err && typeof err.code === 'string' ? err.code : undefined
  const message = err && typeof err.message === 'string' && err.message ? err.message : String(err)
  if (code && Object.hasOwn(httpStatus, code)) return [httpStatus[code], code, message]
  // fastify's own errors (FST_ERR_…): a body it could not read, a bad Content-Type, a bad path
  const status = err && Number.isInteger(err.statusCode) ? err.statusCode : 500
  if (status === 413) return [413, 'INVALID_ARGUMENT', `the request body is larger than ${BODY_LIMIT} bytes`]
  if (code === 'FST_ERR_BAD_URL') return [400, 'INVALID_ARGUMENT', `the path is not valid percent-encoded UTF-8 (${message})`]
  if (code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return [400, 'INVALID_ARGUMENT', `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`]
  }
  if (status === 415) return [400, 'INVALID_ARGUMENT', 'the Content-Type header cannot be parsed']
  if (status >= 400 && status < 500) return [400, 'INVALID_ARGUMENT', message]
  return [500, 'INTERNAL', message]
}

/**
 * Every request body is read as JSON, whatever its Content-Type says (a backend that forgot
 * the header still works); an empty body is no body. Plain `JSON.parse`: a `__proto__` key in
 * `userInfo` is an own property like any other, passed to the addon and echoed back untouched.
 */
function parseBody (request, text, done) {
  if (text.length === 0) return done(null, undefined)
  let value
  try {
    value = JSON.parse(text)
  } catch (err) {
    return done(new HttpError(400, 'INVALID_ARGUMENT', `the request body is not valid JSON (${err.message})`))
  }
  done(null, value)
}

/**
 * The bearer-token check: a function of the Authorization header that returns null when it
 * carries `token`, else the message of the 401. Both sides are hashed with SHA-256 and compared
 * with timingSafeEqual, so neither the token's bytes nor its length show in the timing.
 */
function bearerCheck (token) {
  const expected = crypto.createHash('sha256').update(token, 'latin1').digest()
  return function check (header) {
    if (header === undefined) return 'this server requires an Authorization: Bearer <token> header'
    // the scheme is case-insensitive (RFC 9110 11.1); Node has trimmed the value
    const match = /^bearer +(.*)$/i.exec(header)
    if (!match) return 'the Authorization header is not a Bearer token'
    const given = crypto.createHash('sha256').update(match[1], 'latin1').digest()
    return crypto.timingSafeEqual(given, expected) ? null : 'the bearer token is wrong'
  }
}

/** The 401 of a request without the token. */
function sendUnauthenticated (reply, message) {
  return reply.code(401).header('www-authenticate', 'Bearer')
    .send({ error: { code: 'UNAUTHENTICATED', message } })
}

/**
 * The answer to a request Node's HTTP parser rejected (not HTTP, a header over Node's 16 KiB
 * limit, too slow): fastify's default writes a body of its own shape. There is no request yet,
 * so no token check either; the connection is closed after it, as Node does.
 */
function clientErrorHandler (err, socket) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, message] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? [408, 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'the request line and headers are larger than the server accepts']
      : [400, `the request is not valid HTTP (${err.code ?? err.message})`]
  const body = JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message } })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy(err)
}

/** The 404 of an unknown route or method (the spec has no 405). */
function sendNoRoute (request, reply) {
  const path = request.url.split('?')[0]
  return reply.code(404).send({ error: { code: 'INVALID_ARGUMENT', message: `no route ${request.method} ${path}` } })
}

/** Rejects a body that is present but not a JSON object (`null`, arrays, strings, numbers). */
async function requireObjectBody (request) {
  const body = request.body
  if (body === undefined) return
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    const what = body === null ? 'null' : Array.isArray(body) ? 'an array' : `a ${typeof body}`
    throw new HttpError(400, 'INVALID_ARGUMENT', `the request body must be a JSON object, not ${what}`)
  }
}

function isMediaServer (value) {
  return value != null && ['createRoom', 'addUser', 'produce', 'consume', 'stopProduce', 'removeUser',
    'deleteRoom', 'stats', 'close'].every((m) => typeof value[m] === 'function')
}

/** The fastify app with every route of the spec bound to `media`; with `token`, behind it. */
function buildApp (media, token) {
  const unauthenticated = token === undefined ? () => null : bearerCheck(token)
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    // ids of any length reach the addon, which has the last word on them
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // answer requests that arrive while closing normally (fastify's own 503 body is not ours)
    return503OnClosing: false,
    // what fails before routing (a path that is not valid percent-encoding, a path parameter
    // over MAX_PARAM_LENGTH) gets the spec's error body too, and a request without the token
    // its 401 first
    frameworkErrors (err, request, reply) {
      const denied = unauthenticated(request.headers.authorization)
      if (denied) return sendUnauthenticated(reply, denied)
      const [status, code, message] = errorReply(err)
      return reply.code(status).send({ error: { code, message } })
    },
    clientErrorHandler
  })

  // The first hook of every request, the 404 handler's included: nothing about the request
  // (its route, its body) is looked at before the token is.
  app.addHook('onRequest', async (request, reply) => {
    const denied = unauthenticated(request.headers.authorization)
    if (denied) return sendUnauthenticated(reply, denied)
    // no route: answered here, without reading a body it would not use
    if (request.is404) return sendNoRoute(request, reply)
    // a Content-Type that is present but empty is no Content-Type (fastify would answer 415)
    if (request.raw.headers['content-type'] === '') delete request.raw.headers['content-type']
  })

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, parseBody)
  app.addHook('preValidation', requireObjectBody)

  app.setErrorHandler(async (err, request, reply) => {
    const [status, code, message] = errorReply(err)
    return reply.code(status).send({ error: { code, message } })
  })
  app.setNotFoundHandler(async (request, reply) => sendNoRoute(request, reply))

  const p = (request) => request.params
  app.post('/rooms', async (request) => media.createRoom(null, request.body))
  app.post('/rooms/:room_id', async (request) => media.createRoom(p(request).room_id, request.body))
  app.delete('/rooms/:room_id', async (request) => media.deleteRoom(p(request).room_id))
  app.post('/rooms/:room_id/users/:user_id', async (request) =>
    media.addUser(p(request).room_id, p(request).user_id, request.body))
  app.delete('/rooms/:room_id/users/:user_id', async (request) =>
    media.removeUser(p(request).room_id, p(request).user_id))
  app.post('/rooms/:room_id/users/:user_id/produce', async (request) =>
    media.produce(p(request).room_id, p(request).user_id, request.body))
  app.delete('/rooms/:room_id/users/:user_id/produce', async (request) =>
    media.stopProduce(p(request).room_id, p(request).user_id))
  app.post('/rooms/:room_id/users/:user_id/consume', async (request) =>
    media.consume(p(request).room_id, p(request).user_id, request.body))
  // extensions: not in the spec
  app.post('/rooms/:room_id/users/:user_id/layers/:producer_id', async (request) =>
    media.setPreferredLayers(p(request).room_id, p(request).user_id, p(request).producer_id, request.body))
  app.get('/stats', async () => media.stats())
  app.get('/rooms/:room_id/stats', async (request) => media.getStats(p(request).room_id))
  app.get('/rooms/:room_id/users/:user_id/stats', async (request) =>
    media.getStats(p(request).room_id, p(request).user_id))
  // Prometheus scrapes this; with a token, give it as the scrape job's bearer credentials
  app.get('/metrics', async (request, reply) => {
    const text = await media.metrics()
    return reply.type(metricsContentType).send(text)
  })
  return app
}

function hostForUrl (address) {
  return address.includes(':') ? `[${address}]` : address
}

/**
 * Starts the HTTP server. Resolves once it listens, to `{ url, port, host, media, close() }`.
 *
 * @param {object} [options]
 * @param {string} [options.host='127.0.0.1'] the address the HTTP server listens on
 * @param {number} [options.port=8080] its TCP port; 0 picks a free one (see `port` in the result)
 * @param {string} [options.token] a shared secret: every request must carry
 *   `Authorization: Bearer <token>`, else 401 UNAUTHENTICATED
 * @param {boolean} [options.insecure=false] allow a `host` that is not a loopback address without
 *   a token (something in front of the server authenticates requests)
 * @param {import('./index').MediaServer} [options.media] serve this MediaServer (then `close()`
 *   leaves it open); otherwise serve() makes one from the remaining options
 * Every other key (`listenIp`, `announcedIp`, `portRange`, …) is passed untouched to
 * `new MediaServer(…)`.
 */
async function serve (options = {}) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidArgument('serve(options): options must be an object', TypeError)
  }
  const { host = '127.0.0.1', port = 8080, media: given, token, insecure = false } = options
  if (typeof host !== 'string' || host === '') throw invalidArgument('serve(options): host must be a non-empty string', TypeError)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalidArgument(`serve(options): port must be an integer from 0 to 65535, not ${JSON.stringify(port)}`, RangeError)
  }
  if (token !== undefined && (typeof token !== 'string' || !TOKEN_PATTERN.test(token))) {
    throw invalidArgument('serve(options): token must be a non-empty string of visible ASCII characters ' +
      '(no spaces), such as the output of `openssl rand -hex 32`', TypeError)
  }
  if (typeof insecure !== 'boolean') throw invalidArgument('serve(options): insecure must be a boolean', TypeError)
  // checked before anything is made or bound
  if (token === undefined && !insecure && !isLoopbackHost(host)) {
    throw invalidArgument(`serve(options): refusing to listen on ${host} without a token: it is not a loopback ` +
      'address, and anyone who reaches it could delete rooms, produce as any user or take over their calls. ' +
      'Give a token (serve({ token }), --token or MEDIASERVER_TOKEN), listen on 127.0.0.1, or pass ' +
      'insecure: true (--insecure) if something in front of the server authenticates every request')
  }
  const mediaOptions = {}
  for (const [key, value] of Object.entries(options)) {
    if (!SERVE_KEYS.has(key)) mediaOptions[key] = value
  }

  let media
  if (given !== undefined) {
    if (!isMediaServer(given)) throw invalidArgument('serve(options): media must be a MediaServer', TypeError)
    const extra = Object.keys(mediaOptions)
    if (extra.length > 0) {
      throw invalidArgument(`serve(options): ${extra.join(', ')} cannot be used with media (it is already configured)`, TypeError)
    }
    media = given
  } else {
    const { MediaServer } = require('./index.js')
    media = new MediaServer(mediaOptions)
  }
  const ownsMedia = media !== given

  const app = buildApp(media, token)
  try {
    await app.listen({ host, port })
  } catch (err) {
    await app.close().catch(() => {})
    if (ownsMedia) await media.close().catch(() => {})
    throw err
  }
  const address = app.server.address()
  const bound = { host: address.address, port: address.port }

  let closing = null
  return {
    url: `http://${hostForUrl(bound.host)}:${bound.port}`,
    port: bound.port,
    host: bound.host,
    media,
    /** Stops the HTTP server (in-flight requests finish), then closes the MediaServer if serve() made it. */
    close () {
      if (!closing) {
        closing = (async () => {
          await app.close()
          if (ownsMedia) {
            try {
              await media.close()
            } catch (err) {
              if (err?.code !== 'SERVER_CLOSED') throw err
            }
          }
        })()
      }
      return closing
    }
  }
}

module.exports = { serve, httpStatus, isLoopbackHost, metricsContentType }
