#!/usr/bin/env python3
"""Per-stage instructions per forwarded packet from two callgrind runs of bench/callgrind.sh (the
<dump>.inclusive.txt it writes, and <name>-M<m>.loadgen.json): each stage's inclusive count / the
forwarded packets of that run, at the smaller and the larger fanout, and the marginal count per
additional forwarded packet between them (fixed costs cancel out).
Usage: callgrind_stages.py DIR NAME M1 M2     e.g. results/callgrind-<stamp> ours 2 4"""
import json, re, sys

d, name, m1, m2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
STAGES = {
    "ours": [
        ("total (the whole Node process)", r"PROGRAM TOTALS"),
        ("media loop thread (LoopState::run)", r"media_loop::LoopState<H>::run \["),
        ("  write path per downstream packet (drain_touched)", r"media_loop::LoopState<H>::drain_touched \["),
        ("    interceptor chain (InterceptorHandler::handle_write)", r"InterceptorHandler as sansio::Protocol.*>::handle_write \["),
        ("    SRTP encrypt (SrtpHandler::handle_write)", r"SrtpHandler as sansio::Protocol.*>::handle_write \["),
        ("      AES-GCM seal (ring)", r"ring::aead::algorithm::aes_gcm_seal \["),
        ("  datagrams out (LoopState::send, sendmmsg user side)", r"media_loop::LoopState<H>::send \["),
        ("  receive: recvmmsg batch + per-datagram read (recv_batch)", r"udp::BatchSocket::recv_batch \["),
        ("    SRTP decrypt (decrypt_rtp)", r"rtc_srtp::context::Context>::decrypt_rtp \["),
        ("  our forwarding (SfuHandler::on_message: rewrite, history, fan-out)", r"SfuHandler as mediaserver_rs::engine::media_loop::LoopHandler>::on_message \["),
        ("  log records routed through tracing (log::Log::log)", r"GlobalLogger as log::Log>::log \["),
        ("  memset (self, all callers)", r"__memset_avx2_unaligned_erms \["),
        ("  memcpy/memmove (self, all callers)", r"__memcpy_avx_unaligned_erms \["),
        ("  malloc + free (self)", r"malloc.c:(malloc|free) \["),
        ("Node/V8 worker threads (GC)", r"node::\(anonymous namespace\)::PlatformWorkerThread\(void\*\) \["),
        ("Node main loop (uv_run)", r"core.c:uv_run \["),
    ],
}
STAGES["mediasoup327"] = STAGES["mediasoup"] = [
    ("total (the worker process)", r"PROGRAM TOTALS"),
    ("UDP datagram in (UdpSocket::UserOnUdpDatagramReceived: everything a datagram causes)", r"RTC::UdpSocket::UserOnUdpDatagramReceived\("),
    ("  RTP in -> producer -> router -> consumers (Transport::ReceiveRtpPacket)", r"RTC::Transport::ReceiveRtpPacket\("),
    ("    per consumer (Consumer::SendRtpPacket)", r"RTC::(Simple)?Consumer::SendRtpPacket\("),
    ("      transport send (WebRtcTransport::SendRtpPacket)", r"RTC::WebRtcTransport::SendRtpPacket\("),
    ("        SRTP encrypt (SrtpSession::EncryptRtp)", r"RTC::SrtpSession::EncryptRtp\("),
    ("        UDP send, user side (UdpSocketHandle[r]::Send)", r"UdpSocketHandle[r]?::Send\("),
    ("  SRTP decrypt (SrtpSession::DecryptSrtp)", r"RTC::SrtpSession::DecryptSrtp\("),
    ("  RTCP in (WebRtcTransport::OnRtcpDataReceived: TWCC feedback -> BWE, RR, NACK)", r"RTC::WebRtcTransport::OnRtcpDataReceived\("),
    ("timers (onTimer: BWE, RTCP)", r"onTimer\(uv_timer_s\*\)"),
    ("memcpy/memmove (self, all callers)", r"__memcpy_avx_unaligned_erms \["),
    ("malloc + free (self)", r"malloc.c:(malloc|free) \["),
]

def load(m):
    run = json.load(open(f"{d}/{name}-M{m}.loadgen.json"))
    # the dump of this M, as callgrind.sh logged it in summary.txt
    summ = open(f"{d}/summary.txt").read()
    mm = re.search(rf"^{re.escape(name)}\s+M={m}\s+.*\[(cg\.{re.escape(name)}\.\d+\.1)\]", summ, re.M)
    text = open(f"{d}/{mm.group(1)}.inclusive.txt").read().splitlines()
    vals = {}
    for label, pat in STAGES[name]:
        best = 0
        for line in text:
            mt = re.match(r"\s*([\d,]+) \(", line)
            if mt and re.search(pat, line):
                best = max(best, int(mt.group(1).replace(",", "")))
        vals[label] = best
    return vals, run["received_packets"]

a, pa = load(m1)
b, pb = load(m2)
print(f"{name}: instructions per forwarded packet, inclusive (M={m1}: {pa} packets, M={m2}: {pb} packets)")
print(f"| stage | M={m1} | M={m2} | marginal M={m1}→{m2} |")
print("|---|---|---|---|")
for label, _ in STAGES[name]:
    marg = (b[label] - a[label]) / (pb - pa)
    print(f"| {label} | {a[label] / pa:,.0f} | {b[label] / pb:,.0f} | {marg:,.0f} |")
