#!/bin/sh
# Builds the vm backend's initramfs: the static cubby-agent as /init plus the
# guest kernel modules listed in ASSETS/modules.order (as /lib/modules/*.ko
# and /modules.order; the virtio-fs ones in /modules.fs). cpio newc + gzip.
#   scripts/build-initramfs.sh AGENT ASSETS OUT.cpio.gz
set -eu
AGENT=$1 ASSETS=$2 OUT=$3
[ -f "$ASSETS/modules.order" ] || { echo "warning: no guest kernel in $ASSETS: vm initramfs not built" >&2; exit 0; }
command -v cpio >/dev/null || { echo "warning: cpio is not installed (scripts/install-deps.sh): vm initramfs not built" >&2; exit 0; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/lib/modules" "$TMP/dev" "$TMP/proc" "$TMP/sys" "$TMP/newroot" "$TMP/lower" "$TMP/run"
cp "$AGENT" "$TMP/init"
chmod 755 "$TMP/init"
cp "$ASSETS/modules.order" "$TMP/modules.order"
while read -r m; do cp "$ASSETS/modules/$m" "$TMP/lib/modules/$m"; done < "$ASSETS/modules.order"
# virtio-fs (fuse, virtiofs): loaded by the agent only for a box with volumes.
if [ -f "$ASSETS/modules.fs" ]; then
  cp "$ASSETS/modules.fs" "$TMP/modules.fs"
  while read -r m; do cp "$ASSETS/modules/$m" "$TMP/lib/modules/$m"; done < "$ASSETS/modules.fs"
fi
(cd "$TMP" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1 -n) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
