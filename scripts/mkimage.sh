#!/bin/sh
# Builds a small busybox rootfs tarball offline (from Debian's busybox-static)
# for `cubby import`. Usage: scripts/mkimage.sh OUT.tar
set -eu
out=${1:?usage: mkimage.sh OUT.tar}
bb=/bin/busybox
[ -x "$bb" ] || { echo "mkimage: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
file -L "$bb" 2>/dev/null | grep -q 'statically linked' || true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p $r/bin $r/sbin $r/usr/bin $r/usr/sbin $r/etc $r/tmp $r/proc $r/sys $r/dev $r/root $r/home $r/var/tmp
cp "$bb" $r/bin/busybox
# The applet list contains "busybox" itself: never overwrite the binary.
for a in $($bb --list); do [ "$a" = busybox ] || ln -sf busybox $r/bin/$a; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > $r/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n' > $r/etc/group
mkdir -p $r/home/user && chown 1000:1000 $r/home/user
chmod 1777 $r/tmp $r/var/tmp
tar -C $r --numeric-owner -cf "$out" .
