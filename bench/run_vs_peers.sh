#!/bin/bash
# Cold-start and exec latency of cubby against its shared-kernel peers (runc,
# crun, bwrap), measured side by side in one run on the same busybox rootfs.
#
# Usage: bench/run_vs_peers.sh BUILD_DIR        (make bench => bench/run_vs_peers.sh build)
# Env:   BENCH_RUNS  hyperfine runs per command (default 30); warmup is 3.
#
# Prints a table of medians and the SPEC §5 ratios, writes BUILD_DIR/bench-results.json.
# Exit status: 0 even when a target is missed (this is a measurement, not a test);
# non-zero when cubby itself cannot run, or a tool the bench needs is missing.
set -eu
set -o pipefail

die() { echo "bench: error: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
[ -d "$1" ] || die "build dir '$1' does not exist (run 'make build' first)"
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_RUNS:-30}
WARMUP=3
case $RUNS in ''|*[!0-9]*) die "BENCH_RUNS must be a positive integer, got '$RUNS'";; esac
[ "$RUNS" -ge 2 ] || die "BENCH_RUNS must be >= 2"
[ "$(id -u)" = 0 ] || die "must run as root (runc, crun and cubby need it)"

for t in hyperfine python3 tar; do
  command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh or apt-get install $t)"
done
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # avoid pyenv shims; stdlib only

for b in cubby cubby-shim cubby-agent; do
  [ -x "$BUILD_DIR/bin/$b" ] || die "$BUILD_DIR/bin/$b missing (run 'make build' first)"
done

TMP=$(mktemp -d /tmp/cubby-bench.XXXXXX)
CUBBY=$TMP/bin/cubby
CHOME=$TMP/home
BOX=""
RUNC_ID=cubby-bench-runc-$$
CRUN_ID=cubby-bench-crun-$$

cleanup() {
  rc=$?
  set +e
  if [ -x "$CUBBY" ] && [ -d "$CHOME" ]; then
    [ -n "$BOX" ] && "$CUBBY" --home "$CHOME" rm -f "$BOX" >/dev/null 2>&1
    # anything left behind by an interrupted `run --rm`
    for b in $("$CUBBY" --home "$CHOME" ls -a -q 2>/dev/null); do
      "$CUBBY" --home "$CHOME" rm -f "$b" >/dev/null 2>&1
    done
  fi
  command -v runc >/dev/null && runc delete -f "$RUNC_ID" >/dev/null 2>&1
  command -v crun >/dev/null && crun delete -f "$CRUN_ID" >/dev/null 2>&1
  rm -rf "$TMP" 2>/dev/null || note "could not fully remove $TMP (mounts left behind?)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- prepare
# Snapshot the binaries: the tree may be rebuilt while the bench runs.
mkdir -p "$TMP/bin" "$TMP/json"
cp -p "$BUILD_DIR/bin/cubby" "$BUILD_DIR/bin/cubby-shim" "$BUILD_DIR/bin/cubby-agent" "$TMP/bin/"

"$REPO/scripts/mkimage.sh" "$TMP/busybox.tar" || die "scripts/mkimage.sh failed"
"$CUBBY" --home "$CHOME" import "$TMP/busybox.tar" busybox >/dev/null \
  || die "cubby import failed"
"$CUBBY" --home "$CHOME" run --rm --network none busybox true \
  || die "cubby run --rm --network none busybox true failed"
BOX=$("$CUBBY" --home "$CHOME" run -d --network none busybox sleep 100000) \
  || die "cubby run -d failed"
BOX=$(printf '%s' "$BOX" | tail -n1 | tr -d '[:space:]')
[ -n "$BOX" ] || die "cubby run -d printed no box id"
"$CUBBY" --home "$CHOME" exec "$BOX" true || die "cubby exec $BOX true failed"

# OCI bundle for runc/crun, same rootfs; runc's default spec (pid, net, ipc, uts, mnt ns).
BUNDLE=$TMP/bundle
ROOTFS=$BUNDLE/rootfs
mkdir -p "$ROOTFS"
tar -C "$ROOTFS" -xf "$TMP/busybox.tar"
HAVE_RUNC=0
if command -v runc >/dev/null; then
  (cd "$BUNDLE" && runc spec)
  "$PY" - "$BUNDLE/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"]["path"] = "rootfs"
json.dump(c, open(p, "w"), indent=2)
EOF
  HAVE_RUNC=1
else
  # crun can write the spec too
  command -v crun >/dev/null && (cd "$BUNDLE" && crun spec) && "$PY" - "$BUNDLE/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]; c["process"]["terminal"] = False; c["root"]["path"] = "rootfs"
json.dump(c, open(p, "w"), indent=2)
EOF
fi

# ---------------------------------------------------------------- measure
HF_OPTS=(-N --warmup "$WARMUP" --runs "$RUNS" --style basic)
NOTES=()

