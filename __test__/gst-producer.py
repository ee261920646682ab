#!/usr/bin/python3
"""A GStreamer webrtcbin producer for the tests (Debian's gstreamer1.0-plugins-bad / -nice, driven
with python3-gi): audiotestsrc -> Opus and videotestsrc -> VP8, sendonly, with the bundle policy
given on the command line (max-bundle by default: every section but the first has port 0 and
a=bundle-only, as JSEP's max-bundle offers).

Signalling is one JSON object per line: it writes {"offer": sdp} once ICE gathering is complete
(non-trickle), reads {"answer": sdp} from stdin, then writes {"state": ...} on each connection
state change. It gathers on 127.0.0.1 only, so every packet stays on loopback. It exits when
stdin closes or on SIGTERM.
"""

import ctypes
import json
import re
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

POLICY = sys.argv[1] if len(sys.argv) > 1 else "max-bundle"

PIPELINE = f"""
webrtcbin name=w bundle-policy={POLICY} stun-server=""
audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! opusenc
  ! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111 ! w.
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert
  ! vp8enc deadline=1 cpu-used=8 target-bitrate=300000 keyframe-max-dist=3000
  ! rtpvp8pay pt=96 ! application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96 ! w.
"""


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    Gst.init(None)
    loop = GLib.MainLoop()
    pipe = Gst.parse_launch(PIPELINE)
    webrtc = pipe.get_by_name("w")

    # Loopback only: libnice skips loopback interfaces unless told to use an address. PyGObject
    # drops a reference to webrtcbin's ICE object that the property getter never gave (a
    # GStreamer 1.22 binding bug that ends in a crash), so take one for it first.
    ice = webrtc.get_property("ice-agent")
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    gobject.g_object_ref.argtypes = [ctypes.c_void_p]
    gobject.g_object_ref.restype = ctypes.c_void_p
    gobject.g_object_ref(int(re.search(r"at (0x[0-9a-f]+)\)>$", repr(ice)).group(1), 16))
    agent = ice.get_property("agent")
    address = Nice.Address.new()
    address.set_from_string("127.0.0.1")
    agent.add_local_address(address)

    sent = {"offer": False}

    def send_offer_when_gathered(*_):
        if sent["offer"]:
            return
        if webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        local = webrtc.get_property("local-description")
        if local is None:
            return
        sent["offer"] = True
        emit({"offer": local.sdp.as_text()})

    def on_offer(promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        p = Gst.Promise.new()
        webrtc.emit("set-local-description", offer, p)
        p.interrupt()
        GLib.timeout_add(20, lambda: (send_offer_when_gathered(), not sent["offer"])[1])

    def on_negotiation_needed(element):
        index = 0
        while (transceiver := element.emit("get-transceiver", index)) is not None:
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            index += 1
        promise = Gst.Promise.new_with_change_func(on_offer, None)
        element.emit("create-offer", None, promise)

    def on_state(element, _pspec):
        emit({"state": element.get_property("connection-state").value_nick})

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", send_offer_when_gathered)
    webrtc.connect("notify::connection-state", on_state)

    def on_stdin(channel, condition):
        if condition & (GLib.IOCondition.HUP | GLib.IOCondition.ERR):
            loop.quit()
            return False
        line = channel.readline()
        if not line:
            loop.quit()
            return False
        message = json.loads(line)
        if "answer" in message:
            _, sdp = GstSdp.SDPMessage.new_from_text(message["answer"])
            answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
            p = Gst.Promise.new()
            webrtc.emit("set-remote-description", answer, p)
            p.interrupt()
            emit({"answered": True})
        return True

    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                      GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR, on_stdin)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: (loop.quit(), False)[1])
    bus = pipe.get_bus()
    bus.add_signal_watch()

    def on_error(_bus, message):
        err, debug = message.parse_error()
        emit({"error": f"{err.message} ({debug})"})
        loop.quit()

    bus.connect("message::error", on_error)
    pipe.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipe.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
