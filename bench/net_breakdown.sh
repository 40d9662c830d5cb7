#!/bin/bash
# net_breakdown.sh BUILD_DIR [BASELINE_BUILD_DIR]
#
# Where `run --rm IMG true` spends its extra time with --network default
# (slirp4netns), from kernel tracepoints (perf), not wall clocks: on a busy
# 2-core machine the wall time of a whole run swings by +-30 ms, while the
# phases below are short spans of a few processes and stay readable.
#
# Per run it prints, in ms:
#   tap      the shim waiting for its tap maker child (waitpid)
#   up       slirp4netns exec -> its sandbox unshare (it has written ready by then)
#   down     the shim's SIGTERM to slirp4netns -> its waitid returning (the helper's exit)
#   agent    the box's true exiting -> the shim's waitid on the agent (shared with --network none)
# and the medians over BENCH_RUNS runs (default 10). Needs root and perf.
set -eu
set -o pipefail

die() { echo "net_breakdown: error: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 BUILD_DIR [BASELINE_BUILD_DIR]"
[ "$(id -u)" = 0 ] || die "must run as root (perf tracepoints)"
command -v perf >/dev/null || die "perf not found (apt-get install linux-perf)"
RUNS=${BENCH_RUNS:-10}
case $RUNS in ''|*[!0-9]*) die "BENCH_RUNS must be a positive integer";; esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/cubby-netbd.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
"$REPO/scripts/mkimage.sh" "$TMP/busybox.tar" >/dev/null || die "scripts/mkimage.sh failed"

EVENTS=(-e sched:sched_process_exec -e sched:sched_process_exit -e syscalls:sys_enter_pidfd_send_signal -e syscalls:sys_enter_waitid -e syscalls:sys_exit_waitid
        -e syscalls:sys_enter_wait4 -e syscalls:sys_exit_wait4 -e syscalls:sys_enter_unshare)

measure() {  # measure LABEL BUILD_DIR
  local label=$1 dir=$2 home=$TMP/home-$1
  mkdir -p "$TMP/bin-$label"
  cp -p "$dir/bin/cubby" "$dir/bin/cubby-shim" "$dir/bin/cubby-agent" "$TMP/bin-$label/"
  local cubby=$TMP/bin-$label/cubby
  "$cubby" --home "$home" import "$TMP/busybox.tar" busybox >/dev/null
  "$cubby" --home "$home" run --rm busybox true >/dev/null 2>&1 || die "$label: cubby run failed"
  for i in $(seq "$RUNS"); do
    perf record -q -o "$TMP/p.data" -a "${EVENTS[@]}" -- "$cubby" --home "$home" run --rm busybox true >/dev/null 2>&1
    perf script -i "$TMP/p.data" 2>/dev/null | awk -v label="$label" '
      { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = substr($i, 1, length($i) - 1) * 1000; ev = $(i + 1); break } }
      $1 == "cubby-shim" && ev ~ /sys_enter_wait4/ && !w4 { w4 = t }
      $1 == "cubby-shim" && ev ~ /sys_exit_wait4/ && w4 && !tap { tap = t - w4 }
      $1 == "slirp4netns" && ev ~ /sched_process_exec/ { sx = t }
      $1 == "slirp4netns" && ev ~ /sys_enter_unshare/ && sx && !up { up = t - sx }
      $1 == "true" && ev ~ /sched_process_exit/ { te = t }
      $1 == "cubby-shim" && ev ~ /sys_exit_waitid/ && te && !agent { agent = t - te }
      $1 == "cubby-shim" && ev ~ /pidfd_send_signal/ && agent { sig = t }
      $1 == "cubby-shim" && ev ~ /sys_exit_waitid/ && sig && !down { down = t - sig }
      END { printf "%s tap=%.2f up=%.2f down=%.2f agent=%.2f\n", label, tap, up, down, agent }'
  done
}

{
  measure new "$1"
  [ $# -eq 2 ] && measure base "$2"
} | tee "$TMP/all.txt"
echo "medians (ms, $RUNS runs; loadavg $(cut -d' ' -f1-3 /proc/loadavg)):"
for label in new base; do
  grep -q "^$label " "$TMP/all.txt" || continue
  for k in tap up down agent; do
    grep "^$label " "$TMP/all.txt" | sed -n "s/.* $k=\([0-9.]*\).*/\1/p" | sort -n |
      awk -v k="$k" '{ v[NR] = $1 } END { printf "  %-4s %-5s %6.2f\n", k, "", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }' |
      sed "s/^/$label/"
  done
done
