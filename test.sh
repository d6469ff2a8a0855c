#!/usr/bin/env bash
# Installs what the tests need (Debian packages, as root) and runs every test.
# The kernel-differential and namespace tests need root: they create network namespaces.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (the tests create network namespaces and use the kernel as an oracle)" >&2
  exit 1
fi

packages=(nftables conntrack conntrackd nfct iptables iperf3 ethtool iproute2 iputils-ping tcpdump curl util-linux)
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

# Fuzz smoke: each cargo-fuzz target (fuzz/README.md) for a short run from a temporary copy of
# its kept corpus, so the run adds nothing to the repository. A crash fails the script; its input
# is left in fuzz/artifacts/TARGET/.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
if ! command -v c++ >/dev/null; then
  # libfuzzer-sys compiles libFuzzer's C++ sources.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
fuzz_tmp=$(mktemp -d)
trap 'rm -rf "$fuzz_tmp"' EXIT
# 16 codegen units: a much quicker build, for slower fuzzing that a smoke run does not mind.
fuzz_opts=(-s none --codegen-units 16)
(cd fuzz && cargo fuzz build "${fuzz_opts[@]}")
for t in control packet netlink; do
  cp -r "fuzz/corpus/$t" "$fuzz_tmp/$t"
  if (cd fuzz && cargo fuzz run "${fuzz_opts[@]}" "$t" "$fuzz_tmp/$t" -- -max_total_time=20 -runs=2000000) >"$fuzz_tmp/$t.log" 2>&1; then
    echo "fuzz $t: ok, $(awk '/^Done [0-9]+ runs/ {r = $2; s = $5} END {print r " inputs in " s " s"}' "$fuzz_tmp/$t.log"), no crash"
  else
    echo "fuzz $t: FAILED" >&2
    tail -n 40 "$fuzz_tmp/$t.log" >&2
    exit 1
  fi
done
