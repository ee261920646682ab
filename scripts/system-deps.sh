#!/usr/bin/env bash
# Installs the system packages the test suite needs when they are missing (Debian/apt, as root):
# Debian's chromium for the end-to-end tests, nftables, iproute2 and util-linux (unshare)
# for the packet-loss test in a private network namespace, and GStreamer's webrtcbin with its
# Python bindings for the GStreamer producer (__test__/gstreamer.test.mjs, gst-producer.py), and
# redis-server for the cluster tests (__test__/cluster.test.mjs starts its own, persistence off).
# Then scripts/cross-deps.sh: what the cross-target test (__test__/platforms.test.mjs) needs.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v redis-server >/dev/null || need+=(redis-server)
gst_ready() {
  /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1'); from gi.repository import Gst, GstWebRTC, Nice; Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ['webrtcbin', 'nicesrc', 'opusenc', 'vp8enc', 'rtpvp8pay', 'videotestsrc'])" 2>/dev/null
}
gst_ready || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-nice python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "the test suite needs these packages: ${need[*]} (install them with your package manager)" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash "$(dirname "$0")/cross-deps.sh"
