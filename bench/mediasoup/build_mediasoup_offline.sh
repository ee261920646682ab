#!/usr/bin/env bash
# Install mediasoup 3.12.16 into <app-dir> with its C++ worker built from Debian bookworm's own
# libraries: its usual install downloads a prebuilt worker, then meson wrap sources, and both
# fail on a machine that reaches only the package registries.
# Usage: build_mediasoup_offline.sh <app-dir>
set -euo pipefail
APP=${1:?app dir}
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential python3 python3-pip \
  pkg-config libssl-dev libuv1-dev libsrtp2-dev libusrsctp-dev libabsl-dev nlohmann-json3-dev
mkdir -p "$APP" && cd "$APP"
[ -f package.json ] || npm init -y >/dev/null
npm install --save-exact mediasoup@3.12.16 --ignore-scripts         # skip GitHub prebuilt download
python3 "$HERE/patch_meson_system_deps.py" node_modules/mediasoup/worker
rm -f node_modules/mediasoup/worker/subprojects/*.wrap   # belt and braces: nothing to download
# postinstall: skip prebuilt download, build with make -C worker (pip installs meson 1.2.1 + ninja from PyPI)
MEDIASOUP_SKIP_WORKER_PREBUILT_DOWNLOAD=1 MESON_ARGS="--wrap-mode=nodownload" \
  npm rebuild mediasoup --foreground-scripts
ls -l node_modules/mediasoup/worker/out/Release/mediasoup-worker
