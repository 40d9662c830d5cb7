#!/bin/sh
# Fetches the vm backend's guest kernel: Debian's linux-image-cloud-amd64,
# downloaded with `apt-get download` and unpacked (never installed) into
# OUT_DIR: vmlinuz (LZ4 bzImage), the virtio/overlay modules the agent loads,
# in load order (modules.order), and kernel.txt (version, sha256 of the .deb
# and of vmlinuz). Quick when OUT_DIR is already complete.
#   scripts/fetch-guest-kernel.sh OUT_DIR
set -eu
OUT=${1:?usage: fetch-guest-kernel.sh OUT_DIR}
# The modules, dependencies first (resolved once from modules.dep; see
# ../shared/notes/qemu-on-this-machine.md).
MODS="virtio_ring virtio virtio_mmio virtio_console virtio_blk overlay failover net_failover virtio_net virtio_balloon"
# Loaded by the guest only when the box has -v volumes (modules.fs): virtio-fs.
FS_MODS="fuse virtiofs"
[ -f "$OUT/kernel.txt" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/modules.order" ] && [ -f "$OUT/modules.fs" ] &&
  [ "$(cat "$OUT/modules.order")" = "$(printf '%s.ko\n' $MODS)" ] &&
  [ "$(cat "$OUT/modules.fs")" = "$(printf '%s.ko\n' $FS_MODS)" ] && { touch "$OUT/kernel.txt"; exit 0; }
KVER=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: linux-image-\(.*-cloud-amd64\)$/\1/p' | head -1)
# Without the kernel the build still succeeds: only --isolation vm (and its
# tests, which then skip) needs it.
[ -n "$KVER" ] || { echo "warning: cannot resolve linux-image-cloud-amd64 (apt-get update?): no vm guest kernel" >&2; exit 0; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && apt-get download -q "linux-image-$KVER" >/dev/null 2>&1) ||
  { echo "warning: apt-get download linux-image-$KVER failed: no vm guest kernel" >&2; exit 0; }
DEB=$(ls "$TMP"/linux-image-*.deb)
dpkg-deb -x "$DEB" "$TMP/k"
mkdir -p "$OUT/modules"
cp "$TMP/k/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
: > "$OUT/modules.order.tmp"
: > "$OUT/modules.fs.tmp"
for m in $MODS $FS_MODS; do
  f=$(find "$TMP/k/lib/modules/$KVER" -name "$m.ko" | head -1)
  [ -n "$f" ] || { echo "module $m not found in $KVER" >&2; exit 1; }
  cp "$f" "$OUT/modules/$m.ko"
  case " $FS_MODS " in *" $m "*) echo "$m.ko" >> "$OUT/modules.fs.tmp" ;; *) echo "$m.ko" >> "$OUT/modules.order.tmp" ;; esac
done
{
  echo "package linux-image-$KVER"
  echo "deb $(basename "$DEB")"
  echo "deb_sha256 $(sha256sum "$DEB" | cut -d' ' -f1)"
  echo "vmlinuz_sha256 $(sha256sum "$OUT/vmlinuz.tmp" | cut -d' ' -f1)"
  echo "release $KVER"
} > "$OUT/kernel.txt.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/modules.order.tmp" "$OUT/modules.order"
mv "$OUT/modules.fs.tmp" "$OUT/modules.fs"
mv "$OUT/kernel.txt.tmp" "$OUT/kernel.txt"
