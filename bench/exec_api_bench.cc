// In-process exec round trip through libcubby (no CLI start-up), side by
// side with spawning /bin/true on the host: the SPEC's "in-process API
// <= 1.5x the floor" target. Google Benchmark; run by bench/run_vs_peers.sh.
//   exec_api_bench HOME BOX
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <iostream>

#include "base/process.h"
#include "runtime/runtime.h"

namespace {
std::string g_home, g_box;

void BM_HostSpawnTrue(benchmark::State& state) {
  for (auto _ : state) {
    cubby::SpawnSpec s;
    s.argv = {"/bin/true"};
    auto c = cubby::spawn(s);
    if (!c || !c->wait()) state.SkipWithError("spawn failed");
  }
}

void BM_ApiExecTrue(benchmark::State& state) {
  auto rt = cubby::Runtime::open({g_home, ""});
  if (!rt) {
    state.SkipWithError(rt.error().message().c_str());
    return;
  }
  cubby::ExecRequest req;
  req.argv = {"true"};
  for (auto _ : state) {
    auto r = rt->exec(g_box, req, cubby::StdioFds{-1, -1, -1, false});
    if (!r || r->code != 0) state.SkipWithError("exec failed");
  }
}

BENCHMARK(BM_HostSpawnTrue)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_ApiExecTrue)->Unit(benchmark::kMillisecond)->MinTime(2.0);
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (argc < 3) {
    std::cerr << "usage: exec_api_bench HOME BOX [benchmark flags]\n";
    return 2;
  }
  g_home = argv[1];
  g_box = argv[2];
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
