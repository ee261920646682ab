// Generators of property.test.mjs (not a test file itself): a seeded PRNG, hostile JS values
// of every type with a readable description each, and mutations of real SDPs.
//
// Every value is made fresh by a factory (a Proxy, a cyclic object or a throwing getter must
// not be shared between calls), and every generated value comes with `desc`, the text the
// test prints for a failing call.

/** mulberry32: a small seeded PRNG (32-bit state). */
export function mulberry32 (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const rng = {
    next,
    /** An integer in [0, n). */
    int: (n) => Math.floor(next() * n),
    /** An integer in [lo, hi]. */
    range: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (items) => items[Math.floor(next() * items.length)],
    /** A fresh 32-bit seed, for a sub-generator whose draws must not shift this one's. */
    u32: () => Math.floor(next() * 4294967296) >>> 0,
    /** Picks a key of `weights` ({name: weight}) with probability proportional to its weight. */
    weighted (weights) {
      const entries = Object.entries(weights).filter(([, w]) => w > 0)
      let x = next() * entries.reduce((s, [, w]) => s + w, 0)
      for (const [k, w] of entries) {
        if ((x -= w) < 0) return k
      }
      return entries[entries.length - 1][0]
    }
  }
  return rng
}

/** A description of any JS value, short and safe (never calls a getter, toJSON or a trap). */
export function describe (v, depth = 0) {
  const t = typeof v
  if (v === undefined) return 'undefined'
  if (v === null) return 'null'
  if (t === 'number') return Object.is(v, -0) ? '-0' : String(v)
  if (t === 'bigint') return `${v}n`
  if (t === 'boolean') return String(v)
  if (t === 'symbol') return v.toString()
  if (t === 'string') {
    const s = v.length > 60 ? `${JSON.stringify(v.slice(0, 40))}…(${v.length} chars)` : JSON.stringify(v)
    return s
  }
  if (t === 'function') return `function ${v.name || '(anonymous)'}`
  if (depth > 2) return '…'
  try {
    if (Array.isArray(v)) return `[${v.slice(0, 4).map((x) => describe(x, depth + 1)).join(', ')}${v.length > 4 ? `, …${v.length} items` : ''}]`
    const keys = Object.keys(v).slice(0, 6)
    return `{${keys.map((k) => `${JSON.stringify(k)}: ${describe(Object.getOwnPropertyDescriptor(v, k)?.value, depth + 1)}`).join(', ')}}`
  } catch {
    return '<object whose keys cannot be read>'
  }
}

const thrower = (what) => () => { throw new Error(`hostile ${what}`) }

function cyclic () {
  const o = { a: 1 }
  o.self = o
  return o
}

