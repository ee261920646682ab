#!/usr/bin/env python3
"""Writes fuzz/seeds/: starting inputs for the four targets, from the real offers of
tests/support/sdp_corpus.rs, request bodies as the spec shapes them, browser-like binding
requests, and short RTP streams. Run from anywhere: python3 fuzz/make_seeds.py"""
import hashlib, hmac, json, os, re, struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# SDP: the corpus's offers, alone and with the consumer's answer after a NUL.
src = open(os.path.join(HERE, "..", "tests", "support", "sdp_corpus.rs")).read()
offers = {}
for name, body in re.findall(r'pub const (\w+): &str = "(.*?)";', src, re.S):
    offers[name.lower()] = body.replace("\\r", "\r").replace("\\n", "\n").replace("\\\"", '"')
for name, text in offers.items():
    if text.startswith("v=0"):
        write("sdp_read", name, text)
write("sdp_read", "server_offer_and_answer", offers["server_offer"] + "\0" + offers["chrome_answer"])

# Bodies: mode byte 0 (JSON text), then the JSON.
bodies = {
    "produce": {"offer": {"type": "offer", "sdp": "v=0\r\n"}, "constraints": {"audio": True, "video": False}},
    "consume_one": {"id": "p1", "answer": {"type": "answer", "sdp": "v=0\r\n"}},
    "consume_many": {"answers": [{"id": 1, "answer": {"type": "answer", "sdp": "a"}}, {"id": "2", "answer": {"type": "answer", "sdp": "b"}}]},
    "user_info": {"userInfo": {"name": "x", "n": [1, 2.5, {"a": None}]}},
    "options": {"listenIp": "127.0.0.1", "announcedIp": "203.0.113.7", "portRange": {"min": 40000, "max": 40099},
                "enableTcp": True, "maxRooms": 2, "maxUsersPerRoom": 3, "maxConnections": 4, "offerTimeoutMs": 1500},
    "options_ips": {"listenIps": ["127.0.0.1", {"ip": "::1", "announcedIp": "198.51.100.1"}], "udpPort": 0, "offerTimeoutMs": None},
    "ids": [1, 2.0, -3, "abc", 9007199254740993, 1.5],
}
for name, body in bodies.items():
    write("body_parse", name, b"\0" + json.dumps(body).encode())
write("body_parse", "built", bytes([1, 9, 3, 0, 6, 0, 4, 1, 2, 3, 4]))

# STUN: mode byte 0 (raw), then a binding request as browsers send it.
def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack(">HH", kind, len(value)) + value + b"\0" * pad

def request(username, pwd):
    body = attr(0x0024, b"\x6e\x7f\x1e\xff") + attr(0x0006, username.encode()) + attr(0x802A, bytes(range(8)))
    at = 20 + len(body)
    header = struct.pack(">HH", 0x0001, at + 24 - 20) + b"\x21\x12\xa4\x42" + b"\x07" * 12
    tag = hmac.new(pwd.encode(), header + body, hashlib.sha1).digest()
    body += attr(0x0008, tag) + attr(0x8028, b"\0\0\0\0")
    return struct.pack(">HH", 0x0001, len(body)) + b"\x21\x12\xa4\x42" + b"\x07" * 12 + body

write("stun_demux", "browser_request_a", b"\0" + request("ufragA:remote", "password-of-connection-one-0123"))
write("stun_demux", "browser_request_b", b"\0" + request("ufragB:remote", "password-of-connection-two-4567"))
write("stun_demux", "rtp", b"\0" + bytes([0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]))
write("stun_demux", "built_honest", bytes([1, 0, 3, 0, 0, 0, 2, 1, 4, 4, 0, 0, 0, 0]))
write("stun_demux", "built_lying", bytes([2, 0, 2, 0, 0, 0, 1, 2, 1, 0, 9, 3]))

# RTP: clock rate 90000, a start near the wrap, packets, a cut, packets.
stream = struct.pack(">IH", 90000, 0xfff0) + bytes([1, 40, 100] * 20) + bytes([0x10, 0, 1, 0, 0, 0xff, 0xfe, 0, 0, 0, 0]) + bytes([3, 40, 100] * 20)
write("rtp_rewrite", "stream", stream)
write("rtp_rewrite", "rtp_packet", bytes([0x80, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1]) + b"payload")
