// The HTTP server (serve.js) seen from a backend: `fetch` requests, and an adapter with the
// MediaServer's method signatures so that helpers.mjs's `Client` (a real libwebrtc user) can
// produce and consume over HTTP exactly as it does against the addon.

import assert from 'node:assert/strict'
import http from 'node:http'

/**
 * One request. `body` (any JSON value) is sent as JSON; `raw` is sent as is, with
 * `contentType` (default application/json; null: no Content-Type header); `token` adds
 * `Authorization: Bearer <token>`, `headers` any other header. Resolves to {status, contentType,
 * headers, body, text} (`body` is the parsed JSON, or undefined when the response is not JSON).
 */
export async function request (baseUrl, method, path, { body, raw, contentType = 'application/json', token, headers = {} } = {}) {
  const init = { method, headers: { ...headers } }
  if (token !== undefined) init.headers.authorization = `Bearer ${token}`
  if (raw !== undefined) {
    // a string body gets text/plain from fetch; bytes get no Content-Type at all
    init.body = contentType === null ? new TextEncoder().encode(raw) : raw
    if (contentType) init.headers['content-type'] = contentType
  } else if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers['content-type'] = contentType
  }
  const res = await fetch(baseUrl + path, init)
  const text = await res.text()
  let parsed
  try { parsed = JSON.parse(text) } catch { parsed = undefined }
  return { status: res.status, contentType: res.headers.get('content-type'), headers: res.headers, body: parsed, text }
}

/**
 * One request through node:http, which sends the path and the headers exactly as given (fetch
 * would normalise the URL, and drops or adds a Content-Type): `headers` is the complete set
 * besides Host and the body's framing. Resolves to the same shape as `request()`, with `headers`
 * a plain object.
 */
export function rawRequest (baseUrl, method, path, { headers = {}, raw } = {}) {
  const { hostname, port } = new URL(baseUrl)
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let parsed
        try { parsed = JSON.parse(text) } catch { parsed = undefined }
        resolve({ status: res.statusCode, contentType: res.headers['content-type'], headers: res.headers, body: parsed, text })
      })
    })
    req.on('error', reject)
    req.end(raw)
  })
}

/**
 * Assert that `res` is an error response with `status` and `code`, in the spec's shape
 * `{ error: { code, message } }` and nothing else. Returns the message.
 */
export function assertError (res, status, code, what = '') {
  const label = `${what ? what + ': ' : ''}${res.status} ${res.text.slice(0, 300)}`
  assert.equal(res.status, status, `${label}: status`)
  assert.match(res.contentType ?? '', /^application\/json/, `${label}: content-type`)
  assert.ok(res.body && typeof res.body === 'object' && !Array.isArray(res.body), `${label}: body is not an object`)
  assert.deepStrictEqual(Object.keys(res.body), ['error'], `${label}: body keys`)
  assert.deepStrictEqual(Object.keys(res.body.error).sort(), ['code', 'message'], `${label}: error keys`)
  assert.equal(res.body.error.code, code, `${label}: code`)
  assert.equal(typeof res.body.error.message, 'string', `${label}: message`)
  assert.ok(res.body.error.message.length > 0, `${label}: empty message`)
  return res.body.error.message
}

const seg = (id) => encodeURIComponent(String(id))

/**
 * The MediaServer's methods over HTTP: each resolves to the 200 response's JSON, or rejects
 * with an Error carrying the response's `code`, `status` and `body`.
 */
export class HttpMediaServer {
  /** `token`: the server's bearer token, sent with every request. */
  constructor (baseUrl, { token } = {}) {
    this.baseUrl = baseUrl
    this.token = token
  }

  async _call (method, path, body) {
    const res = await request(this.baseUrl, method, path, { body, token: this.token })
    if (res.status === 200) {
      assert.match(res.contentType ?? '', /^application\/json/, `${method} ${path}: content-type`)
      return res.body
    }
    const err = new Error(`${method} ${path} -> ${res.status}: ${res.body?.error?.message ?? res.text}`)
    err.code = res.body?.error?.code
    err.status = res.status
    err.body = res.body
    throw err
  }

  createRoom (roomId, body) {
    return this._call('POST', roomId == null ? '/rooms' : `/rooms/${seg(roomId)}`, body)
  }

  addUser (roomId, userId, body) {
    return this._call('POST', `/rooms/${seg(roomId)}/users/${seg(userId)}`, body)
  }

  produce (roomId, userId, body) {
    return this._call('POST', `/rooms/${seg(roomId)}/users/${seg(userId)}/produce`, body)
  }

  consume (roomId, userId, body) {
    return this._call('POST', `/rooms/${seg(roomId)}/users/${seg(userId)}/consume`, body)
  }

  stopProduce (roomId, userId) {
    return this._call('DELETE', `/rooms/${seg(roomId)}/users/${seg(userId)}/produce`)
  }

  removeUser (roomId, userId) {
    return this._call('DELETE', `/rooms/${seg(roomId)}/users/${seg(userId)}`)
  }

  deleteRoom (roomId) {
    return this._call('DELETE', `/rooms/${seg(roomId)}`)
  }

  stats () {
    return this._call('GET', '/stats')
  }
}
