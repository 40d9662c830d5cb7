#!/bin/sh
# Builds an OCI archive whose layers exercise overlay semantics: a deleted
# file (.wh.NAME), an opaque directory (.wh..wh..opq), a directory replaced
# by a file, a file replaced by a directory, and a hardlink pair.
# Usage: build-whiteout-image.sh ROOTFS.tar OUT.oci.tar
set -eu
rootfs=$1; out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
L=$work/layout
umoci init --layout "$L"
umoci new --image "$L:w"
umoci raw add-layer --image "$L:w" "$rootfs"
python3 - "$work" <<'PY'
import io, sys, tarfile
work = sys.argv[1]
def layer(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            i = tarfile.TarInfo(name)
            i.mtime = 1700000000
            if kind == "dir":
                i.type, i.mode = tarfile.DIRTYPE, 0o755
                t.addfile(i)
            elif kind == "link":
                i.type, i.linkname = tarfile.LNKTYPE, data
                t.addfile(i)
            else:
                b = data.encode()
                i.size, i.mode = len(b), 0o644
                t.addfile(i, io.BytesIO(b))
layer(f"{work}/a.tar", [
    ("data", "dir", None), ("data/keep", "dir", None), ("data/keep/a.txt", "file", "a\n"),
    ("data/gone.txt", "file", "gone\n"), ("data/opq", "dir", None), ("data/opq/old.txt", "file", "old\n"),
    ("data/dir2file", "dir", None), ("data/dir2file/x.txt", "file", "x\n"), ("data/file2dir", "file", "f\n"),
])
layer(f"{work}/b.tar", [
    ("data", "dir", None), ("data/.wh.gone.txt", "file", ""), ("data/opq", "dir", None),
    ("data/opq/.wh..wh..opq", "file", ""), ("data/opq/new.txt", "file", "new\n"),
    ("data/dir2file", "file", "now a file\n"), ("data/file2dir", "dir", None), ("data/file2dir/y.txt", "file", "y\n"),
    ("data/h1", "file", "linked\n"), ("data/h2", "link", "data/h1"),
])
PY
umoci raw add-layer --image "$L:w" "$work/a.tar"
umoci raw add-layer --image "$L:w" "$work/b.tar"
skopeo copy -q "oci:$L:w" "oci-archive:$out:example.com/whiteouts:v1"
