#!/bin/bash
# Instructions per established packet (batch path), counted by cachegrind: countable while other
# jobs share the machine, unlike time. Usage: bench/instructions.sh [TABLE_SIZE] (default 1000).
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
n=${1:-1000}
cd "$(dirname "$0")/.."
bin=$(cargo bench -p ferrowall-bench --bench conntrack --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
count() {
  FERROWALL_BENCH_SIZES=$n FERROWALL_BENCH_PACKETS=$1 valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file=/dev/null "$bin" --bench established 2>&1 | awk '/I *refs/ {gsub(",", "", $4); v = $4} END {print v}'
}
one=$(count 1)
many=$(count 200001)
echo "established/$n/batch: $(( (many - one) / 200000 )) instructions per packet"
