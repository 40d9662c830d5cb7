#!/bin/bash
# The vm backend side by side with a bare QEMU microvm boot of the same
# kernel, in one run (issue: the micro-VM backend):
#   raw_boot   qemu -M microvm ... with an initramfs whose /init powers off at once
#   cubby_vm   cubby run --isolation vm --rm busybox true
#   vm_exec    cubby exec BOX true on a running vm box
# plus the idle host memory (RSS of shim + QEMU) of that box.
# Without KVM (this machine) both boot under TCG (CUBBY_VM_ACCEL=tcg); the
# ratio cubby_vm/raw_boot (target <= 1.3) is what cubby adds to a boot.
#   bench/vm_vs_qemu.sh BUILD_DIR        (BENCH_RUNS, default 8)
set -euo pipefail
BUILD_DIR=$(cd "${1:?usage: vm_vs_qemu.sh BUILD_DIR}" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_RUNS:-8}
ASSETS=$BUILD_DIR/assets
CUBBY=$BUILD_DIR/bin/cubby
die() { echo "vm_vs_qemu: $*" >&2; exit 1; }
[ -r "$ASSETS/vmlinuz" ] && [ -r "$ASSETS/initramfs.cpio.gz" ] || die "vm assets missing in $ASSETS (build first)"
for t in hyperfine qemu-system-x86_64 cpio gzip python3; do command -v $t >/dev/null || die "$t not installed"; done
ACCEL=tcg; [ -w /dev/kvm ] && ACCEL=kvm
export CUBBY_VM_ACCEL=tcg
TMP=$(mktemp -d); BOX=""
cleanup() { [ -n "$BOX" ] && "$CUBBY" --home "$TMP/home" rm -f "$BOX" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

# An initramfs whose init powers the VM off at once (busybox-static).
mkdir -p "$TMP/raw/bin"
cp /bin/busybox "$TMP/raw/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$TMP/raw/init"; chmod +x "$TMP/raw/init"
(cd "$TMP/raw" && find . | cpio -o -H newc --quiet | gzip -1 > "$TMP/raw.cpio.gz")
KHZ=$(awk -F: '/cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
RAW="qemu-system-x86_64 -M microvm -accel $ACCEL -m 256 -smp 1 -nodefaults -no-user-config -no-reboot -nographic \
 -kernel $ASSETS/vmlinuz -initrd $TMP/raw.cpio.gz -append 'console=ttyS0 quiet panic=-1 tsc_early_khz=$KHZ' -serial null"

"$REPO/scripts/mkimage.sh" "$TMP/rootfs.tar"
"$CUBBY" --home "$TMP/home" import "$TMP/rootfs.tar" busybox >/dev/null
"$CUBBY" --home "$TMP/home" run --isolation vm --network none --rm busybox true || die "cubby vm run failed"
BOX=$("$CUBBY" --home "$TMP/home" run -d --isolation vm --network none busybox sleep 1000000) || die "cubby vm run -d failed"

echo "loadavg before: $(cat /proc/loadavg)"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$TMP/boot.json" \
  -n raw_boot "$RAW" \
  -n cubby_vm "$CUBBY --home $TMP/home run --isolation vm --network none --rm busybox true" >&2
hyperfine -N --warmup 3 --runs $((RUNS * 4)) --export-json "$TMP/exec.json" \
  -n vm_exec "$CUBBY --home $TMP/home exec $BOX true" >&2
SHIM=$("$CUBBY" --home "$TMP/home" inspect "$BOX" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
RSS=0
for p in $SHIM $(cat /proc/$SHIM/task/*/children); do
  RSS=$((RSS + $(awk '/VmRSS/ {print $2}' /proc/$p/status)))
done
echo "loadavg after: $(cat /proc/loadavg)"
python3 - "$TMP/boot.json" "$TMP/exec.json" "$RSS" "$ACCEL" "$BUILD_DIR/bench-vm.json" <<'PY'
import json, sys
boot, ex, rss_kb, accel, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4], sys.argv[5]
med = {r["command"]: r["median"] * 1000 for r in boot["results"] + ex["results"]}
print(f"\naccel: {accel}")
for k in ("raw_boot", "cubby_vm", "vm_exec"):
    print(f"{k:10s} median {med[k]:9.1f} ms")
ratio = med["cubby_vm"] / med["raw_boot"]
print(f"cubby_vm/raw_boot  {ratio:.2f}  (target <= 1.3: {'met' if ratio <= 1.3 else 'MISSED'})")
print(f"idle vm box host RSS (shim + QEMU): {rss_kb / 1024:.1f} MiB (target <= 40 MiB beyond guest RAM on KVM)")
json.dump({"accel": accel, "medians_ms": med, "ratio_vm_over_raw": ratio, "idle_rss_mib": rss_kb / 1024}, open(out, "w"), indent=2)
PY
