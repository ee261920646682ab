//! Offers as real stacks write them, for the SDP property tests and the fuzz seeds: libwebrtc
//! (Chrome), with SSRCs and with RID simulcast; Firefox (fmtp before rtpmap, session-level
//! fingerprint); GStreamer's webrtcbin (max-bundle: port 0 + bundle-only, media-level
//! fingerprints); werift (no msid). Line endings are CRLF as the stacks send them.

#![allow(dead_code)]

pub const FINGERPRINT: &str =
    "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

pub const CHROME: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS 5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Xk2f\r
a=ice-pwd:0sJ6QmOaGuaWvXqXo0a1sc2Y\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=sendonly\r
a=msid:5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55 0c0e7a8f-2b0d-4a55-8f43-0d6a0a7d5b1f\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:1819034005 cname:Qz1x7u1lWcC9Hh0T\r
a=ssrc:1819034005 msid:5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55 0c0e7a8f-2b0d-4a55-8f43-0d6a0a7d5b1f\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46 98 99 116 117\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Xk2f\r
a=ice-pwd:0sJ6QmOaGuaWvXqXo0a1sc2Y\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:1\r
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:13 urn:3gpp:video-orientation\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=msid:5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55 8f3a4b2c-7d6e-4f10-9a8b-1c2d3e4f5a6b\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtcp-fb:96 transport-cc\r
a=rtcp-fb:96 ccm fir\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rtpmap:102 H264/90000\r
a=rtcp-fb:102 goog-remb\r
a=rtcp-fb:102 transport-cc\r
a=rtcp-fb:102 ccm fir\r
a=rtcp-fb:102 nack\r
a=rtcp-fb:102 nack pli\r
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r
a=rtpmap:103 rtx/90000\r
a=fmtp:103 apt=102\r
a=rtpmap:45 AV1/90000\r
a=rtcp-fb:45 nack\r
a=rtcp-fb:45 nack pli\r
a=fmtp:45 level-idx=5;profile=0;tier=0\r
a=rtpmap:46 rtx/90000\r
a=fmtp:46 apt=45\r
a=rtpmap:98 VP9/90000\r
a=rtcp-fb:98 nack pli\r
a=fmtp:98 profile-id=0\r
a=rtpmap:99 rtx/90000\r
a=fmtp:99 apt=98\r
a=rtpmap:116 red/90000\r
a=rtpmap:117 ulpfec/90000\r
a=ssrc-group:FID 2231627014 632943048\r
a=ssrc:2231627014 cname:Qz1x7u1lWcC9Hh0T\r
a=ssrc:2231627014 msid:5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55 8f3a4b2c-7d6e-4f10-9a8b-1c2d3e4f5a6b\r
a=ssrc:632943048 cname:Qz1x7u1lWcC9Hh0T\r
a=ssrc:632943048 msid:5d8b3e35-5d7a-4c52-a2b3-9f0b1b7c1e55 8f3a4b2c-7d6e-4f10-9a8b-1c2d3e4f5a6b\r
";

/// Chrome with three simulcast layers by RID (no a=ssrc at all), audio after video, and a
/// candidate gathered before the offer was taken.
pub const CHROME_SIMULCAST: &str = "v=0\r
o=- 8153271096522127893 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS stream\r
m=video 53062 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 192.0.2.10\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=candidate:2999745851 1 udp 2122260223 192.0.2.10 53062 typ host generation 0 network-id 1\r
a=ice-ufrag:7sFv\r
a=ice-pwd:Jp9ZzNq3ZmZ8dD0sAUn8eXuE\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=msid:stream video-track\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rid:q send\r
a=rid:h send\r
a=rid:f send\r
a=simulcast:send q;h;f\r
m=audio 53062 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 192.0.2.10\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:7sFv\r
a=ice-pwd:Jp9ZzNq3ZmZ8dD0sAUn8eXuE\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:1\r
a=sendonly\r
a=msid:stream audio-track\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=ssrc:3735928559 cname:simulcast\r
a=ssrc:3735928559 msid:stream audio-track\r
";

pub const FIREFOX: &str = "v=0\r
o=mozilla...THIS_IS_SDPARTA-99.0 7052848360639826063 0 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=group:BUNDLE 0 1\r
a=ice-options:trickle\r
a=msid-semantic:WMS *\r
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r
c=IN IP4 0.0.0.0\r
a=sendonly\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r
a=fmtp:101 0-15\r
a=ice-pwd:e1a7f5a6c0c2d4b3b2a1f0e9d8c7b6a5\r
a=ice-ufrag:3c9d2e1f\r
a=mid:0\r
a=msid:{f4a6f3b8-5a9c-4e1a-9b3c-2d1e0f9a8b7c} {0e1d2c3b-4a59-4687-b6a5-c4d3e2f1a0b9}\r
a=rtcp-mux\r
a=rtpmap:109 opus/48000/2\r
a=rtpmap:9 G722/8000/1\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=setup:actpass\r
a=ssrc:2655508255 cname:{1a2b3c4d-5e6f-4788-99aa-bbccddeeff00}\r
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98\r
c=IN IP4 0.0.0.0\r
a=sendonly\r
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:5 urn:ietf:params:rtp-hdrext:toffset\r
a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r
a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1\r
a=fmtp:120 max-fs=12288;max-fr=60\r
a=fmtp:124 apt=120\r
a=fmtp:121 max-fs=12288;max-fr=60\r
a=fmtp:125 apt=121\r
a=fmtp:127 apt=126\r
a=fmtp:98 apt=97\r
a=ice-pwd:e1a7f5a6c0c2d4b3b2a1f0e9d8c7b6a5\r
a=ice-ufrag:3c9d2e1f\r
a=mid:1\r
a=msid:{f4a6f3b8-5a9c-4e1a-9b3c-2d1e0f9a8b7c} {5f4e3d2c-1b0a-4998-8776-655443322110}\r
a=rtcp-fb:120 nack\r
a=rtcp-fb:120 nack pli\r
a=rtcp-fb:120 ccm fir\r
a=rtcp-fb:120 goog-remb\r
a=rtcp-fb:120 transport-cc\r
a=rtcp-fb:121 nack\r
a=rtcp-fb:121 nack pli\r
a=rtcp-fb:121 ccm fir\r
a=rtcp-fb:126 nack\r
a=rtcp-fb:126 nack pli\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:120 VP8/90000\r
a=rtpmap:124 rtx/90000\r
a=rtpmap:121 VP9/90000\r
a=rtpmap:125 rtx/90000\r
a=rtpmap:126 H264/90000\r
a=rtpmap:127 rtx/90000\r
a=rtpmap:97 H264/90000\r
a=rtpmap:98 rtx/90000\r
a=setup:actpass\r
a=ssrc:3338787185 cname:{1a2b3c4d-5e6f-4788-99aa-bbccddeeff00}\r
a=ssrc:1283617225 cname:{1a2b3c4d-5e6f-4788-99aa-bbccddeeff00}\r
a=ssrc-group:FID 3338787185 1283617225\r
";

