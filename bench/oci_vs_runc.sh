#!/bin/bash
# cubby-runc against runc and crun as OCI runtimes (SPEC §5: create+start+delete
# of /bin/true, sandbox backend, target <= 1.0x runc), on one bundle.
#
# Usage: bench/oci_vs_runc.sh BUILD_DIR
# Env:   BENCH_RUNS  rounds (default 20); each round runs every runtime once,
#        in turn (interleaved, so drift on this shared machine hits all alike).
#
# One round of a runtime R is: R create --bundle B ID; R start ID; then the
# container's exit (its pid file's pid, waited for by pidfd through python,
# the same for every runtime); R delete ID. The whole bench runs in one private
# mount namespace with /sys/fs/cgroup/unified unmounted, because crun 1.8.1
# refuses this host's hybrid cgroups otherwise (see
# ../shared/notes/peers-on-this-machine.md); runc and cubby-runc run there too,
# so all three see the same mounts.
#
# Prints medians (ms) and ratios to runc. Exit status 0 even when the target is
# missed (a measurement, not a test); non-zero when a runtime cannot run at all.
set -eu
set -o pipefail

die() { echo "bench: error: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
BUILD_DIR=$(cd "$1" && pwd)
RUNS=${BENCH_RUNS:-20}
case $RUNS in ''|*[!0-9]*) die "BENCH_RUNS must be a positive integer";; esac
[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$BUILD_DIR/bin/cubby-runc" ] || die "$BUILD_DIR/bin/cubby-runc missing (build first)"
[ -f "$BUILD_DIR/test-rootfs.tar" ] || die "$BUILD_DIR/test-rootfs.tar missing (build the test-rootfs target)"
for t in runc python3 unshare; do command -v $t >/dev/null || die "'$t' not found"; done

if [ "${OCI_BENCH_INNER:-}" != 1 ]; then
  export OCI_BENCH_INNER=1
  exec unshare -m --propagation private "$0" "$@"
fi
umount /sys/fs/cgroup/unified 2>/dev/null || true

TMP=$(mktemp -d /tmp/cubby-oci-bench.XXXXXX)
B=$TMP/bundle
ROOTS=$TMP/roots
cleanup() {
  set +e
  runc --root "$ROOTS/runc" delete -f bench >/dev/null 2>&1
  command -v crun >/dev/null && crun --root "$ROOTS/crun" delete -f bench >/dev/null 2>&1
  "$BUILD_DIR/bin/cubby-runc" --root "$ROOTS/cubby" delete -f bench >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$B/rootfs" "$ROOTS"
tar -xf "$BUILD_DIR/test-rootfs.tar" -C "$B/rootfs"
(cd "$B" && runc spec)
# What cubby-runc honours and runc and crun run alike: Docker's capability
# set, no terminal, /bin/true.
python3 - "$B/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
s = json.load(open(p))
caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
s["process"]["terminal"] = False
s["process"]["args"] = ["/bin/true"]
s["process"]["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
s["mounts"] = [m for m in s["mounts"] if m["type"] != "cgroup"]
json.dump(s, open(p, "w"))
EOF

# The driver: one process runs every round, times each runtime's three calls
# and the wait for the container's exit with a pidfd (no polling), interleaved.
python3 - "$RUNS" "$B" "$ROOTS" "$BUILD_DIR/bin/cubby-runc" <<'EOF'
import json, os, select, shutil, statistics, subprocess, sys, time
runs, bundle, roots, cubby = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rts = [("runc", shutil.which("runc")), ("cubby-runc", cubby)]
if shutil.which("crun"):
    rts.insert(1, ("crun", shutil.which("crun")))
import ctypes
# PR_SET_CHILD_SUBREAPER: the inits are reparented here and reaped, as
# containerd's shim does.
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
null = open(os.devnull, "r+b")

def once(name, binary):
    root = os.path.join(roots, name)
    pidf = os.path.join(bundle, name + ".pid")
    errf = os.path.join(bundle, name + ".err")
    t0 = time.perf_counter()
    def call(*a):
        # stderr to a file, not a pipe: `create` leaves its stdio to the
        # container, whose init would hold a pipe open past the call.
        with open(errf, "w+b") as err:
            r = subprocess.run([binary, "--root", root, *a], stdin=null, stdout=null, stderr=err)
            if r.returncode != 0:
                err.seek(0)
                raise SystemExit(f"bench: error: {name} {a[0]} failed: {err.read().decode(errors='replace').strip()}")
    call("create", "--bundle", bundle, "--pid-file", pidf, "bench")
    pid = int(open(pidf).read())
    fd = os.pidfd_open(pid)
    call("start", "bench")
    select.select([fd], [], [], 30)
    os.close(fd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    call("delete", "bench")
    return (time.perf_counter() - t0) * 1000

times = {n: [] for n, _ in rts}
bad = set()
for n, b in rts:  # warm-up, and find who cannot run here
    try:
        once(n, b)
    except SystemExit as e:
        print(e, file=sys.stderr)
        bad.add(n)
if "cubby-runc" in bad or "runc" in bad:
    sys.exit(1)
for i in range(runs):
    for n, b in rts:
        if n not in bad:
            times[n].append(once(n, b))
med = {n: statistics.median(v) for n, v in times.items() if v}
print(f"create+start+delete of /bin/true, {runs} interleaved rounds, median (min-max) ms:")
for n, v in times.items():
    if v:
        print(f"  {n:11s} {med[n]:8.1f}  ({min(v):.1f}-{max(v):.1f})")
    else:
        print(f"  {n:11s}  skipped (could not run here)")
print("ratios:")
for n in med:
    if n != "runc":
        print(f"  {n} / runc = {med[n] / med['runc']:.2f}" + ("   (SPEC target <= 1.0)" if n == "cubby-runc" else ""))
if "crun" in med:
    print(f"  cubby-runc / crun = {med['cubby-runc'] / med['crun']:.2f}")
EOF
