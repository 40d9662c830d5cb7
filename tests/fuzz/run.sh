#!/bin/sh
# Fuzzes the wire decoders (proto_fuzz.cc; dns_fuzz.cc with TARGET dns) for
# SECONDS (default 300):
#   tests/fuzz/run.sh [SECONDS] [proto|dns]
# ctest runs it for 20 s (tests/CMakeLists.txt). Builds the target first if
# needed (into $CUBBY_FUZZ_OUT, default build/fuzz). The checked-in seeds are
# only read; new inputs go to a scratch corpus, and a finding is written to
# $CUBBY_FUZZ_OUT/TARGET-crash-* (reproduce: $CUBBY_FUZZ_OUT/TARGET_fuzz FILE;
# add it to tests/fuzz/corpus/TARGET once fixed). Exit 77: no suitable clang.
set -eu
seconds=${1:-300}
target=${2:-proto}
here=$(cd "$(dirname "$0")" && pwd)
out=${CUBBY_FUZZ_OUT:-$here/../../build/fuzz}
bin=$("$here/build.sh" "$out" "$target")
work=$(mktemp -d "${TMPDIR:-/tmp}/cubby-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Symbolized reports where LLVM's symbolizer is installed.
if s=$(command -v llvm-symbolizer); then export ASAN_SYMBOLIZER_PATH="$s" UBSAN_SYMBOLIZER_PATH="$s"; fi
# -max_len: every message of ours is small; 8 KiB still reaches every limit
# (a DNS message the proxy reads is at most 4 KiB).
dict=""
[ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
# A finding exits 1: libFuzzer's default (77) is ctest's "skipped".
"$bin" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -error_exitcode=1 -timeout_exitcode=1 $dict -artifact_prefix="$out/$target-" \
  "$work" "$here/corpus/$target"