/// GStreamer's webrtcbin with bundle-policy max-bundle: the second section has port 0 and
/// a=bundle-only, each section carries its own fingerprint, SSRCs are declared.
pub const GSTREAMER: &str = "v=0\r
o=- 1953618367463312513 0 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=ice-options:trickle\r
a=group:BUNDLE video0 audio1\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=ice-ufrag:9XgX7ZVR6pWq3kD1hC2L1fBd3o5ZfJ1e\r
a=ice-pwd:yN4oH0j3m7G2uS5qP8dE6vB9cA1xK4zT\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=sendonly\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtcp-fb:96 ccm fir\r
a=ssrc:1434206632 msid:user1567/video0 webrtctransceiver0\r
a=ssrc:1434206632 cname:user1567\r
a=mid:video0\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
m=audio 0 UDP/TLS/RTP/SAVPF 97\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=ice-ufrag:9XgX7ZVR6pWq3kD1hC2L1fBd3o5ZfJ1e\r
a=ice-pwd:yN4oH0j3m7G2uS5qP8dE6vB9cA1xK4zT\r
a=bundle-only\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=sendonly\r
a=rtpmap:97 OPUS/48000/2\r
a=rtcp-fb:97 nack\r
a=rtcp-fb:97 nack pli\r
a=fmtp:97 sprop-maxcapturerate=48000;sprop-stereo=0\r
a=ssrc:2740325366 msid:user1567/audio1 webrtctransceiver1\r
a=ssrc:2740325366 cname:user1567\r
a=mid:audio1\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
";

/// werift: no a=msid anywhere, SSRCs with a cname only, one video section.
pub const WERIFT: &str = "v=0\r
o=- 1766425718 0 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=extmap-allow-mixed\r
a=msid-semantic:WMS *\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:3e5f\r
a=ice-pwd:6b4a0b2e6d1c3f8e9a7b5c4d\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=sendonly\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtcp-fb:96 goog-remb\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=ssrc-group:FID 3961390733 2013394532\r
a=ssrc:3961390733 cname:1d0e1c8a-9a32-4ad7-8e4c-b0d3d8b2a4c9\r
a=ssrc:2013394532 cname:1d0e1c8a-9a32-4ad7-8e4c-b0d3d8b2a4c9\r
";

/// A consumer's answer (Chrome) to an offer of the server's shape (audio, video, sendonly).
pub const SERVER_OFFER: &str = "v=0\r
o=- 21 0 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=group:BUNDLE 0 1\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=mid:0\r
a=ice-ufrag:serverufrag00000\r
a=ice-pwd:serverpasswordserverpassword0000\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=ssrc:11 cname:mediaserver\r
a=sendonly\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=mid:1\r
a=ice-ufrag:serverufrag00000\r
a=ice-pwd:serverpasswordserverpassword0000\r
a=rtcp-mux\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=ssrc:12 cname:mediaserver\r
a=sendonly\r
";

pub const CHROME_ANSWER: &str = "v=0\r
o=- 5553616863636863141 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Ab3d\r
a=ice-pwd:x0mVl2qVq4N0nLq9Y7e3FJ2s\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:active\r
a=mid:0\r
a=recvonly\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=fmtp:111 minptime=10;useinbandfec=1\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Ab3d\r
a=ice-pwd:x0mVl2qVq4N0nLq9Y7e3FJ2s\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:active\r
a=mid:1\r
a=recvonly\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
";

/// The real producer offers, each with what it sends (audio, video).
pub const OFFERS: [(&str, &str, (bool, bool)); 5] = [
    ("chrome", CHROME, (true, true)),
    ("chrome-simulcast", CHROME_SIMULCAST, (true, true)),
    ("firefox", FIREFOX, (true, true)),
    ("gstreamer", GSTREAMER, (true, true)),
    ("werift", WERIFT, (false, true)),
];

/// Lines of an SDP as the server's readers see them: split at LF, trailing CRs dropped.
pub fn sdp_lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n').map(|l| l.trim_end_matches('\r'))
}

/// How many `m=` lines an SDP has.
pub fn m_lines(sdp: &str) -> usize {
    sdp_lines(sdp).filter(|l| l.starts_with("m=")).count()
}
