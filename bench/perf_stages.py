#!/usr/bin/env python3
"""Break a `perf script` dump down: for an anchor frame, which callee (one level below its
outermost occurrence) the samples under it went to. Usage: perf_stages.py STACKS.txt"""
import collections
import re
import sys

stacks, cur = [], []
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        if cur:
            stacks.append(cur)
        cur = []
        continue
    if line.startswith("\t") or line.startswith(" "):
        parts = line.strip().split(" ", 1)
        if len(parts) == 2:
            cur.append(re.sub(r"\+0x[0-9a-f]+ \(.*\)$|\s\(.*\)$", "", parts[1]))
if cur:
    stacks.append(cur)
total = len(stacks)
print(f"{total} samples")


def short(s):
    s = re.sub(r"<([^<>]*?) as [^<>]*?>", r"\1", s)
    s = re.sub(r"<[^<>]*>", "", s)
    return s[:100]


def breakdown(anchor, top=12):
    c = collections.Counter()
    n = 0
    for st in stacks:  # leaf first
        idx = [i for i, f in enumerate(st) if re.search(anchor, f)]
        if not idx:
            continue
        i = max(idx)
        n += 1
        c[short(st[i - 1]) if i >= 1 else "(self)"] += 1
    print(f"\n== under {anchor}: {100 * n / total:.1f}% of samples")
    for k, v in c.most_common(top):
        print(f"  {100 * v / total:5.1f}%  {k}")


for a in sys.argv[2:] or [
    r"RTCPeerConnection>::flush_writes",
    r"PeerConnectionDriver<A>::poll_writes",
    r"InterceptorHandler as .*>::handle_write",
    r"TrackLocalStaticRTP as .*write_rtp",
    r"sfu::forward::Forwarder::run",
]:
    breakdown(a)
