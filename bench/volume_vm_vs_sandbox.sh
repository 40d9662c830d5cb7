#!/bin/bash
# volume_vm_vs_sandbox.sh BUILD_DIR
#
# A -v volume's throughput on the two backends, side by side in one run: the
# sandbox's bind mount (the host's own filesystem) and the vm's virtio-fs
# (virtiofsd, cache=auto). One detached box per backend, each with its own
# directory of one host tmpdir on /vol; each figure is the median of
# BENCH_RUNS (3) runs, timed on the host around `cubby exec` (its ~10-30 ms
# round trip is included and is noise at these sizes).
#
#   write MiB/s   dd of BENCH_MIB (256) MiB of zeros into /vol, bs=1M, conv=fsync
#   read MiB/s    dd of a BENCH_MIB MiB file the host wrote (host page cache
#                 warm; never read in the box before, so the guest's page
#                 cache does not hold it)
#   untar s       tar -xf of a tree of BENCH_FILES (3000) small files (1-4 KiB,
#                 100 directories) from /vol into /vol
# Without KVM (this machine) the vm runs under TCG (CUBBY_VM_ACCEL=tcg), so
# its figures are emulation's as much as virtio-fs's. Needs root.
set -eu
set -o pipefail

die() { echo "volume_vm_vs_sandbox: error: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
[ "$(id -u)" = 0 ] || die "must run as root (virtiofsd)"
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
MIB=${BENCH_MIB:-256}
FILES=${BENCH_FILES:-3000}
export CUBBY_VM_ACCEL=${CUBBY_VM_ACCEL:-tcg}

TMP=$(mktemp -d /tmp/cubby-volbench.XXXXXX)
CUBBY=$TMP/bin/cubby
CHOME=$TMP/home
cleanup() {
  set +e
  if [ -x "$CUBBY" ]; then
    for b in $("$CUBBY" --home "$CHOME" ls -a -q 2>/dev/null); do "$CUBBY" --home "$CHOME" rm -f "$b" >/dev/null 2>&1; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binaries and guest assets are copied, so a rebuild during the run does not matter.
mkdir -p "$TMP/bin" "$TMP/assets"
cp -p "$BUILD_DIR/bin/cubby" "$BUILD_DIR/bin/cubby-shim" "$BUILD_DIR/bin/cubby-agent" "$TMP/bin/"
cp -p "$BUILD_DIR/assets/vmlinuz" "$BUILD_DIR/assets/initramfs.cpio.gz" "$TMP/assets/" ||
  die "vm assets missing in $BUILD_DIR/assets (build first)"
"$REPO/scripts/mkimage.sh" "$TMP/busybox.tar" >/dev/null || die "scripts/mkimage.sh failed"
"$CUBBY" --home "$CHOME" import "$TMP/busybox.tar" busybox >/dev/null

# The small-file tree, as a tar in each volume.
python3 - "$TMP/tree.tar" "$FILES" <<'PY'
import io, random, sys, tarfile
out, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
with tarfile.open(out, "w") as t:
    for i in range(n):
        data = rnd.randbytes(rnd.randint(1024, 4096))
        ti = tarfile.TarInfo(f"tree/d{i % 100:02d}/f{i:05d}")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
PY

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A BOX WRITE READ UNTAR
for iso in sandbox vm; do
  mkdir -p "$TMP/vol-$iso"
  chmod 0777 "$TMP/vol-$iso"  # the sandbox box's root is a stranger on the host
  cp "$TMP/tree.tar" "$TMP/vol-$iso/tree.tar"
  chmod 0644 "$TMP/vol-$iso/tree.tar"
  BOX[$iso]=$("$CUBBY" --home "$CHOME" run -d --isolation "$iso" --network none -v "$TMP/vol-$iso:/vol" \
    busybox sleep 1000000) || die "run -d --isolation $iso -v failed"
done

for iso in sandbox vm; do
  b=${BOX[$iso]}
  x() { "$CUBBY" --home "$CHOME" exec "$b" sh -c "$1"; }
  w=() r=() u=()
  for i in $(seq "$RUNS"); do
    t0=$(now_ns)
    x "dd if=/dev/zero of=/vol/w$i bs=1048576 count=$MIB conv=fsync 2>/dev/null" || die "$iso: write failed"
    t1=$(now_ns)
    w+=("$(( MIB * 1000000000 / (t1 - t0) ))")
    rm -f "$TMP/vol-$iso/w$i"
    dd if=/dev/urandom of="$TMP/vol-$iso/r$i" bs=1048576 count="$MIB" 2>/dev/null
    chmod 0644 "$TMP/vol-$iso/r$i"
    cat "$TMP/vol-$iso/r$i" > /dev/null
    t0=$(now_ns)
    x "dd if=/vol/r$i of=/dev/null bs=1048576 2>/dev/null" || die "$iso: read failed"
    t1=$(now_ns)
    r+=("$(( MIB * 1000000000 / (t1 - t0) ))")
    rm -f "$TMP/vol-$iso/r$i"
    t0=$(now_ns)
    x "mkdir /vol/t$i && tar -xf /vol/tree.tar -C /vol/t$i" || die "$iso: untar failed"
    t1=$(now_ns)
    u+=("$(( (t1 - t0) / 1000000 ))")
    [ "$(find "$TMP/vol-$iso/t$i" -type f | wc -l)" = "$FILES" ] || die "$iso: untar left the wrong number of files"
    rm -rf "$TMP/vol-$iso/t$i"
  done
  WRITE[$iso]=$(printf '%s\n' "${w[@]}" | median)
  READ[$iso]=$(printf '%s\n' "${r[@]}" | median)
  UNTAR[$iso]=$(printf '%s\n' "${u[@]}" | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
printf '%-22s %12s %12s %14s\n' "" "sandbox bind" "vm virtio-fs" "sandbox/vm"
printf '%-22s %12s %12s %14s\n' "write MiB/s" "${WRITE[sandbox]}" "${WRITE[vm]}" "$(ratio "${WRITE[sandbox]}" "${WRITE[vm]}")"
printf '%-22s %12s %12s %14s\n' "read MiB/s" "${READ[sandbox]}" "${READ[vm]}" "$(ratio "${READ[sandbox]}" "${READ[vm]}")"
printf '%-22s %12s %12s %14s\n' "untar $FILES files ms" "${UNTAR[sandbox]}" "${UNTAR[vm]}" "$(ratio "${UNTAR[vm]}" "${UNTAR[sandbox]}") (vm/sandbox)"
echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg); runs=$RUNS, $MIB MiB, $FILES files, accel $CUBBY_VM_ACCEL"
