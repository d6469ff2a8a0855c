#!/usr/bin/env bash
# Installs what the tests need (Debian packages, as root) and runs every test.
# The kernel-differential and namespace tests need root: they create network namespaces.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (the tests create network namespaces and use the kernel as an oracle)" >&2
  exit 1
fi

packages=(nftables conntrack nfct iptables iperf3 ethtool iproute2 iputils-ping tcpdump curl util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
