// The demo room's page: camera and microphone preview, one tile per remote user, mute and
// broadcast controls. Signalling goes through the demo backend's WebSocket; media goes to the
// SFU. Non-trickle: every SDP is sent once ICE gathering has completed.
//
// URL parameters: ?room=NAME (default "demo"), &name=DISPLAY_NAME, &codec=VP8|VP9|H264|AV1
// (forces the video codec this page sends), &simulcast=1 (sends two layers; also a checkbox).
// Each remote tile has a low / high switch: it asks the server for that producer's lowest
// simulcast layer, or the best, for this page (setPreferredLayers); the badge shows the layer
// the server now sends (its layerschange events).

const $ = (id) => document.getElementById(id)
const params = new URLSearchParams(location.search)
const roomId = params.get('room') || location.pathname.split('/room/')[1] || 'demo'
const displayName = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`
const forcedCodec = params.get('codec')
$('simulcast').checked = params.get('simulcast') === '1'

$('room-name').textContent = roomId
$('local-name').textContent = displayName

const state = {
  ws: null,
  userId: null,
  stream: null,
  upstream: null,
  audio: true,
  video: true,
  broadcasting: false,
  joined: false,
  /** producer id -> { pc, tile, chain } */
  remotes: new Map(),
  /** user id -> { id, userInfo } */
  users: new Map()
}

function setStatus (text) { $('status').textContent = text }
function showError (text) { $('error').hidden = !text; $('error').textContent = text ?? '' }
function send (message) { state.ws.send(JSON.stringify(message)) }

async function gathered (pc, description) {
  await pc.setLocalDescription(description)
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === 'complete') { pc.removeEventListener('icegatheringstatechange', check); resolve() } }
      pc.addEventListener('icegatheringstatechange', check)
      setTimeout(resolve, 5000) // send what we have rather than hang
    })
  }
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp }
}

// ---- tiles --------------------------------------------------------------------------------

function tileFor (id) {
  let remote = state.remotes.get(id)
  if (!remote) {
    const figure = document.createElement('figure')
    figure.className = 'tile idle'
    figure.dataset.user = id
    const video = document.createElement('video')
    video.autoplay = true
    video.playsInline = true
    const caption = document.createElement('figcaption')
    caption.innerHTML = '<span class="name"></span> <span class="badges"></span> <span class="badges layer-badge"></span>'
    caption.querySelector('.name').textContent = state.users.get(id)?.userInfo?.name ?? id.slice(0, 8)
    const quality = document.createElement('button')
    quality.className = 'quality'
    quality.textContent = 'low'
    quality.title = 'receive this user\'s lowest simulcast layer'
    quality.onclick = () => setLow(id, !remote.low)
    figure.append(video, caption, quality)
    $('tiles').append(figure)
    remote = { pc: null, tile: figure, video, chain: Promise.resolve(), constraints: null, low: false, quality }
    state.remotes.set(id, remote)
  }
  return remote
}

function showConstraints (badges, constraints, broadcasting = true) {
  badges.replaceChildren()
  const add = (text) => { const b = document.createElement('span'); b.textContent = text; badges.append(b) }
  if (!broadcasting) return add('not broadcasting')
  if (constraints && !constraints.audio) add('audio muted')
  if (constraints && !constraints.video) add('video muted')
}

function closeRemote (id, { removeTile = false } = {}) {
  const remote = state.remotes.get(id)
  if (!remote) return
  remote.pc?.close()
  remote.pc = null
  remote.video.srcObject = null
  remote.tile.classList.add('idle')
  showConstraints(remote.tile.querySelector('.badges'), null, false)
  if (removeTile) {
    remote.tile.remove()
    state.remotes.delete(id)
  }
}

// ---- consuming: one connection per producer, renegotiated in place ------------------------

function handleOffer (producerId, offer, constraints) {
  const remote = tileFor(producerId)
  remote.chain = remote.chain.then(async () => {
    if (!remote.pc) {
      const pc = new RTCPeerConnection()
      const stream = new MediaStream()
      pc.ontrack = ({ track }) => {
        stream.getTracks().filter((t) => t.kind === track.kind).forEach((t) => stream.removeTrack(t))
        stream.addTrack(track)
        remote.video.srcObject = stream
        remote.video.play().catch(() => {})
      }
      remote.pc = pc
    }
    await remote.pc.setRemoteDescription(offer)
    const answer = await gathered(remote.pc, await remote.pc.createAnswer())
    send({ type: 'consume', answers: [{ id: producerId, answer }] })
    remote.tile.classList.remove('idle')
    remote.constraints = constraints
    showConstraints(remote.tile.querySelector('.badges'), constraints)
  }).catch((err) => showError(`consuming ${producerId}: ${err.message}`))
}

/** Asks for `producerId`'s lowest layer (`low`) or its best. */
function setLow (producerId, low) {
  const remote = tileFor(producerId)
  remote.low = low
  remote.quality.textContent = low ? 'high' : 'low'
  remote.quality.title = low ? 'receive this user\'s best layer' : 'receive this user\'s lowest simulcast layer'
  send({ type: 'layers', producer: producerId, spatialLayer: low ? 0 : null })
}

function showLayer (producerId, spatialLayer) {
  const badges = tileFor(producerId).tile.querySelector('.layer-badge')
  badges.replaceChildren()
  const b = document.createElement('span')
  b.className = 'layer'
  b.textContent = `layer ${spatialLayer}`
  badges.append(b)
}

// ---- producing ----------------------------------------------------------------------------

function preferCodec (transceiver, mime) {
  const all = RTCRtpReceiver.getCapabilities('video').codecs
  const wanted = all.filter((c) => c.mimeType.toLowerCase() === `video/${mime.toLowerCase()}`)
  if (wanted.length === 0) throw new Error(`this browser cannot send ${mime}`)
  const repair = all.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType))
  transceiver.setCodecPreferences([...wanted, ...repair])
}

async function startBroadcast () {
  const pc = new RTCPeerConnection()
  state.upstream = pc
  for (const track of state.stream.getTracks()) {
    // Simulcast: half and full resolution, lowest first (the server numbers layers in this order).
    const sendEncodings = track.kind === 'video' && $('simulcast').checked
      ? [{ rid: 'l', scaleResolutionDownBy: 2 }, { rid: 'h', scaleResolutionDownBy: 1 }]
      : undefined
    const transceiver = pc.addTransceiver(track, { direction: 'sendonly', sendEncodings })
    if (track.kind === 'video' && forcedCodec) preferCodec(transceiver, forcedCodec)
  }
  const offer = await gathered(pc, await pc.createOffer())
  send({ type: 'produce', offer, constraints: { audio: state.audio, video: state.video } })
  state.broadcasting = true
  updateButtons()
}

function stopBroadcast () {
  send({ type: 'stopProduce' })
  state.upstream?.close()
  state.upstream = null
  state.broadcasting = false
  updateButtons()
}

function setKind (kind, on) {
  state[kind] = on
  state.stream.getTracks().filter((t) => t.kind === kind).forEach((t) => { t.enabled = on })
  if (state.broadcasting) send({ type: 'produce', constraints: { audio: state.audio, video: state.video } })
  updateButtons()
}

function leave () {
  send({ type: 'leave' })
  state.upstream?.close()
  state.upstream = null
  state.broadcasting = false
  for (const id of [...state.remotes.keys()]) closeRemote(id, { removeTile: true })
  state.joined = false
  setStatus('left the room — reload to join again')
  updateButtons()
}

function updateButtons () {
  const on = state.joined
  for (const id of ['toggle-audio', 'toggle-video', 'toggle-broadcast', 'leave']) $(id).disabled = !on
  $('toggle-audio').textContent = state.audio ? 'Mute audio' : 'Unmute audio'
  $('toggle-audio').setAttribute('aria-pressed', String(!state.audio))
  $('toggle-video').textContent = state.video ? 'Mute video' : 'Unmute video'
  $('toggle-video').setAttribute('aria-pressed', String(!state.video))
  $('toggle-broadcast').textContent = state.broadcasting ? 'Stop broadcasting' : 'Start broadcasting'
  showConstraints($('tile-local').querySelector('.badges'), { audio: state.audio, video: state.video }, state.broadcasting)
}

$('toggle-audio').onclick = () => setKind('audio', !state.audio)
$('toggle-video').onclick = () => setKind('video', !state.video)
$('toggle-broadcast').onclick = () => (state.broadcasting ? stopBroadcast() : startBroadcast().catch((e) => showError(e.message)))
$('leave').onclick = leave
// A new upstream connection with or without layers: the consumers' connections are renegotiated.
$('simulcast').onchange = () => {
  if (!state.broadcasting) return
  stopBroadcast()
  startBroadcast().catch((e) => showError(e.message))
}

// ---- signalling ---------------------------------------------------------------------------

const messages = {
  joined ({ id, users }) {
    state.userId = id
    state.joined = true
    setStatus(`joined as ${displayName}`)
    for (const user of users) {
      state.users.set(user.id, user)
      const remote = tileFor(user.id)
      if (user.offer) handleOffer(user.id, user.offer, user.constraints)
      else showConstraints(remote.tile.querySelector('.badges'), null, false)
    }
    startBroadcast().catch((err) => showError(`broadcasting: ${err.message}`))
  },
  produced ({ answer }) {
    if (answer) state.upstream?.setRemoteDescription(answer).catch((err) => showError(err.message))
  },
  'peer-joined' ({ id, userInfo }) {
    state.users.set(id, { id, userInfo })
    showConstraints(tileFor(id).tile.querySelector('.badges'), null, false)
  },
  offer ({ from, offer, constraints, userInfo }) {
    state.users.set(from, { id: from, userInfo })
    handleOffer(from, offer, constraints)
  },
  constraints ({ from, constraints }) {
    const remote = tileFor(from)
    remote.constraints = constraints
    showConstraints(remote.tile.querySelector('.badges'), constraints)
  },
  speaker ({ id }) {
    state.speaker = id
    for (const tile of document.querySelectorAll('.tile')) tile.classList.remove('speaking')
    const tile = id === state.userId ? $('tile-local') : state.remotes.get(id)?.tile
    tile?.classList.add('speaking')
  },
  layer ({ from, spatialLayer }) { showLayer(from, spatialLayer) },
  layers () {},
  'producer-stopped' ({ from }) { closeRemote(from) },
  'peer-left' ({ id }) { closeRemote(id, { removeTile: true }) },
  stopped () {},
  left () {},
  error ({ request, code, message }) { showError(`${request ?? 'request'} failed: ${code}: ${message}`) }
}

async function main () {
  state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } })
  $('local-video').srcObject = state.stream
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`)
  state.ws = ws
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data)
    messages[message.type]?.(message)
  }
  ws.onclose = () => { state.joined = false; setStatus('disconnected'); updateButtons() }
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject })
  send({ type: 'join', room: roomId, userInfo: { name: displayName } })
}

