#!/bin/bash
# net_vs_host.sh BUILD_DIR
#
# Box -> peer connect latency and TCP throughput for each network mode
# (default: slirp4netns; bridge: veth + bridge + NAT, root), next to the
# host's own. The peer is a network namespace of this script's, joined to
# the host by a veth pair (203.0.113.0/30, TEST-NET-3: routed nowhere), so
# every byte stays on this machine; a box reaches it as any remote host.
#
#   connect   one TCP connect + close, by busybox nc (a process per
#             connect, the same on the host): (T(N) - T(0)) / N, N=BENCH_CONNECTS (200)
#   MiB/s     BENCH_MIB (256) MiB of zeros through one connection, timed by the
#             peer's sink from accept to EOF
# Needs root, python3, busybox-static, ip.
set -eu
set -o pipefail

die() { echo "net_vs_host: error: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, --network bridge)"
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${BENCH_CONNECTS:-200}
MIB=${BENCH_MIB:-256}
BUSYBOX=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3

TMP=$(mktemp -d /tmp/cubby-netbench.XXXXXX)
NS=cbnb$$
HOST_IF=cbnbh$$
PEER_IF=cbnbp$$
HOST_IP=203.0.113.1
PEER_IP=203.0.113.2
CUBBY=$TMP/bin/cubby
CHOME=$TMP/home
SERVER=""
cleanup() {
  set +e
  if [ -x "$CUBBY" ]; then
    for b in $("$CUBBY" --home "$CHOME" ls -a -q 2>/dev/null); do "$CUBBY" --home "$CHOME" rm -f "$b" >/dev/null 2>&1; done
  fi
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  ip link del "$HOST_IF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$TMP/bin"
cp -p "$BUILD_DIR/bin/cubby" "$BUILD_DIR/bin/cubby-shim" "$BUILD_DIR/bin/cubby-agent" "$TMP/bin/"
"$REPO/scripts/mkimage.sh" "$TMP/busybox.tar" >/dev/null || die "scripts/mkimage.sh failed"
"$CUBBY" --home "$CHOME" import "$TMP/busybox.tar" busybox >/dev/null

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$PEER_IF" netns "$NS"
ip addr add "$HOST_IP/30" dev "$HOST_IF" && ip link set "$HOST_IF" up
ip -n "$NS" addr add "$PEER_IP/30" dev "$PEER_IF" && ip -n "$NS" link set "$PEER_IF" up && ip -n "$NS" link set lo up

# The peer: port A accepts and closes; port B counts bytes to EOF and
# appends "BYTES SECONDS" to sink.log. It prints "A B" once listening.
cat > "$TMP/peer.py" <<'EOF'
import socket, sys, threading, time
ip, log = sys.argv[1], sys.argv[2]
def listener():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 0)); s.listen(512); return s
lat, sink = listener(), listener()
def lat_loop():
    while True:
        c, _ = lat.accept(); c.close()
def sink_loop():
    while True:
        c, _ = sink.accept(); t0 = time.monotonic(); n = 0
        while True:
            b = c.recv(1 << 20)
            if not b: break
            n += len(b)
        dt = time.monotonic() - t0
        with open(log, "a") as f: f.write(f"{n} {dt}\n")
        c.close()  # after the log line: the sender's nc returns once it is written
threading.Thread(target=lat_loop, daemon=True).start()
threading.Thread(target=sink_loop, daemon=True).start()
print(lat.getsockname()[1], sink.getsockname()[1], flush=True)
threading.Event().wait()
EOF
mkfifo "$TMP/ports"
ip netns exec "$NS" "$PY" "$TMP/peer.py" "$PEER_IP" "$TMP/sink.log" > "$TMP/ports" &
SERVER=$!
read -r LAT_PORT SINK_PORT < "$TMP/ports"

CONNECT_LOOP='i=0; while [ $i -lt $1 ]; do nc '$PEER_IP' '$LAT_PORT' </dev/null || exit 1; i=$((i+1)); done'
SEND="dd if=/dev/zero bs=1048576 count=$MIB 2>/dev/null | nc $PEER_IP $SINK_PORT"

now_ns() { date +%s%N; }
# measure LABEL RUNNER... : RUNNER is a command prefix that runs "sh -c SCRIPT ARG0 ARG1"
measure() {
  local label=$1; shift
  local t0 t1 t2 t3
  t0=$(now_ns); "$@" sh -c "$CONNECT_LOOP" sh 0 || die "$label: connect loop failed"; t1=$(now_ns)
  t2=$(now_ns); "$@" sh -c "$CONNECT_LOOP" sh "$N" || die "$label: connect loop failed"; t3=$(now_ns)
  local per_us=$(( ((t3 - t2) - (t1 - t0)) / N / 1000 ))
  : > "$TMP/sink.log"
  "$@" sh -c "$SEND" || die "$label: send failed"
  local line
  line=$(tail -n1 "$TMP/sink.log")
  local mibs
  mibs=$(echo "$line" | awk '{ if ($2 > 0) printf "%.0f", $1 / 1048576 / $2; else print "?" }')
  printf '%-26s %10s %10s\n' "$label" "${per_us} us" "$mibs"
}

printf '%-26s %10s %10s\n' "path (to a peer netns)" "connect" "MiB/s"
measure "host (busybox, no box)" "$BUSYBOX"
for mode in default bridge; do
  if [ "$mode" = bridge ] && ! command -v nft >/dev/null; then echo "bridge: skipped (no nft)"; continue; fi
  BOX=$("$CUBBY" --home "$CHOME" run -d --isolation sandbox --network "$mode" busybox sleep 1000000) \
    || die "run -d --network $mode failed"
  measure "box --network $mode" "$CUBBY" --home "$CHOME" exec "$BOX"
  "$CUBBY" --home "$CHOME" rm -f "$BOX" >/dev/null
done
echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg); connects=$N, $MIB MiB"
