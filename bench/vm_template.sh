#!/bin/bash
# vm boxes from a template (issue 14) against cold boots, side by side in one
# run on the same home and image:
#   cold      CUBBY_VM_TEMPLATES=0 cubby run --isolation vm --rm busybox true
#   template  cubby run --isolation vm --rm busybox true   (the template built first)
# plus the template's stream size and the idle host memory (RSS of QEMU) of a
# cold box and of a restored one. Target (issue 14): template <= 0.2x cold.
# Without KVM (this machine) both run under TCG.
#   bench/vm_template.sh BUILD_DIR        (BENCH_RUNS, default 8)
set -euo pipefail
BUILD_DIR=$(cd "${1:?usage: vm_template.sh BUILD_DIR}" && pwd)
RUNS=${BENCH_RUNS:-8}
CUBBY=$BUILD_DIR/bin/cubby
die() { echo "vm_template: $*" >&2; exit 1; }
[ -x "$CUBBY" ] && [ -r "$BUILD_DIR/assets/initramfs.cpio.gz" ] || die "build first (cubby and the vm assets)"
for t in hyperfine qemu-system-x86_64 python3; do command -v $t >/dev/null || die "$t not installed"; done
[ -w /dev/kvm ] && [ -d /sys/module/kvm_intel -o -d /sys/module/kvm_amd ] || export CUBBY_VM_ACCEL=tcg
TMP=$(mktemp -d); H=$TMP/home; BOXES=()
cleanup() { for b in "${BOXES[@]}"; do "$CUBBY" --home "$H" rm -f "$b" >/dev/null 2>&1 || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
"$CUBBY" --home "$H" import "$BUILD_DIR/test-rootfs.tar" busybox >/dev/null
RUN="$CUBBY --home $H run --isolation vm --network none --rm busybox true"
$RUN   # builds the template
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$TMP/t.json" \
  -n cold "env CUBBY_VM_TEMPLATES=0 $RUN" -n template "$RUN" >&2
rss() {  # host RSS (KiB) of the QEMU of box $1, once it is idle
  local id; id=$("$CUBBY" --home "$H" inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  local pid; pid=$(pgrep -f "qemu-system.*$id" | head -1)
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
}
c=$(CUBBY_VM_TEMPLATES=0 "$CUBBY" --home "$H" run -d --isolation vm --network none busybox sleep 1d); BOXES+=("$c")
t=$("$CUBBY" --home "$H" run -d --isolation vm --network none busybox sleep 1d); BOXES+=("$t")
"$CUBBY" --home "$H" exec "$c" true; "$CUBBY" --home "$H" exec "$t" true
python3 - "$TMP/t.json" "$(du -b "$H"/vm/templates/*/state | cut -f1)" "$(rss "$c")" "$(rss "$t")" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
print(f"run --rm true (median)  cold {r['cold']*1000:8.1f} ms   template {r['template']*1000:8.1f} ms   ratio {r['template']/r['cold']:.2f}x (target <= 0.2x)")
print(f"template stream {int(sys.argv[2])/1e6:.1f} MB   idle QEMU RSS: cold box {int(sys.argv[3])/1024:.1f} MiB, restored box {int(sys.argv[4])/1024:.1f} MiB")
PY
