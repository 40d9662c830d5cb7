#!/bin/sh
# Builds the registry test images offline (umoci + skopeo) from the busybox
# rootfs tarball. Usage: build-images.sh ROOTFS.tar OUTDIR
# OUTDIR/layout (OCI layout) gets tags: v1 (2 gzip layers, a whiteout, config
# with Cmd/Env/WorkingDir/ExposedPorts), arm (same layers, arm64 config),
# multi (OCI index: amd64 + arm64), other (v1 + one more layer).
set -eu
rootfs=$1; out=$2
L=$out/layout
umoci init --layout $L
umoci new --image $L:v1
umoci unpack --image $L:v1 $out/b1 >/dev/null
tar -C $out/b1/rootfs -xf $rootfs
umoci repack --image $L:v1 $out/b1
rm -rf $out/b1
umoci unpack --image $L:v1 $out/b2 >/dev/null
echo hi > $out/b2/rootfs/hello
rm $out/b2/rootfs/bin/vi
mkdir -p $out/b2/rootfs/work
umoci repack --image $L:v1 $out/b2
rm -rf $out/b2
umoci config --image $L:v1 --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo default-cmd' \
  --config.env PATH=/bin:/usr/bin --config.env FROM_IMAGE=yes --config.workingdir /work \
  --config.exposedports 8080/tcp
umoci config --image $L:v1 --tag arm --architecture arm64
umoci unpack --image $L:v1 $out/b3 >/dev/null
echo other > $out/b3/rootfs/other
umoci repack --image $L:v1 --tag other $out/b3 >/dev/null 2>&1 || umoci repack --image $L:other $out/b3
rm -rf $out/b3
python3 - "$L" <<'PY'
import hashlib, json, os, sys
L = sys.argv[1]
idx = json.load(open(f"{L}/index.json"))
by = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
ents = []
for tag, arch in (("v1", "amd64"), ("arm", "arm64")):
    d = dict(by[tag]); d.pop("annotations", None)
    d["platform"] = {"os": "linux", "architecture": arch}
    ents.append(d)
blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ents}).encode()
h = hashlib.sha256(blob).hexdigest()
open(f"{L}/blobs/sha256/{h}", "wb").write(blob)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + h,
                         "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(idx, open(f"{L}/index.json", "w"))
PY
