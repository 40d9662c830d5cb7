#!/bin/bash
# Exec round trip of `true` into one running box, side by side in one run:
#   api    in-process Runtime::exec (bench/exec_api_bench, Google Benchmark)
#   sdk    the Python SDK's sync cubby.Client over the home's Unix socket, in one process
#   async  the Python SDK's cubby.aio.AsyncClient likewise (h11 on asyncio streams)
#   curl   one `curl --unix-socket` process per call (POST /v1/boxes/ID/exec)
#   cli    one `cubby exec BOX true` process per call
# and the server's memory: VmRSS of `cubby serve` with 100 idle boxes.
# Targets (issue #11): sdk <= 1.5x api; server RSS <= 20 MiB with 100 idle boxes.
#
# Usage: bench/serve_vs_api.sh BUILD_DIR     Env: BENCH_RUNS (default 200 calls per client),
#        BENCH_ROUNDS (default 5 alternating rounds of api, sdk and async)
# Exit status 0 even when a target is missed (a measurement, not a test).
set -eu
set -o pipefail
die() { echo "bench: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_RUNS:-200}
PY=/usr/bin/python3
for t in hyperfine curl "$PY"; do command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh)"; done
for b in cubby exec_api_bench; do [ -x "$BUILD_DIR/bin/$b" ] || die "$BUILD_DIR/bin/$b missing (make build)"; done
[ -f "$BUILD_DIR/test-rootfs.tar" ] || [ -f "$BUILD_DIR/busybox-rootfs.tar" ] || die "no rootfs tar in $BUILD_DIR"
ROOTFS=$BUILD_DIR/test-rootfs.tar; [ -f "$ROOTFS" ] || ROOTFS=$BUILD_DIR/busybox-rootfs.tar

TMP=$(mktemp -d /tmp/cubby-serve-bench.XXXXXX)
HOME_DIR=$TMP/home
CUBBY="$BUILD_DIR/bin/cubby --home $HOME_DIR"
SOCK=$HOME_DIR/cubby.sock
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  for id in $($CUBBY ls -aq 2>/dev/null); do $CUBBY rm -f "$id" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

export CUBBY_ISOLATION=sandbox
$CUBBY import "$ROOTFS" busybox >/dev/null
BOX=$($CUBBY run -d --network none busybox sleep 1000000)

exec 3< <($CUBBY serve --socket "$SOCK")
SERVER_PID=$!
read -r ready <&3 || die "cubby serve did not start"
echo "bench: $ready" >&2

# The in-process API and both SDK clients in alternating rounds (the SDK's
# two clients call by turns inside one process), so a change of load on
# this shared machine hits all three alike; each figure is the median of
# its rounds' medians.
ROUNDS=${BENCH_ROUNDS:-5}
api_rounds=(); sdk_rounds=(); async_rounds=()
for _ in $(seq "$ROUNDS"); do
  api_rounds+=("$("$BUILD_DIR/bin/exec_api_bench" "$HOME_DIR" "$BOX" --benchmark_filter=BM_ApiExecTrue \
      --benchmark_min_time=0.5 --benchmark_format=json 2>/dev/null |
      "$PY" -c 'import json,sys; b=json.load(sys.stdin)["benchmarks"][0]; print(b["real_time"])')")
  read -r s a < <(PYTHONPATH=$REPO/sdk/python "$PY" - "$SOCK" "$BOX" $(( (RUNS + ROUNDS - 1) / ROUNDS )) <<'EOF'
import asyncio, statistics, sys, time
import cubby, cubby.aio
sock, box, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
loop = asyncio.new_event_loop()
with cubby.Client(f"unix://{sock}") as c:
    b = c.get(box)
    ac = cubby.aio.AsyncClient(f"unix://{sock}")
    ab = loop.run_until_complete(ac.get(box))
    sync_t, async_t = [], []
    for i in range(runs + 10):
        t = time.perf_counter(); r = b.exec("true"); d1 = time.perf_counter() - t
        t = time.perf_counter(); r2 = loop.run_until_complete(ab.exec("true")); d2 = time.perf_counter() - t
        assert r.exit_code == 0 and r2.exit_code == 0
        if i >= 10:  # warm-up first
            sync_t.append(d1 * 1000); async_t.append(d2 * 1000)
    loop.run_until_complete(ac.close())
print(statistics.median(sync_t), statistics.median(async_t))
EOF
  )
  sdk_rounds+=("$s"); async_rounds+=("$a")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
api_ms=$(median "${api_rounds[@]}"); sdk_ms=$(median "${sdk_rounds[@]}"); async_ms=$(median "${async_rounds[@]}")
echo "bench: rounds api ${api_rounds[*]} / sdk ${sdk_rounds[*]} / async ${async_rounds[*]}" >&2

curl_json=$TMP/curl.json
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$curl_json" \
  "curl -sf --unix-socket $SOCK -X POST -H Content-Type:application/json -d '{\"cmd\":[\"true\"]}' http://cubby/v1/boxes/$BOX/exec" \
  >/dev/null 2>&1 || die "curl exec failed"
curl_ms=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$curl_json")
cli_json=$TMP/cli.json
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$cli_json" "$BUILD_DIR/bin/cubby --home $HOME_DIR exec $BOX true" \
  >/dev/null 2>&1 || die "cli exec failed"
cli_ms=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$cli_json")

# 100 idle boxes made through the server, then its resident memory.
PYTHONPATH=$REPO/sdk/python "$PY" - "$SOCK" <<'EOF'
import sys
from concurrent.futures import ThreadPoolExecutor
import cubby
with cubby.Client(f"unix://{sys.argv[1]}") as c:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: c.create("busybox", cmd=["sleep", "1000000"], network="none"), range(99)))
    assert len(c.list()) >= 100
EOF
rss_kib=$(awk '/^VmRSS/ {print $2}' /proc/"$SERVER_PID"/status)

"$PY" - "$api_ms" "$sdk_ms" "$async_ms" "$curl_ms" "$cli_ms" "$rss_kib" <<'EOF'
import sys
api, sdk, async_, curl, cli, rss = map(float, sys.argv[1:])
print(f"{'path':<8}{'median ms':>10}{'x api':>8}")
for name, v in (("api", api), ("sdk", sdk), ("async", async_), ("curl", curl), ("cli", cli)):
    print(f"{name:<8}{v:>10.2f}{v / api:>8.2f}")
print(f"sdk/api = {sdk / api:.2f} (target <= 1.5)")
print(f"server RSS with 100 idle boxes = {rss / 1024:.1f} MiB (target <= 20)")
EOF
