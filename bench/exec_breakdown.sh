#!/bin/bash
# Where `cubby exec BOX true` spends its time, and before/after comparisons,
# measured with interleaved runs so that load from other work on the host
# hits every command alike.
#
# Usage: bench/exec_breakdown.sh BUILD_DIR [BASELINE_BUILD_DIR]
# Env:   BENCH_ROUNDS  hyperfine rounds (default 10); the command order rotates each round
#        BENCH_RUNS    runs per command per round (default 30; warmup 5)
#
# For each build: `cubby --version` (process start), `cubby ls -q` (+ opening
# the runtime: SQLite, image store, reconcile), `cubby exec NAME true` on one
# running sandbox box (the direct path: no store) and `cubby exec PREFIX true`
# (an id prefix: through the store), next to the floor (/bin/true). Prints medians, p10/p90,
# the ratio to the floor and the differences between the steps; writes
# BUILD_DIR/bench-exec.json. Exit status: 0 even when the target is missed.
set -eu
set -o pipefail

die() { echo "bench: error: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 BUILD_DIR [BASELINE_BUILD_DIR]"
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-10}
RUNS=${BENCH_RUNS:-30}
for n in "$ROUNDS" "$RUNS"; do
  case $n in ''|*[!0-9]*|0) die "BENCH_ROUNDS and BENCH_RUNS must be positive integers";; esac
done
for t in hyperfine python3; do command -v "$t" >/dev/null || die "'$t' not found"; done
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3

TMP=$(mktemp -d /tmp/cubby-exec-bench.XXXXXX)
NAMES=()   # "new" and, with a baseline, "base"
cleanup() {
  rc=$?
  set +e
  for n in "${NAMES[@]}"; do
    "$TMP/$n/bin/cubby" --home "$TMP/$n/home" rm -f bench >/dev/null 2>&1
  done
  rm -rf "$TMP" 2>/dev/null || echo "bench: could not fully remove $TMP" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$REPO/scripts/mkimage.sh" "$TMP/busybox.tar" || die "scripts/mkimage.sh failed"
# setup NAME BUILD_DIR: a snapshot of the binaries, a home, one running box
setup() {
  local n=$1 dir=$2
  for b in cubby cubby-shim cubby-agent; do [ -x "$dir/bin/$b" ] || die "$dir/bin/$b missing"; done
  mkdir -p "$TMP/$n/bin"
  cp -p "$dir/bin/cubby" "$dir/bin/cubby-shim" "$dir/bin/cubby-agent" "$TMP/$n/bin/"
  local c=("$TMP/$n/bin/cubby" --home "$TMP/$n/home")
  "${c[@]}" import "$TMP/busybox.tar" busybox >/dev/null || die "$n: cubby import failed"
  NAMES+=("$n")
  local id
  id=$("${c[@]}" run -d --name bench --network none busybox sleep 1000000 2>/dev/null) || die "$n: cubby run -d failed"
  "${c[@]}" exec bench true || die "$n: cubby exec failed"
  echo "${id:0:12}" > "$TMP/$n/prefix"
}
setup new "$1"
[ $# -eq 2 ] && setup base "$2"

CMDS=("floor=/bin/true")
for n in "${NAMES[@]}"; do
  c="$TMP/$n/bin/cubby --home $TMP/$n/home"
  # exec by name takes the direct path where the build has one (no store
  # opened); by an id prefix it always goes through the store.
  CMDS+=("${n}_version=$TMP/$n/bin/cubby --version" "${n}_ls=$c ls -q" "${n}_exec=$c exec bench true"
         "${n}_exec_prefix=$c exec $(cat "$TMP/$n/prefix") true")
done
cat /proc/loadavg > "$TMP/load.before"
for r in $(seq 0 $((ROUNDS - 1))); do
  args=()
  for i in "${!CMDS[@]}"; do
    j=$(( (i + r) % ${#CMDS[@]} ))
    args+=(-n "${CMDS[$j]%%=*}" "${CMDS[$j]#*=}")
  done
  echo "== round $((r + 1))/$ROUNDS" >&2
  hyperfine -N --warmup 5 -r "$RUNS" --style none --export-json "$TMP/round$r.json" "${args[@]}" >&2 \
    || die "hyperfine failed"
done
cat /proc/loadavg > "$TMP/load.after"

"$PY" - "$TMP" "$1/bench-exec.json" <<'EOF'
import glob, json, statistics as st, sys
tmp, out = sys.argv[1], sys.argv[2]
times = {}
for f in sorted(glob.glob(tmp + "/round*.json")):
    for r in json.load(open(f))["results"]:
        times.setdefault(r["command"], []).extend(t * 1000 for t in r["times"])
def q(v, p):
    v = sorted(v)
    return v[int(p * (len(v) - 1))]
stats = {k: {"median": st.median(v), "p10": q(v, .1), "p90": q(v, .9), "n": len(v)} for k, v in times.items()}
floor = stats["floor"]["median"]
load = [open(tmp + "/load." + w).read().split()[:3] for w in ("before", "after")]
print(f"loadavg {' '.join(load[0])} before, {' '.join(load[1])} after")
print(f"{'command':16s} {'median ms':>10s} {'p10':>7s} {'p90':>7s} {'x floor':>8s}")
for k, s in stats.items():
    print(f"{k:16s} {s['median']:10.2f} {s['p10']:7.2f} {s['p90']:7.2f} {s['median'] / floor:8.2f}")
steps = {}
for n in ("new", "base"):
    if n + "_exec" not in stats:
        continue
    m = lambda k: stats[f"{n}_{k}"]["median"]
    steps[n] = {"process start (version - floor)": m("version") - floor,
                "runtime open (ls - version)": m("ls") - m("version"),
                "exec round trip (exec - ls)": m("exec") - m("ls"),
                "store path (exec by prefix - exec by name)": m("exec_prefix") - m("exec"),
                "exec / floor (target <= 2.5)": m("exec") / floor}
    print(f"{n}: " + ", ".join(f"{k} {v:.2f}" for k, v in steps[n].items()))
json.dump({"stats": stats, "steps": steps, "loadavg": load}, open(out, "w"), indent=2)
EOF
