#!/bin/bash
# vm box copies from memory (issue 14), side by side in one run on one home
# and image, under TCG on this machine:
#   template   cubby run -d --isolation vm busybox sleep 1d   (one start from the template)
#   fork 1     cubby fork BOX 1                              (snapshot + one restore)
#   fork 10    cubby fork BOX 10                             (snapshot + ten restores side by side)
#   snapshot   cubby snapshot BOX   then   run --from SNAP -d (each alone)
# each until every new box is running (the command returns then), and the
# idle host memory (QEMU RSS, summed) of the 10 forks against one box.
# Targets (issue 14): fork 10 ready <= 2x one template start; 10 boxes of
# one template <= 3x one box (needs shared guest memory: not built, so this
# prints the ratio as it is).
#   bench/vm_fork.sh BUILD_DIR        (BENCH_RUNS, default 5)
set -euo pipefail
BUILD_DIR=$(cd "${1:?usage: vm_fork.sh BUILD_DIR}" && pwd)
RUNS=${BENCH_RUNS:-5}
CUBBY=$BUILD_DIR/bin/cubby
die() { echo "vm_fork: $*" >&2; exit 1; }
[ -x "$CUBBY" ] && [ -r "$BUILD_DIR/assets/initramfs.cpio.gz" ] || die "build first (cubby and the vm assets)"
for t in qemu-system-x86_64 python3; do command -v $t >/dev/null || die "$t not installed"; done
[ -w /dev/kvm ] && [ -d /sys/module/kvm_intel -o -d /sys/module/kvm_amd ] || export CUBBY_VM_ACCEL=tcg
TMP=$(mktemp -d); H=$TMP/home
C() { "$CUBBY" --home "$H" "$@"; }
cleanup() { C ls -aq 2>/dev/null | xargs -r "$CUBBY" --home "$H" rm -f >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
IMG=$BUILD_DIR/test-rootfs.tar; [ -r "$IMG" ] || IMG=$BUILD_DIR/busybox-rootfs.tar
C import "$IMG" busybox >/dev/null
C rm -f "$(C run -d --isolation vm --network none busybox true)" >/dev/null  # builds the template
ms() { python3 -c 'import time; print(time.monotonic_ns()//1000000)'; }
# "name ms" lines, one per timed run
timed() { local name=$1; shift; local t0; t0=$(ms); "$@" >"$TMP/out"; echo "$name $(( $(ms) - t0 ))" >>"$TMP/times"; }
orig=$(C run -d --isolation vm --network none --name orig busybox sh -c 'i=0; while :; do i=$((i+1)); sleep 1; done')
for r in $(seq "$RUNS"); do
  timed template C run -d --isolation vm --network none busybox sleep 1d; C rm -f "$(cat "$TMP/out")" >/dev/null
  timed fork1 C fork orig 1; C rm -f $(cat "$TMP/out") >/dev/null
  timed snapshot C snapshot orig "s$r"
  timed run_from C run --from "s$r" -d; C rm -f "$(cat "$TMP/out")" >/dev/null; C rm-snapshot "s$r" >/dev/null
  timed fork10 C fork orig 10; [ "$r" = "$RUNS" ] || C rm -f $(cat "$TMP/out") >/dev/null
done
# Idle memory: the last 10 forks against the original.
qemu_rss() {  # summed host RSS (KiB) of the QEMUs of the given boxes
  local total=0 id pid
  for id in "$@"; do
    id=$(C inspect "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    pid=$(pgrep -f "qemu-system.*$id" | head -1)
    total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") ))
  done
  echo $total
}
for b in $(cat "$TMP/out") orig; do C exec "$b" true; done
python3 - "$TMP/times" "$(qemu_rss orig)" "$(qemu_rss $(cat "$TMP/out"))" "$(du -b "$H"/snapshots 2>/dev/null | tail -1 | cut -f1)" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    k, v = line.split(); t.setdefault(k, []).append(int(v))
m = {k: statistics.median(v) for k, v in t.items()}
for k in ("template", "fork1", "fork10", "snapshot", "run_from"):
    print(f"{k:9s} median {m[k]:7.0f} ms  (runs {', '.join(map(str, t[k]))})")
print(f"fork 10 ready / one template start: {m['fork10']/m['template']:.2f}x (target <= 2x)")
one, ten = int(sys.argv[2]), int(sys.argv[3])
print(f"idle QEMU RSS: one box {one/1024:.1f} MiB, 10 forks {ten/1024:.1f} MiB = {ten/one:.2f}x one (target <= 3x: needs shared pages)")
PY
