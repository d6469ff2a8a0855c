#!/usr/bin/env bash
# ferrowall demo: ferrowall is the router between a client and a server namespace. Real traffic
# (an HTTP download, UDP, ping, a connection attempt the rules block) goes through it; then its
# connection table and its timeout policies (through the real nfct) are shown.
# Creates everything it uses (namespaces fwdemo-*, a temporary directory) and removes it on exit,
# even when interrupted.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
for p in nfct iputils-ping curl ethtool iproute2; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "demo.sh: installing $p"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
  fi
done

echo "== building ferrowall"
cargo build --release -q -p ferrowall-engine -p ferrowall-ctl -p ferrowall-shim
BIN=$PWD/target/release

C=fwdemo-client R=fwdemo-router S=fwdemo-server
WORK=$(mktemp -d /tmp/fwdemo.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $C $R $S; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== namespaces: $C (198.18.1.2) <-> $R (ferrowall) <-> $S (198.19.1.2)"
for ns in $C $R $S; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add c-eth0 netns $C type veth peer name r-cli netns $R
ip link add s-eth0 netns $S type veth peer name r-srv netns $R
ip -n $C addr add 198.18.1.2/24 dev c-eth0
ip -n $C addr add 2001:2:0:1::2/64 dev c-eth0 nodad
ip -n $S addr add 198.19.1.2/24 dev s-eth0
ip -n $S addr add 2001:2:0:2::2/64 dev s-eth0 nodad
for pair in "$C c-eth0" "$R r-cli" "$R r-srv" "$S s-eth0"; do
  set -- $pair
  ip -n "$1" link set "$2" up
  # Offloads off: every frame at most one MTU, checksums filled in. (ferrowall takes GSO
  # super-frames too, through vnet headers: tests/tests/gso.rs runs with offloads on.)
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
done
# The router namespace's own kernel stack stays out of the way: ferrowall owns the addresses.
ip netns exec $R sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ip_forward=0
ip -n $C route add default via 198.18.1.1
ip -n $C -6 route add default via 2001:2:0:1::1
ip -n $S route add default via 198.19.1.1
ip -n $S -6 route add default via 2001:2:0:2::1

cat > "$WORK/ferrowall.conf" <<EOF
ctl_socket = $WORK/ctl.sock
state_dir = $WORK/state
interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
timeout = dns inet udp unreplied 3 replied 10
timeout = web inet tcp established 600 time_wait 5
rules = fw.rules
EOF
cat > "$WORK/fw.rules" <<'EOF'
chain forward {
  policy drop
  ct state established,related accept
  ct state invalid counter drop
  iifname "r-srv" ct state new counter drop
  udp dport 5353 ct timeout set "dns" accept
  tcp dport 8080 ct timeout set "web" accept
  iifname "r-cli" accept
}
EOF
echo "== rule set ($WORK/fw.rules):"
sed 's/^/   /' "$WORK/fw.rules"
ip netns exec $R "$BIN/ferrowall" run --config "$WORK/ferrowall.conf" 2> "$WORK/ferrowall.log" & PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/ctl.sock" ] && break; sleep 0.1; done
[ -S "$WORK/ctl.sock" ] || { echo "ferrowall did not start:"; cat "$WORK/ferrowall.log"; exit 1; }
sed 's/^/   /' "$WORK/ferrowall.log"

head -c 5000000 /dev/urandom > "$WORK/blob"
ip netns exec $S python3 -m http.server 8080 --bind :: --directory "$WORK" >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $S python3 - <<'EOF' & PIDS+=($!)
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353)); s.settimeout(15)
try:
    data, peer = s.recvfrom(100); s.sendto(b"answer", peer)
except OSError:
    pass
EOF
sleep 1

echo
echo "== traffic through ferrowall"
echo "-- HTTP download of 5 MB over IPv4 and IPv6"
ip netns exec $C curl -s -o "$WORK/got4" -w "   IPv4: %{size_download} bytes, HTTP %{http_code}\n" http://198.19.1.2:8080/blob
ip netns exec $C curl -s -o "$WORK/got6" -w "   IPv6: %{size_download} bytes, HTTP %{http_code}\n" "http://[2001:2:0:2::2]:8080/blob"
cmp -s "$WORK/blob" "$WORK/got4" && cmp -s "$WORK/blob" "$WORK/got6" && echo "   both copies identical to the original"
echo "-- UDP request and answer (port 5353, policy \"dns\")"
ip netns exec $C python3 -c '
import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"question", ("198.19.1.2", 5353)); print("   answer:", s.recvfrom(100)[0].decode())'
echo "-- UDP to a closed port: the server's ICMP port unreachable comes back as RELATED"
ip netns exec $C python3 -c '
import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.connect(("198.19.1.2", 9999)); s.send(b"x")
try: s.recv(10)
except ConnectionRefusedError: print("   refused, as expected")
except OSError as e: print("   ", e)'
echo "-- ping through the router, IPv4 and IPv6, and a TTL that runs out at the router"
ip netns exec $C ping -q -c 2 -i 0.2 198.19.1.2 | sed -n 's/^/   /;4p'
ip netns exec $C ping -q -c 2 -i 0.2 2001:2:0:2::2 | sed -n 's/^/   /;4p'
ip netns exec $C ping -c 1 -t 1 -W 1 198.19.1.2 | sed -n 's/^/   /;2p' || true
echo "-- the server tries to open a connection to the client"
ip netns exec $S python3 -c '
import socket
try: socket.create_connection(("198.18.1.2", 22), timeout=1.5); print("   connected (unexpected)")
except OSError: print("   timed out: dropped by the rule for new connections from r-srv")'

echo
echo "== ferroctl conntrack (the table, as conntrack -L prints it)"
"$BIN/ferroctl" conntrack --socket "$WORK/ctl.sock" | sed 's/^/   /'
echo
echo "== ferroctl exec -- nfct timeout list (the unmodified nfct, through the preload shim)"
"$BIN/ferroctl" exec --socket "$WORK/ctl.sock" -- nfct timeout list | sed 's/^/   /'
echo
echo "== ferroctl stats"
"$BIN/ferroctl" stats --socket "$WORK/ctl.sock" | sed 's/^/   /'
echo
cat <<'EOF'
What happened: ferrowall owned the router's interfaces through AF_PACKET, answered ARP and
neighbour solicitations for its addresses, and routed every packet through its conntrack engine
and the rule set. The downloads are TCP connections in TIME_WAIT with the "web" policy's 5 s
(instead of the default 120 s); the UDP exchange carries the "dns" policy's timeout; pings are
icmp entries; the port unreachable passed as related to its UDP flow and the expired TTL was
answered by ferrowall itself. The server's connection attempt was dropped as new and never
entered the table (only accepted packets confirm a connection). nfct talked to ferrowall's
cttimeout API exactly as it talks to the kernel's.
EOF
