#!/usr/bin/env bash
# Installs the system packages the test suite needs when they are missing (Debian/apt, as root):
# Debian's chromium for the end-to-end tests, and nftables, iproute2 and util-linux (unshare)
# for the packet-loss test in a private network namespace.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "the test suite needs these packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
echo "installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
