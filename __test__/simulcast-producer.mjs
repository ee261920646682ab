// A Chromium page that produces simulcast, for the simulcast and bandwidth tests: a 1280x720
// fake camera in three layers (sendEncodings q/h/f scaled down by 4/2/1), and what it sends.

/**
 * Makes the page's producer connection (`window.pc`) and returns its complete offer's SDP;
 * `codec` (e.g. 'H264') is put first in the video codec preferences.
 */
export async function simulcastOffer (page, { codec = null } = {}) {
  return page.evaluate(async (codec) => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 1280, height: 720 } })
    const pc = new RTCPeerConnection()
    window.pc = pc
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' })
    const video = pc.addTransceiver(stream.getVideoTracks()[0], {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4 },
        { rid: 'h', scaleResolutionDownBy: 2 },
        { rid: 'f', scaleResolutionDownBy: 1 }
      ]
    })
    if (codec) {
      const all = RTCRtpSender.getCapabilities('video').codecs
      const wanted = all.filter((c) => c.mimeType.toLowerCase() === `video/${codec.toLowerCase()}`)
      video.setCodecPreferences([...wanted, ...all.filter((c) => !wanted.includes(c))])
    }
    // A loaded machine must not shrink the layers under the test (CPU adaptation).
    const params = video.sender.getParameters()
    params.degradationPreference = 'maintain-resolution'
    await video.sender.setParameters(params)
    await pc.setLocalDescription()
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve()
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve())
    })
    return pc.localDescription.sdp
  }, codec)
}

/** What the page sends of each layer now: rid -> {frameWidth, bytesSent}. */
export async function sentLayers (page) {
  return page.evaluate(async () => {
    const report = await window.pc.getStats()
    const layers = {}
    for (const s of report.values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'video') layers[s.rid] = { frameWidth: s.frameWidth, bytesSent: s.bytesSent }
    }
    return layers
  })
}
