#!/bin/sh
# Builds a fuzz target with clang's libFuzzer: build.sh OUT_DIR [TARGET],
# TARGET proto (the default: the agent protocol's decoders) or dns (the box's
# DNS proxy's decoders). Prints the binary's path. Exit 77 (ctest's "skipped") when no clang here
# can build it, or 0 with a note if CUBBY_FUZZ_OPTIONAL=1 (the CMake build);
# any other failure is a real build error.
#
# Separate from the CMake build because the project compiles with gcc,
# which has no libFuzzer (no -fsanitize=fuzzer, no trace-pc-guard
# coverage). The target is small: the wire decoders and what they call.
#
# Clang 16 or later with Debian 12's libstdc++ 12: libstdc++ only declares
# std::expected when __cpp_concepts >= 202002L. Clang 16 implements the
# feature that needs (P0848, conditionally trivial special members) but
# still reports 201907L, so the macro is raised for it; clang 14 (Debian's
# default) lacks P0848 and cannot compile std::expected at all.
set -eu
out=${1:?usage: build.sh OUT_DIR [proto|dns]}
target=${2:-proto}
src=$(cd "$(dirname "$0")/../.." && pwd)
cxx=""
for c in ${CUBBY_FUZZ_CXX:-} clang++-19 clang++-18 clang++-17 clang++-16 clang++; do
  command -v "$c" >/dev/null 2>&1 || continue
  v=$("$c" -dumpversion 2>/dev/null | cut -d. -f1)
  [ "${v:-0}" -ge 16 ] 2>/dev/null || continue
  cxx=$c
  break
done
unavailable() {
  echo "fuzz target not built: $1" >&2
  [ "${CUBBY_FUZZ_OPTIONAL:-}" = 1 ] && exit 0
  exit 77
}
[ -n "$cxx" ] || unavailable "no clang++ >= 16 (apt-get install clang-16 libclang-rt-16-dev)"
mkdir -p "$out"
bin="$out/${target}_fuzz"
case $target in
proto)
  sources="tests/fuzz/proto_fuzz.cc src/proto/frame.cc src/proto/messages.cc src/proto/mux.cc src/copy/entry.cc
src/base/fs.cc src/base/sys.cc"
  headers="src/proto src/base src/copy/entry.h" ;;
dns)
  sources="tests/fuzz/dns_fuzz.cc src/net/dns.cc"
  headers="src/net/dns.h" ;;
*) echo "build.sh: unknown target $target (proto or dns)" >&2; exit 2 ;;
esac
# Rebuild only when a source or header it reads changed.
newer=$(cd "$src" && find $sources $headers tests/fuzz/build.sh -newer "$bin" 2>/dev/null | head -1)
if [ -x "$bin" ] && [ -z "$newer" ]; then
  echo "$bin"
  exit 0
fi
flags="-std=c++2b -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
flags="$flags -I$src/src -Wno-builtin-macro-redefined -Wno-macro-redefined"
probe='#include <expected>
#include <string>
std::expected<std::string, int> e;
extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }'
links() { printf '%s\n' "$probe" | "$cxx" $flags -x c++ - -o "$out/probe" 2>>"$out/probe.log"; }
: >"$out/probe.log"
if ! links; then
  flags="$flags -D__cpp_concepts=202002L"
  links || unavailable "$cxx cannot link a libFuzzer target using std::expected (see $out/probe.log)"
fi
rm -f "$out/probe"
objs=""
pids=""
for s in $sources; do
  o="$out/$target-$(echo "$s" | tr / _).o"
  objs="$objs $o"
  (cd "$src" && "$cxx" $flags -c "$s" -o "$o") &
  pids="$pids $!"
done
for p in $pids; do wait "$p"; done
"$cxx" $flags $objs -o "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
