#!/usr/bin/env python3
"""Markdown tables of one run.mjs result (JSON) side by side: our two engines and mediasoup.
Usage: python3 bench/engines_table.py bench/results/<timestamp>.json"""
import json, sys

run = json.load(open(sys.argv[1]))
res = [r for r in run["results"] if not r.get("error")]
ALL = ["ours", "ours-loops-1w", "ours-loops-2w", "mediasoup-1w", "mediasoup-2w", "mediasoup327-1w", "mediasoup327-2w"]
servers = [s for s in ALL if s in run["config"]["servers"]]
short = {"ours": "tasks", "ours-loops-1w": "loops 1w", "ours-loops-2w": "loops 2w", "mediasoup-1w": "ms312 1w", "mediasoup-2w": "ms312 2w",
         "mediasoup327-1w": "ms327 1w", "mediasoup327-2w": "ms327 2w"}

def get(s, sc, n):
    return next((r for r in res if r["server"] == s and r["scenario"] == sc and r["n"] == n), None)

def fmt(x, d):
    return "-" if x is None or x != x else f"{x:.{d}f}"

def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"

ORDER = {"room": 0, "fanout": 1, "fanout-rooms": 2}
sizes = sorted({(r["scenario"], r["n"]) for r in res}, key=lambda k: (ORDER.get(k[0], 3), k[1]))
metrics = [
    ("CPU µs/pkt (user + sys)", lambda r: f"{r['server_cpu_us_per_packet']:.1f} ({r['server_cpu_user_us_per_packet']:.1f} + {r['server_cpu_sys_us_per_packet']:.1f})", lambda r: r["server_cpu_us_per_packet"]),
    ("p50 / p99 ms", lambda r: f"{r['latency']['p50_ms']:.2f} / {r['latency']['p99_ms']:.2f}", lambda r: r["latency"]["p99_ms"]),
    ("KB RSS per downstream conn", lambda r: fmt(r.get("rss_per_downstream_kb"), 0), lambda r: r.get("rss_per_downstream_kb")),
]
pairs = [("ours-loops-1w", "ours"), ("ours-loops-1w", "mediasoup-1w"), ("ours-loops-1w", "mediasoup327-1w"), ("ours", "mediasoup-1w"),
         ("ours-loops-2w", "mediasoup-2w"), ("ours-loops-2w", "mediasoup327-2w")]
pairs = [p for p in pairs if p[0] in servers and p[1] in servers]
for title, show, val in metrics:
    head = ["point", "fwd pkt/s"] + [short[s] for s in servers] + [f"{short[a]} / {short[b]}" for a, b in pairs]
    print(f"\n{title}" + (" — ratios of p99" if "p99" in title else ""))
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for sc, n in sizes:
        rs = {s: get(s, sc, n) for s in servers}
        base = next((r for r in rs.values() if r), None)
        row = [f"{sc} {n}", fmt(base["forwarded_pps"], 0) if base else "-"]
        for s in servers:
            r = rs[s]
            row.append(("-" if not r else show(r) + ("" if r["pass"] else " MISS")))
        for a, b in pairs:
            row.append(ratio(val(rs[a]) if rs[a] else None, val(rs[b]) if rs[b] else None))
        print("| " + " | ".join(row) + " |")
print("\nMachine during each point (busy cores of 2, whole machine; 'other' = busy minus server and generator):")
head = ["point"] + [short[s] for s in servers]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] * len(head)) + "|")
for sc, n in sizes:
    row = [f"{sc} {n}"]
    for s in servers:
        r = get(s, sc, n)
        m = r and r.get("machine_cpu_window")
        row.append("-" if not m else f"{m['busy_cores']:.2f} (other {m['busy_cores'] - r['server_cpu_share'] - r['generator']['cpu_share']:.2f})")
    print("| " + " | ".join(row) + " |")
