#!/usr/bin/env bash
# Where our server's CPU per forwarded packet goes: runs bench/servers/ours.mjs under the
# generator's fanout load (one publisher, M subscribers), samples the server process with
# `perf record -e cpu-clock` (call graphs by DWARF unwinding; this KVM guest has no hardware
# counters), and prints the inclusive share of each stage of the per-packet path, turned into
# µs per forwarded packet with the CPU figure the generator measured over the same run.
# Usage: bash bench/profile.sh [M (default 50)] [seconds sampled (default 6)]
# ENGINE=loops [WORKERS=1] bash bench/profile.sh ...: our 'loops' engine (default: 'tasks').
# ENGINE=mediasoup327 bash bench/profile.sh ...: mediasoup 3.27.1's worker (1 worker, from
# mediasoup-new/app-3.27.1) under the same load, with its own stages.
set -euo pipefail
M=${1:-50}
SECS=${2:-6}
ENGINE=${ENGINE:-tasks}
ENGINE_ARGS=(--engine "$ENGINE")
[ "$ENGINE" = loops ] && ENGINE_ARGS+=(--workers "${WORKERS:-1}")
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/profile-$ENGINE-$(date -u +%Y-%m-%dT%H-%M-%S)"
mkdir -p "$HERE/results"
(cd "$HERE/loadgen" && cargo build --release --quiet)
command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf"; exit 1; }

if [ "$ENGINE" = mediasoup327 ]; then
  "$HERE/mediasoup-new/bin/node" "$HERE/servers/mediasoup.mjs" --port 50000 --workers 1 \
    --mediasoup-app "$HERE/mediasoup-new/app-3.27.1" > "$OUT.server.log" 2>&1 &
else
  node "$HERE/servers/ours.mjs" --port 50000 "${ENGINE_ARGS[@]}" > "$OUT.server.log" 2>&1 &
fi
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q ready "$OUT.server.log" 2>/dev/null && break; sleep 0.2; done
# the process measured and sampled: ours = the Node process; mediasoup = its worker
TARGET=$(python3 -c "import json,sys; p=json.loads(open(sys.argv[1]).readline())['pids']; print(p.get('server') or p['worker0'])" "$OUT.server.log")
"$HERE/loadgen/target/release/loadgen" --scenario fanout --n "$M" --warmup 2 --duration $((SECS + 6)) \
  --port-base 50010 --server-pids "server=$TARGET" > "$OUT.loadgen.json" 2>/dev/null &
GEN=$!
sleep 6
perf record -q -e cpu-clock -F 1999 -g --call-graph dwarf,16384 -p "$TARGET" -o "$OUT.perf" -- sleep "$SECS" 2>/dev/null
wait $GEN
kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT

perf report -i "$OUT.perf" --children --sort sym -g none 2>/dev/null | grep '%' > "$OUT.children.txt"
perf report -i "$OUT.perf" --no-children --sort sym -g none 2>/dev/null | grep '%' > "$OUT.self.txt"
perf report -i "$OUT.perf" --no-children --sort dso -g none 2>/dev/null | grep '%' > "$OUT.dso.txt"
python3 - "$OUT" "$ENGINE" <<'PY'
import json, re, sys
out = sys.argv[1]
engine = sys.argv[2]
run = json.load(open(out + ".loadgen.json"))
us = run["server_cpu_us_per_packet"]
children = open(out + ".children.txt").read().splitlines()
def share(pattern):
    best = 0.0
    for line in children:
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
        if m and re.search(pattern, m.group(3)):
            best = max(best, float(m.group(1)))
    return best
