#!/usr/bin/env python3
"""Plot a bench/results/*.json run: server CPU per forwarded packet and latency (p50, p99)
against load (forwarded packets/s), one line per server, for both scenarios."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
run = json.load(open(src))
results = [r for r in run["results"] if not r.get("error") and r.get("received_packets", 0) > 0]
servers = []
for r in results:
    if r["server"] not in servers:
        servers.append(r["server"])
labels = {r["server"]: r["label"] for r in results}
colors = {"ours": "tab:red", "ours-loops-1w": "tab:orange", "ours-loops-2w": "tab:purple", "mediasoup-1w": "tab:blue", "mediasoup-2w": "tab:green", "mediasoup327-1w": "tab:cyan", "mediasoup327-2w": "tab:olive"}

fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex="col")
for col, scenario in enumerate(["room", "fanout"]):
    for s in servers:
        rs = sorted((r for r in results if r["server"] == s and r["scenario"] == scenario), key=lambda r: r["forwarded_pps"])
        if not rs:
            continue
        x = [r["forwarded_pps"] for r in rs]
        c = colors.get(s)
        ax = axes[0][col]
        ax.plot(x, [r["server_cpu_us_per_packet"] for r in rs], "o-", color=c, label=labels[s])
        for r in rs:
            ax.annotate(str(r["n"]), (r["forwarded_pps"], r["server_cpu_us_per_packet"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax = axes[1][col]
        ax.plot(x, [r["latency"]["p50_ms"] for r in rs], "o-", color=c, label=f"{labels[s]} p50")
        ax.plot(x, [r["latency"]["p99_ms"] for r in rs], "s--", color=c, label=f"{labels[s]} p99")
        for r in rs:
            if not r.get("pass"):
                ax.plot([r["forwarded_pps"]], [r["latency"]["p99_ms"]], "x", color="black", markersize=9)
    name = "room of N users (all publish + subscribe)" if scenario == "room" else "1 publisher, M subscribers"
    axes[0][col].set_title(f"{name}: server CPU per forwarded packet")
    axes[0][col].set_ylabel("CPU µs per forwarded packet (user+sys)")
    axes[0][col].set_ylim(bottom=0)
    axes[1][col].set_title(f"{name}: one-way latency through the server")
    axes[1][col].set_ylabel("ms (log scale)")
    axes[1][col].set_yscale("log")
    axes[1][col].axhline(50, color="grey", lw=0.8, ls=":")
    axes[1][col].set_xlabel("forwarded packets/s (labels: N or M; x: missed loss < 0.1% / p99 < 50 ms)")
    for ax in axes[:, col]:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
m = run["machine"]
fig.suptitle(f"mediaserver-rs vs mediasoup 3.12.16 — {m['cpu']} ×{m['cpus']}, kernel {m['kernel']}, run {run['started'][:16]}Z", fontsize=10)
fig.tight_layout()
fig.savefig(dst, dpi=110)