function nested (depth, leaf = 0) {
  let v = leaf
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

function revokedProxy () {
  const { proxy, revoke } = Proxy.revocable({}, {})
  revoke()
  return proxy
}

// [description, factory]: every JS type, and the awkward corners of each.
export const HOSTILE = [
  ['undefined', () => undefined],
  ['null', () => null],
  ['true', () => true],
  ['false', () => false],
  ['0', () => 0],
  ['-0', () => -0],
  ['1', () => 1],
  ['-1', () => -1],
  ['7', () => 7],
  ['1.5', () => 1.5],
  ['0.1', () => 0.1],
  ['NaN', () => NaN],
  ['Infinity', () => Infinity],
  ['-Infinity', () => -Infinity],
  ['1e309', () => 1e309],
  ['2**53', () => 2 ** 53],
  ['2**53 - 1', () => 2 ** 53 - 1],
  ['-(2**53)', () => -(2 ** 53)],
  ['1e21', () => 1e21],
  ['Number.MAX_VALUE', () => Number.MAX_VALUE],
  ['Number.MIN_VALUE', () => Number.MIN_VALUE],
  ['2**64', () => 2 ** 64],
  ['0n', () => 0n],
  ['10n', () => 10n],
  ['2n**70n', () => 2n ** 70n],
  ['-1n', () => -1n],
  ["''", () => ''],
  ["' '", () => ' '],
  ['"x".repeat(256)', () => 'x'.repeat(256)],
  ['"x".repeat(257)', () => 'x'.repeat(257)],
  ['"é".repeat(256)', () => 'é'.repeat(256)],
  ['"🎥".repeat(256)', () => '🎥'.repeat(256)],
  ['"🎥".repeat(257)', () => '🎥'.repeat(257)],
  ['"x".repeat(100000)', () => 'x'.repeat(100000)],
  ['"Ünïcødé 名前 🎥"', () => 'Ünïcødé 名前 🎥'],
  ['"\\uD800" (lone surrogate)', () => '\uD800'],
  ['"a\\u0000b"', () => 'a\u0000b'],
  ['"line\\r\\nbreak"', () => 'line\r\nbreak'],
  ['"\\r\\n"', () => '\r\n'],
  ['an SDP-looking string', () => 'v=0\r\no=- 1 1 IN IP4 6.6.6.6\r\ns=-\r\nt=0 0\r\na=candidate:1 1 udp 1 6.6.6.6 6 typ host\r\n'],
  ['"__proto__"', () => '__proto__'],
  ['"constructor"', () => 'constructor'],
  ['"toString"', () => 'toString'],
  ['\'{"a":1}\'', () => '{"a":1}'],
  ['"null"', () => 'null'],
  ['"../../etc/passwd"', () => '../../etc/passwd'],
  ['"%ZZ"', () => '%ZZ'],
  ['"\\u202e" (RTL override)', () => '\u202e'],
  ['Symbol("s")', () => Symbol('s')],
  ['Symbol.iterator', () => Symbol.iterator],
  ['() => {}', () => () => {}],
  ['function named () {}', () => function named () {}],
  ['class K {}', () => class K {}],
  ['async () => {}', () => async () => {}],
  ['function * () {}', () => function * gen () {}],
  ['Math.max', () => Math.max],
  ['[]', () => []],
  ['[1]', () => [1]],
  ['["r0"]', () => ['r0']],
  ['[, ,] (holes)', () => [, ,]], // eslint-disable-line no-sparse-arrays
  ['new Array(5)', () => new Array(5)],
  ['Array(1e5).fill(0)', () => Array(1e5).fill(0)],
  ['{}', () => ({})],
  ['{ id: "x" }', () => ({ id: 'x' })],
  ['Object.create(null)', () => Object.create(null)],
  ['JSON.parse(\'{"__proto__": {"x": 1}}\')', () => JSON.parse('{"__proto__": {"x": 1}}')],
  ['{ get x () { throw } }', () => ({ get x () { throw new Error('hostile getter') } })],
  ['{ toJSON () { return "r0" } }', () => ({ toJSON () { return 'r0' } })],
  ['{ toJSON () { throw } }', () => ({ toJSON: thrower('toJSON') })],
  ['{ toJSON () { return undefined } }', () => ({ toJSON () { return undefined } })],
  ['{ toJSON: 5 }', () => ({ toJSON: 5 })],
  ['new Date(0)', () => new Date(0)],
  ['new Date(NaN)', () => new Date(NaN)],
  ['new Proxy({}, { get () { throw } })', () => new Proxy({}, { get: thrower('get trap') })],
  ['new Proxy({}, { ownKeys () { throw } })', () => new Proxy({}, { ownKeys: thrower('ownKeys trap') })],
  ['new Proxy({ a: 1 }, { getOwnPropertyDescriptor () { throw } })', () => new Proxy({ a: 1 }, { getOwnPropertyDescriptor: thrower('gOPD trap') })],
  ['a revoked Proxy', revokedProxy],
  ['new Proxy(() => {}, {})', () => new Proxy(() => {}, {})],
  ['new Proxy([], {})', () => new Proxy([], {})],
  ['a cyclic object', cyclic],
  ['a cyclic array', () => { const a = [1]; a.push(a); return a }],
  ['Object.freeze({ a: 1 })', () => Object.freeze({ a: 1 })],
  ['Object.seal({})', () => Object.seal({})],
  ['new Map([[1, 2]])', () => new Map([[1, 2]])],
  ['new Set([1])', () => new Set([1])],
  ['/re/g', () => /re/g],
  ['new Error("e")', () => new Error('e')],
  ['Promise.resolve(1)', () => Promise.resolve(1)],
  ['new Uint8Array(4)', () => new Uint8Array(4)],
  ['Buffer.from("r0")', () => Buffer.from('r0')],
  ['new ArrayBuffer(8)', () => new ArrayBuffer(8)],
  ['new WeakMap()', () => new WeakMap()],
  ['new String("r0")', () => new String('r0')], // eslint-disable-line no-new-wrappers
  ['new Number(7)', () => new Number(7)], // eslint-disable-line no-new-wrappers
  ['new Boolean(false)', () => new Boolean(false)], // eslint-disable-line no-new-wrappers
  ['Object(1n)', () => Object(1n)],
  ['Object(Symbol())', () => Object(Symbol('boxed'))],
  ['globalThis', () => globalThis],
  ['[[[…]]] nested 200 deep', () => nested(200)],
  ['[[[…]]] nested 100000 deep', () => nested(100000)],
  ['{ length: 1e9 }', () => ({ length: 1e9 })]
]

/** A hostile value: `{value, desc}`. */
export function hostile (rng) {
  const [desc, make] = rng.pick(HOSTILE)
  return { value: make(), desc }
}

// JSON values of every kind, for userInfo (valid ones; size limits at the edges).
export const USER_INFOS = [
  ['{}', () => ({})],
  ['{ contactId: 11 }', () => ({ contactId: 11 })],
  ['"a string"', () => 'a string'],
  ['5', () => 5],
  ['-0', () => -0],
  ['true', () => true],
  ['null', () => null],
  ['[1, { a: null }]', () => [1, { a: null }]],
  ['{ "__proto__": 1 } (own key)', () => JSON.parse('{"__proto__": 1, "b": [2]}')],
  ['{ name: "Ünïcødé 🎥\\r\\n" }', () => ({ name: 'Ünïcødé 🎥\r\n' })],
  ['"x".repeat(16380) (16382 bytes as JSON)', () => 'x'.repeat(16380)],
  ['"x".repeat(16383) (16385 bytes as JSON: over the limit)', () => 'x'.repeat(16383)],
  ['nested 100 deep', () => nested(100, 'leaf')],
  ['nested 127 deep', () => nested(127, 'leaf')],
  ['nested 129 deep', () => nested(129, 'leaf')],
  ['{ b: 1, a: 2 } (key order)', () => ({ b: 1, a: 2 })],
  ['{ d: new Date(0) } (toJSON inside)', () => ({ d: new Date(0) })],
  ['{ f () {}, u: undefined } (dropped by JSON)', () => ({ f () {}, u: undefined, k: 1 })]
]

export function userInfo (rng) {
  if (rng.chance(0.15)) return hostile(rng)
  const [desc, make] = rng.pick(USER_INFOS)
  return { value: make(), desc }
}

// ---------------------------------------------------------------------------------------
// SDP mutations. Each takes the SDP text and a sub-generator (its draws depend on the SDP's
// length, which the peers' randomness decides, so they must not come from the main stream).

const lines = (sdp) => sdp.split('\r\n')
const unlines = (ls) => ls.join('\r\n')

function sections (sdp) {
  const parts = sdp.split(/\r\n(?=m=)/)
  return { head: parts[0], media: parts.slice(1) }
}

function shuffle (items, r) {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = r.int(i + 1)
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

export const SDP_MUTATIONS = {
  truncated: (sdp, r) => sdp.slice(0, r.int(sdp.length)),
  'a media section dropped': (sdp, r) => {
    const { head, media } = sections(sdp)
    if (media.length === 0) return sdp
    media.splice(r.int(media.length), 1)
    return [head, ...media].join('\r\n')
  },
  'a media section duplicated': (sdp, r) => {
    const { head, media } = sections(sdp)
    if (media.length === 0) return sdp
    const i = r.int(media.length)
    media.splice(i, 0, media[i])
    return [head, ...media].join('\r\n')
  },
  'media sections swapped': (sdp) => {
    const { head, media } = sections(sdp)
    return [head, ...media.reverse()].join('\r\n')
  },
  'every line shuffled': (sdp, r) => unlines(shuffle(lines(sdp), r)),
  'a few lines swapped': (sdp, r) => {
    const ls = lines(sdp)
    for (let k = 0; k < 3; k++) {
      const i = r.int(ls.length); const j = r.int(ls.length)
      ;[ls[i], ls[j]] = [ls[j], ls[i]]
    }
    return unlines(ls)
  },
  'fingerprint removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=fingerprint:'))),
  'fingerprint sha-1': (sdp) => sdp.replace(/a=fingerprint:sha-256 /g, 'a=fingerprint:sha-1 '),
  'fingerprint corrupted': (sdp) => sdp.replace(/(a=fingerprint:\S+ )([0-9A-F]{2})/g, (_m, a, b) => a + (b === '00' ? '11' : '00')),
  'fingerprint value empty': (sdp) => sdp.replace(/(a=fingerprint:\S+) .*/g, '$1 '),
  'ice-ufrag removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=ice-ufrag:'))),
  'ice-pwd removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=ice-pwd:'))),
  'ice-pwd short': (sdp) => sdp.replace(/a=ice-pwd:.*/g, 'a=ice-pwd:x'),
  'candidates removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=candidate:'))),
  'candidate garbled': (sdp) => sdp.replace(/a=candidate:(\S+) /, 'a=candidate:$1 x y z '),
  'CRLF as LF': (sdp) => sdp.replace(/\r\n/g, '\n'),
  'mids renamed': (sdp) => sdp.replace(/a=mid:(\S+)/g, 'a=mid:x$1'),
  'mids removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=mid:'))),
  'BUNDLE removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=group:'))),
  'directions flipped': (sdp) => sdp.replace(/a=(sendonly|recvonly|sendrecv|inactive)/g, (_m, d) => `a=${{ sendonly: 'recvonly', recvonly: 'sendonly', sendrecv: 'inactive', inactive: 'sendrecv' }[d]}`),
  'all inactive': (sdp) => sdp.replace(/a=(sendonly|recvonly|sendrecv)/g, 'a=inactive'),
  'setup roles swapped': (sdp) => sdp.replace(/a=setup:(\w+)/g, (_m, s) => `a=setup:${{ actpass: 'active', active: 'actpass', passive: 'actpass' }[s] || 'holdconn'}`),
  'ports zeroed': (sdp) => sdp.replace(/^m=(\w+) \d+/gm, 'm=$1 0'),
  'ports out of range': (sdp) => sdp.replace(/^m=(\w+) \d+/gm, 'm=$1 70000'),
  'codecs made up': (sdp) => sdp.replace(/a=rtpmap:(\d+) [^/\r\n]+/g, 'a=rtpmap:$1 X-NOSUCHCODEC'),
  'rtpmaps removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=rtpmap:'))),
  'payload types garbled': (sdp) => sdp.replace(/a=(rtpmap|fmtp|rtcp-fb):(\d+)/g, 'a=$1:3$2'),
  'ssrc lines removed': (sdp) => unlines(lines(sdp).filter((l) => !l.startsWith('a=ssrc'))),
  'an extra ssrc shared by two sections': (sdp) => sdp.replace(/(m=(audio|video)[^\r]*)/g, '$1\r\na=ssrc:42 cname:x'),
  'rid/simulcast lines added': (sdp) => sdp.replace(/(m=video[^\r]*)/, '$1\r\na=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l'),
  'session lines dropped': (sdp) => unlines(lines(sdp).filter((l) => !/^[ost]=/.test(l))),
  'v= removed': (sdp) => sdp.replace(/^v=0\r\n/, ''),
  'leading blank line': (sdp) => '\r\n' + sdp,
  'a random character replaced': (sdp, r) => {
    const i = r.int(sdp.length)
    return sdp.slice(0, i) + r.pick(['\u0000', 'é', ' ', '\n', ':', '=', '\uD800', '🎥']) + sdp.slice(i + 1)
  },
  'padded to 60 KB': (sdp) => sdp.replace(/\r\nm=/, `\r\na=x-pad:${'x'.repeat(60000 - sdp.length > 0 ? 60000 - sdp.length : 1)}\r\nm=`),
  'padded past 64 KiB': (sdp) => sdp.replace(/\r\nm=/, `\r\na=x-pad:${'x'.repeat(66000)}\r\nm=`),
  'a 10000-character attribute line': (sdp) => sdp.replace(/\r\nm=/, `\r\na=${'y'.repeat(10000)}\r\nm=`),
  'every line doubled': (sdp) => unlines(lines(sdp).flatMap((l) => [l, l])),
  'extmap ids out of range': (sdp) => sdp.replace(/a=extmap:\d+/g, 'a=extmap:999'),
  'a data channel section added': (sdp) => sdp.replace(/a=group:BUNDLE ([^\r]*)/, 'a=group:BUNDLE $1 dc') +
    '\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:dc\r\na=sctp-port:5000\r\n'
}

const MUTATION_NAMES = Object.keys(SDP_MUTATIONS)

/** A mutated copy of `sdp`: `{sdp, desc}`, with `rng` choosing the mutation (one draw). */
export function mutateSdp (sdp, rng) {
  const sub = mulberry32(rng.u32())
  const name = MUTATION_NAMES[sub.int(MUTATION_NAMES.length)]
  let out = SDP_MUTATIONS[name](sdp, sub)
  if (out.endsWith('\r\n') === false && sdp.endsWith('\r\n') && name !== 'truncated' && sub.chance(0.5)) out += '\r\n'
  return { sdp: out, desc: name }
}

/** A `type` for a session description other than `right`. */
export function wrongType (right, rng) {
  const choices = ['offer', 'answer', 'pranswer', 'rollback', '', 'OFFER', 'Answer', ' offer'].filter((t) => t !== right)
  return rng.pick(choices)
}