stages = [
    ("per-connection write path: webrtc-rs PeerConnectionDriver::poll_writes", r"PeerConnectionDriver<A>::poll_writes"),
    ("  kernel UDP send (sendmsg syscall, loopback delivery included)", r"^__libc_sendmsg"),
    ("  rtc sans-IO write chain: RTCPeerConnection::flush_writes", r"RTCPeerConnection>::flush_writes"),
    ("    interceptor chain (NACK buffer, sender reports, TWCC, stats)", r"InterceptorHandler as sansio::Protocol.*>::handle_write"),
    ("    SRTP encrypt (SrtpHandler::handle_write)", r"SrtpHandler as sansio::Protocol.*>::handle_write"),
    ("our forwarder task: Forwarder::run (rewrite + TrackLocalStaticRTP::write_rtp)", r"sfu::forward::Forwarder::run"),
    ("  TrackLocalStaticRTP::write_rtp (hand-off to the connection's driver)", r"TrackLocalStaticRTP as webrtc::media_stream::track_local::TrackLocal>::write_rtp"),
    ("receive path: PeerConnectionDriver::handle_read", r"PeerConnectionDriver<A>::handle_read"),
    ("timers: PeerConnectionDriver::handle_timeout", r"PeerConnectionDriver<A>::handle_timeout"),
    ("tokio worker parking (epoll_wait, futex, context switches)", r"multi_thread::worker::Context::park_internal"),
    ("memcpy/memmove (self time, all callers)", r"^__memmove_avx_unaligned_erms"),
]
if engine == "loops":
    stages = [
        ("media loop: outputs of touched connections (drain_touched: poll_write, SRTP)", r"media_loop::LoopState<H>::drain_touched$"),
        ("  rtc sans-IO write chain: RTCPeerConnection::flush_writes", r"RTCPeerConnection>::flush_writes"),
        ("    interceptor chain (InterceptorHandler::handle_write)", r"InterceptorHandler as sansio::Protocol.*>::handle_write"),
        ("    SRTP encrypt (SrtpHandler::handle_write)", r"SrtpHandler as sansio::Protocol.*>::handle_write"),
        ("media loop: datagrams out (LoopState::send)", r"media_loop::LoopState<H>::send$"),
        ("  kernel UDP send (sendmmsg syscall, loopback delivery included)", r"^__GI___sendmmsg"),
        ("our forwarding: SfuHandler::on_message (rewrite + write to each consumer)", r"SfuHandler as .*LoopHandler>::on_message"),
        ("  RTCRtpSender::write_rtp (into the connection's write queue)", r"RTCRtpSender::write_rtp"),
        ("kernel UDP receive (recvmmsg)", r"^__recvmmsg"),
        ("log records through tracing (LogTracer::log)", r"LogTracer as log::Log>::log"),
        ("media loop: waiting (epoll_wait)", r"^epoll_wait"),
        ("memcpy/memmove (self time, all callers)", r"^__memmove_avx"),
    ]
if engine == "mediasoup327":
    stages = [
        ("UDP datagram in (UdpSocket::UserOnUdpDatagramReceived: all it causes)", r"RTC::UdpSocket::UserOnUdpDatagramReceived$"),
        ("  RTP in -> producer -> router -> consumers (Transport::ReceiveRtpPacket)", r"RTC::Transport::ReceiveRtpPacket$"),
        ("    per consumer (Consumer::SendRtpPacket)", r"RTC::(Simple)?Consumer::SendRtpPacket$"),
        ("      SRTP encrypt (SrtpSession::EncryptRtp)", r"RTC::SrtpSession::EncryptRtp$"),
        ("      UDP send (UdpSocketHandle::Send)", r"UdpSocketHandle::Send$"),
        ("        kernel UDP send (sendmsg syscall, loopback delivery included)", r"^__libc_sendmsg$"),
        ("  SRTP decrypt (SrtpSession::DecryptSrtp)", r"RTC::SrtpSession::DecryptSrtp$"),
        ("  RTCP in (WebRtcTransport::OnRtcpDataReceived: TWCC -> BWE, RR, NACK)", r"RTC::WebRtcTransport::OnRtcpDataReceived$"),
        ("kernel UDP receive (recvmmsg)", r"__x64_sys_recvmmsg$"),
        ("timers (onTimer)", r"^onTimer$"),
        ("waiting (epoll_wait)", r"^epoll_wait$"),
        ("memcpy/memmove (self time, all callers)", r"^__memmove_avx"),
    ]
lines = [f"{'mediasoup 3.27.1 (worker)' if engine == 'mediasoup327' else f'mediaserver-rs ({engine})'}, fanout M={run['n']}: {run['forwarded_pps']:.0f} forwarded pkt/s, server CPU {us:.2f} µs/pkt "
         f"({run['server_cpu_user_us_per_packet']:.2f} user + {run['server_cpu_sys_us_per_packet']:.2f} sys), loss {run['loss']*100:.3f}%",
         "", f"{'stage (inclusive)':<82} {'share':>7} {'µs/pkt':>7}"]
for name, pat in stages:
    s = share(pat)
    lines.append(f"{name:<82} {s:6.1f}% {s/100*us:7.2f}")
text = "\n".join(lines)
print(text)
open(out + ".txt", "w").write(text + "\n\nTop self-time symbols:\n" + "\n".join(open(out + ".self.txt").read().splitlines()[:30]) + "\n\nBy binary:\n" + open(out + ".dso.txt").read())
PY
echo "full report: $OUT.txt (perf data: $OUT.perf)"