main().catch((err) => { setStatus('failed'); showError(err.message) })

// ---- what the end-to-end tests read -------------------------------------------------------

async function inboundOf (pc) {
  const out = { video: null, audio: null }
  if (!pc) return out
  const report = await pc.getStats()
  for (const r of report.values()) {
    if (r.type !== 'inbound-rtp') continue
    const codec = r.codecId ? report.get(r.codecId)?.mimeType : undefined
    const entry = {
      codec,
      packetsReceived: r.packetsReceived ?? 0,
      packetsLost: r.packetsLost ?? 0,
      nackCount: r.nackCount ?? 0,
      framesDecoded: r.framesDecoded ?? 0,
      frameWidth: r.frameWidth ?? 0,
      freezeCount: r.freezeCount ?? 0,
      retransmittedPacketsReceived: r.retransmittedPacketsReceived ?? 0,
      totalSamplesReceived: r.totalSamplesReceived ?? 0
    }
    // After renegotiation an old stream may linger: keep the most active one per kind.
    const current = out[r.kind]
    if (!current || entry.packetsReceived > current.packetsReceived) out[r.kind] = entry
  }
  return out
}

async function upstreamStats () {
  const pc = state.upstream
  if (!pc) return null
  const report = await pc.getStats()
  const out = { availableOutgoingBitrate: 0, video: null, audio: null }
  for (const r of report.values()) {
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      out.availableOutgoingBitrate = report.get(r.selectedCandidatePairId)?.availableOutgoingBitrate ?? 0
    }
    if (r.type === 'outbound-rtp') {
      out[r.kind] = { codec: r.codecId ? report.get(r.codecId)?.mimeType : undefined, bytesSent: r.bytesSent ?? 0, packetsSent: r.packetsSent ?? 0, nackCount: r.nackCount ?? 0, pliCount: r.pliCount ?? 0, retransmittedPacketsSent: r.retransmittedPacketsSent ?? 0 }
    }
  }
  return out
}