# bench NAME CMD...   -> $TMP/json/NAME.json; returns non-zero if hyperfine failed
bench() {
  local name=$1; shift
  echo "== $name: $*" >&2
  cat /proc/loadavg > "$TMP/json/$name.load"
  if hyperfine "${HF_OPTS[@]}" -n "$name" --export-json "$TMP/json/$name.json" "$*" >&2; then
    return 0
  fi
  rm -f "$TMP/json/$name.json"
  return 1
}

LOAD_BEFORE=$(cat /proc/loadavg)
note "loadavg before: $LOAD_BEFORE"

bench floor /bin/true || die "hyperfine failed on /bin/true"

bench cubby_run "$CUBBY --home $CHOME run --rm --network none busybox true" \
  || die "cubby run failed under hyperfine"

if [ "$HAVE_RUNC" = 1 ]; then
  # Not detached: runc deletes the container when `run` returns, so one id is reused.
  # Probe twice: the second call proves the fixed id is free again.
  if runc run --bundle "$BUNDLE" "$RUNC_ID" && runc run --bundle "$BUNDLE" "$RUNC_ID"; then
    bench runc "runc run --bundle $BUNDLE $RUNC_ID" || NOTES+=("runc: hyperfine run failed")
  else
    NOTES+=("runc: probe run failed, skipped")
  fi
else
  NOTES+=("runc: not installed, skipped")
fi

CRUN_VARIANT=none
if command -v crun >/dev/null; then
  if crun run --bundle "$BUNDLE" "$CRUN_ID" 2>"$TMP/crun.err"; then
    CRUN_VARIANT=plain
    bench crun "crun run --bundle $BUNDLE $CRUN_ID" || { CRUN_VARIANT=none; NOTES+=("crun: hyperfine run failed"); }
  elif grep -q 'hybrid' "$TMP/crun.err"; then
    # crun 1.8.1 refuses cgroup v1 hybrid hosts. Measure it inside ONE private mount
    # namespace with the cgroup2 mount removed (no per-call wrapper cost).
    note "plain crun refused: $(head -c 200 "$TMP/crun.err"); retrying in a private mount ns without /sys/fs/cgroup/unified"
    export BUNDLE CRUN_ID RUNS WARMUP
    export HF_JSON=$TMP/json/crun.json
    if unshare -m --propagation private sh -c '
         umount /sys/fs/cgroup/unified 2>/dev/null || true
         crun run --bundle "$BUNDLE" "$CRUN_ID" || exit 3
         cat /proc/loadavg > "${HF_JSON%.json}.load"
         echo "== crun (private mount ns, cgroup2 unmounted): crun run --bundle $BUNDLE $CRUN_ID" >&2
         hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic -n crun \
           --export-json "$HF_JSON" "crun run --bundle $BUNDLE $CRUN_ID" >&2'; then
      CRUN_VARIANT=unshare-m-no-unified
    else
      rm -f "$HF_JSON"
      NOTES+=("crun: failed both plain (hybrid cgroups) and in a private mount ns; skipped")
    fi
  else
    NOTES+=("crun: failed: $(head -c 200 "$TMP/crun.err" | tr '\n' ' '); skipped")
  fi
else
  NOTES+=("crun: not installed, skipped")
fi
case $CRUN_VARIANT in
  plain) NOTES+=("crun: plain crun run");;
  unshare-m-no-unified) NOTES+=("crun: hybrid cgroups refused plain crun; measured inside one 'unshare -m' with /sys/fs/cgroup/unified unmounted (no per-call wrapper)");;
esac

if command -v bwrap >/dev/null; then
  BWRAP="bwrap --ro-bind $ROOTFS / --proc /proc --dev /dev --unshare-all --die-with-parent /bin/true"
  if $BWRAP; then
    bench bwrap "$BWRAP" || NOTES+=("bwrap: hyperfine run failed")
  else
    NOTES+=("bwrap: probe failed, skipped")
  fi
else
  NOTES+=("bwrap: not installed, skipped")
fi

bench cubby_exec "$CUBBY --home $CHOME exec $BOX true" || die "cubby exec failed under hyperfine"

# The in-process API (no CLI start-up) against spawning /bin/true from the
# same process: SPEC §5 "in-process API <= 1.5x the floor".
if [ -x "$BUILD_DIR/bin/exec_api_bench" ]; then
  "$BUILD_DIR/bin/exec_api_bench" "$CHOME" "$BOX" --benchmark_format=console 2>/dev/null \
    | awk '/^BM_/ {print}' | tee "$TMP/api.txt" >&2 || NOTES+=("exec_api_bench failed")
  if [ -s "$TMP/api.txt" ]; then
    host=$(awk '/BM_HostSpawnTrue/ {print $2}' "$TMP/api.txt"); api=$(awk '/BM_ApiExecTrue/ {print $2}' "$TMP/api.txt")
    NOTES+=("in-process: exec via libcubby ${api} ms vs host spawn of /bin/true ${host} ms (ratio $(echo "$api $host" | awk '{printf "%.2f", $1/$2}'), target <= 1.5)")
  fi
