#!/usr/bin/env bash
# Instructions per forwarded packet, counted by valgrind's callgrind (repeatable: it does not
# depend on what else the machine is doing), for our server and for mediasoup's worker (3.12.16 and 3.27.1),
# user space only (the kernel's part, e.g. sendmsg, is not counted). Each server runs under
# callgrind with instrumentation off; the generator switches it on for exactly its measurement
# window (--hook-start/--hook-end). Valgrind runs a process's threads one at a time and about
# 50x slower, so the load is small: fanout M=2 and M=4 (340 and 680 forwarded packets/s); the
# difference between the two gives the marginal count per packet, without the fixed costs.
# Usage: bash bench/callgrind.sh [seconds per window (default 20)]
# Env: SERVERS (default "ours mediasoup327 mediasoup": ours = our server, ENGINE (default loops) with
#      WORKERS loops (default 1); mediasoup = 3.12.16 from servers/node_modules; mediasoup327 = 3.27.1
#      from mediasoup-new/app-3.27.1, run by mediasoup-new/bin/node), FANOUTS (default "2 4").
# Besides the totals, each dump's inclusive counts per function go to <dump>.inclusive.txt (the
# stage split per packet: divide by the forwarded packets of that run).
set -euo pipefail
SECS=${1:-20}
SERVERS=${SERVERS:-ours mediasoup327 mediasoup}
FANOUTS=${FANOUTS:-2 4}
ENGINE=${ENGINE:-loops}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/callgrind-$(date -u +%Y-%m-%dT%H-%M-%S)"
mkdir -p "$OUT"
(cd "$HERE/loadgen" && cargo build --release --quiet)
MS327_APP="$HERE/mediasoup-new/app-3.27.1"
wrap() { # name worker-binary
  cat > "$OUT/$1-worker-under-callgrind" <<WRAPPER
#!/bin/sh
exec /usr/bin/valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/cg.$1.%p "$2" "\$@"
WRAPPER
  chmod +x "$OUT/$1-worker-under-callgrind"
}
wrap mediasoup "$HERE/servers/node_modules/mediasoup/worker/out/Release/mediasoup-worker"
wrap mediasoup327 "$MS327_APP/node_modules/mediasoup/worker/out/Release/mediasoup-worker"
ENGINE_ARGS=(--engine "$ENGINE")
[ "$ENGINE" = loops ] && ENGINE_ARGS+=(--workers "${WORKERS:-1}")

run() { # name M
  local name=$1 m=$2 log="$OUT/$1-M$2"
  if [ "$name" = ours ]; then
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.ours.%p" \
      node "$HERE/servers/ours.mjs" --port 50000 "${ENGINE_ARGS[@]}" > "$log.server.log" 2> "$log.valgrind.log" &
  elif [ "$name" = mediasoup327 ]; then
    MEDIASOUP_WORKER_BIN="$OUT/$name-worker-under-callgrind" "$HERE/mediasoup-new/bin/node" "$HERE/servers/mediasoup.mjs" \
      --port 50000 --workers 1 --mediasoup-app "$MS327_APP" > "$log.server.log" 2> "$log.valgrind.log" &
  else
    MEDIASOUP_WORKER_BIN="$OUT/$name-worker-under-callgrind" node "$HERE/servers/mediasoup.mjs" --port 50000 --workers 1 > "$log.server.log" 2> "$log.valgrind.log" &
  fi
  local server=$!
  for _ in $(seq 120); do grep -q ready "$log.server.log" 2>/dev/null && break; sleep 0.5; done
  local pid
  pid=$(python3 -c "import json,sys; p=json.loads(open(sys.argv[1]).readline())['pids']; print(p.get('server') or p['worker0'])" "$log.server.log")
  "$HERE/loadgen/target/release/loadgen" --scenario fanout --n "$m" --warmup 5 --duration "$SECS" --setup-timeout 90 \
    --server-pids "server=$pid" --hook-start "callgrind_control -i on $pid >/dev/null" \
    --hook-end "callgrind_control -i off $pid >/dev/null; callgrind_control -d $pid >/dev/null" \
    > "$log.loadgen.json" 2> /dev/null
  kill $server; wait $server 2>/dev/null || true
  sleep 1
  local dump
  dump=$(ls -t "$OUT"/cg."$name".$pid.* 2>/dev/null | head -1)
  local ir
  ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  callgrind_annotate --inclusive=yes --threshold=99.5 "$dump" 2>/dev/null | head -400 > "$dump.inclusive.txt" || true
  python3 - "$log.loadgen.json" "$ir" "$name" "$m" "$dump" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
r = json.load(open(sys.argv[1])); ir = int(sys.argv[2])
print(f"{sys.argv[3]:<12} M={sys.argv[4]}  forwarded {r['received_packets']} packets (loss {r['loss']*100:.3f}%), "
      f"{ir:,} instructions = {ir / r['received_packets']:,.0f} per forwarded packet   [{sys.argv[5].split('/')[-1]}]")
PY
}

for name in $SERVERS; do
  for m in $FANOUTS; do run "$name" "$m"; done
done
python3 - "$OUT/summary.txt" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+M=(\d+)\s+forwarded (\d+) packets.*?([\d,]+) instructions", line)
    if m:
        rows[(m.group(1), int(m.group(2)))] = (int(m.group(3)), int(m.group(4).replace(",", "")))
for name in sorted({k[0] for k in rows}):
    ms = sorted(m for (n, m) in rows if n == name)
    for a, b in zip(ms, ms[1:]):
        (pa, ia), (pb, ib) = rows[(name, a)], rows[(name, b)]
        print(f"{name:<12} marginal: {(ib - ia) / (pb - pa):,.0f} instructions per additional forwarded packet (M={a} -> M={b})")
PY
echo "dumps and logs: $OUT"