window.__demo = {
  get userId () { return state.userId },
  get joined () { return state.joined },
  get broadcasting () { return state.broadcasting },
  /** The user the server last named the room's dominant speaker. */
  get speaker () { return state.speaker ?? null },
  remoteIds: () => [...state.remotes.keys()],
  connections: () => ({
    upstream: state.upstream ? `${state.upstream.connectionState}/${state.upstream.iceConnectionState}` : null,
    remotes: Object.fromEntries([...state.remotes].map(([id, r]) => [id, r.pc ? `${r.pc.connectionState}/${r.pc.iceConnectionState}/${r.pc.signalingState}` : null]))
  }),
  async stats () {
    const producers = {}
    for (const [id, remote] of state.remotes) producers[id] = await inboundOf(remote.pc)
    return { producers, upstream: await upstreamStats() }
  },
  /** The SRTP cipher of each connection (its transport's `srtpCipher`). */
  async srtpCiphers () {
    const cipher = async (pc) => {
      if (!pc) return null
      for (const r of (await pc.getStats()).values()) if (r.type === 'transport' && r.srtpCipher) return r.srtpCipher
      return null
    }
    const remotes = {}
    for (const [id, remote] of state.remotes) remotes[id] = await cipher(remote.pc)
    return { upstream: await cipher(state.upstream), remotes }
  },
  /** Asks for `producerId`'s lowest simulcast layer (`true`) or its best. */
  setLow,
  setAudio: (on) => setKind('audio', on),
  setVideo: (on) => setKind('video', on),
  stopBroadcast,
  startBroadcast,
  leave
}
