#!/bin/sh
# Installs what cubby needs to build, test and benchmark on Debian 12.
# (clang-16: the fuzz targets, tests/fuzz; the build itself is gcc. dnsmasq-base:
# the upstream DNS server of the network tests.)
# Quick when everything is already there (dpkg-query only).
set -eu
PKGS="build-essential cmake pkg-config libsqlite3-dev nlohmann-json3-dev libcli11-dev libseccomp-dev
libarchive-dev libssl-dev
libacl1-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev zlib1g-dev libxml2-dev libicu-dev nettle-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev busybox-static
slirp4netns nftables dnsmasq-base uidmap file procps iproute2 runc crun containerd docker.io podman bubblewrap hyperfine strace
libcurl4-openssl-dev libboost-dev docker-registry skopeo umoci apache2-utils openssl python3
python3-pytest python3-httpx python3-websockets python3-jsonschema
python3-grpcio python3-grpc-tools catatonit containernetworking-plugins
clang-16 libclang-rt-16-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The vm backend (QEMU microvm): QEMU, and the tools that build the guest
# kernel assets, the initramfs (cpio) and the per-image ext4 disks (mke2fs).
VM_PKGS="qemu-system-x86 cpio kmod e2fsprogs"
vm_missing=""
for p in $VM_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || vm_missing="$vm_missing $p"
done
if [ -n "$vm_missing" ]; then
  echo "installing:$vm_missing"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $vm_missing >/dev/null
fi