fi

LOAD_AFTER=$(cat /proc/loadavg)
note "loadavg after: $LOAD_AFTER"

# ---------------------------------------------------------------- report
OUT=$BUILD_DIR/bench-results.json
printf '%s\n' "${NOTES[@]}" > "$TMP/notes.txt"
"$PY" - "$TMP/json" "$OUT" "$RUNS" "$WARMUP" "$LOAD_BEFORE" "$LOAD_AFTER" "$CRUN_VARIANT" "$TMP/notes.txt" \
      "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, os, sys, datetime, platform
jdir, out, runs, warmup, load0, load1, crun_variant, notes_file, commit = sys.argv[1:]
order = [("floor", "/bin/true"),
         ("cubby_run", "cubby run --rm --network none busybox true"),
         ("runc", "runc run --bundle B id"),
         ("crun", "crun run --bundle B id" + ("" if crun_variant != "unshare-m-no-unified" else "  [unshare -m, no cgroup2]")),
         ("bwrap", "bwrap --ro-bind rootfs / ... --unshare-all /bin/true"),
         ("cubby_exec", "cubby exec BOX true")]
res = {}
for name, _ in order:
    p = os.path.join(jdir, name + ".json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))["results"][0]
    ms = lambda v: round(v * 1000.0, 2)
    res[name] = {"command": r["command"], "median_ms": ms(r["median"]), "mean_ms": ms(r["mean"]),
                 "stddev_ms": ms(r.get("stddev") or 0.0), "min_ms": ms(r["min"]), "max_ms": ms(r["max"]),
                 "runs": len(r.get("times", []))}
    lp = os.path.join(jdir, name + ".load")
    res[name]["loadavg_at_start"] = open(lp).read().strip() if os.path.exists(lp) else None

def ratio(a, b):
    if a in res and b in res and res[b]["median_ms"] > 0:
        return res[a]["median_ms"] / res[b]["median_ms"]
    return None

ratios = [("cubby_run/runc", ratio("cubby_run", "runc"), 0.7, "target"),
          ("cubby_run/crun", ratio("cubby_run", "crun"), None, "info (~1.5 expected)"),
          ("cubby_run/bwrap", ratio("cubby_run", "bwrap"), 1.5, "goal"),
          ("cubby_exec/floor", ratio("cubby_exec", "floor"), 2.5, "target")]

notes = [l for l in open(notes_file).read().splitlines() if l.strip()]
print()
print("cubby vs peers  (%s, commit %s, runs=%s warmup=%s, %d cpus)" %
      (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), commit, runs, warmup, os.cpu_count()))
print("loadavg before: %s" % load0)
print("loadavg after:  %s" % load1)
print()
print("%-12s %8s %8s %8s %8s %6s   %s" % ("command", "median", "mean", "min", "max", "load", ""))
for name, desc in order:
    if name in res:
        r = res[name]
        la = (r["loadavg_at_start"] or "-").split()[0]
        print("%-12s %8.2f %8.2f %8.2f %8.2f %6s   %s" % (name, r["median_ms"], r["mean_ms"], r["min_ms"], r["max_ms"], la, desc))
    else:
        print("%-12s %8s %8s %8s %8s %6s   %s" % (name, "-", "-", "-", "-", "-", desc + "  (skipped)"))
print("(times in ms; load = 1-min loadavg when that command started, on %d cpus)" % os.cpu_count())
print()
print("%-18s %7s  %s" % ("ratio (medians)", "value", "bound"))
rj = {}
for n, v, bound, kind in ratios:
    if v is None:
        status = "n/a"; txt = "-"
    elif bound is None:
        status = "info"; txt = "%.3f" % v
    else:
        status = "met" if v <= bound else "MISSED"; txt = "%.3f" % v
    bt = ("<= %.1f %s" % (bound, kind)) if bound is not None else kind
    print("%-18s %7s  %-16s %s" % (n, txt, bt, status if status not in ("info",) else ""))
    rj[n] = {"value": None if v is None else round(v, 3), "bound": bound, "kind": kind, "status": status}
if notes:
    print()
    for l in notes:
        print("note: " + l)

doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit,
       "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                "loadavg_before": load0, "loadavg_after": load1},
       "hyperfine": {"runs": int(runs), "warmup": int(warmup), "shell": "none (-N)"},
       "crun_variant": crun_variant, "results": res, "ratios": rj, "notes": notes}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
print()
print("results written to " + out)
EOF
