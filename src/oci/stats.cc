#include "oci/stats.h"

#include <sstream>

#include "base/fs.h"
#include "sandbox/cgroup.h"

namespace cubby::oci {
namespace {

using nlohmann::json;

// A number file ("max" and unreadable files: 0, as runc reports them).
uint64_t num(const std::string& path) {
  auto t = read_file(path);
  if (!t) return 0;
  try {
    return std::stoull(*t);
  } catch (...) {
    return 0;
  }
}

// "key value" lines (memory.stat, cpu.stat, cpuacct.stat).
json keyed(const std::string& path) {
  json out = json::object();
  std::istringstream in(read_file(path).value_or(""));
  std::string k;
  uint64_t v;
  while (in >> k >> v) out[k] = v;
  return out;
}

}  // namespace

Result<json> stats_event(const std::string& id, const std::string& box) {
  auto cg = CUBBY_TRY(sandbox::Cgroup::open_existing(box));
  if (!cg) return fail(Error::conflict("container " + id + " has no cgroup (it is not running)"));
  const std::string leaf = std::string("/") + sandbox::leaf_name(sandbox::Leaf::kWorkload);
  json cpu = {{"usage", {{"total", 0}, {"percpu", json::array()}, {"kernel", 0}, {"user", 0}}},
              {"throttling", {{"periods", 0}, {"throttled_periods", 0}, {"throttled_time", 0}}}};
  json memory = {{"usage", {{"usage", 0}, {"max", 0}, {"limit", 0}, {"failcnt", 0}}}, {"raw", json::object()}};
  json pids = {{"current", 0}, {"limit", 0}};
  if (sandbox::detect_cgroup_version() == sandbox::CgroupVersion::kV2) {
    const std::string d = cg->paths()[0] + leaf;
    json st = keyed(d + "/cpu.stat");
    cpu["usage"]["total"] = st.value("usage_usec", uint64_t{0}) * 1000;
    cpu["usage"]["user"] = st.value("user_usec", uint64_t{0}) * 1000;
    cpu["usage"]["kernel"] = st.value("system_usec", uint64_t{0}) * 1000;
    cpu["throttling"] = {{"periods", st.value("nr_periods", uint64_t{0})},
                         {"throttled_periods", st.value("nr_throttled", uint64_t{0})},
                         {"throttled_time", st.value("throttled_usec", uint64_t{0}) * 1000}};
    memory["usage"]["usage"] = num(d + "/memory.current");
    memory["usage"]["max"] = num(d + "/memory.peak");
    memory["usage"]["limit"] = num(d + "/memory.max");
    memory["raw"] = keyed(d + "/memory.stat");
    pids = {{"current", num(d + "/pids.current")}, {"limit", num(d + "/pids.max")}};
  } else {
    // v1: one directory per hierarchy, <root>/<hierarchy>/cubby/<box>.
    for (const auto& dir : cg->paths()) {
      std::string parent = dir.substr(0, dir.rfind('/'));
      std::string hier = parent.substr(0, parent.rfind('/'));
      hier = hier.substr(hier.rfind('/') + 1);
      const std::string d = dir + leaf;
      if (hier == "memory") {
        memory["usage"] = {{"usage", num(d + "/memory.usage_in_bytes")}, {"max", num(d + "/memory.max_usage_in_bytes")},
                           {"limit", num(d + "/memory.limit_in_bytes")}, {"failcnt", num(d + "/memory.failcnt")}};
        memory["raw"] = keyed(d + "/memory.stat");
      } else if (hier == "cpu") {
        // cpu and cpuacct are one hierarchy on Debian (cpu -> cpu,cpuacct).
        cpu["usage"]["total"] = num(d + "/cpuacct.usage");
        json percpu = json::array();
        std::istringstream in(read_file(d + "/cpuacct.usage_percpu").value_or(""));
        for (uint64_t v; in >> v;) percpu.push_back(v);
        cpu["usage"]["percpu"] = percpu;
        // cpuacct.stat is in USER_HZ ticks (100 a second on Linux).
        json st = keyed(d + "/cpuacct.stat");
        cpu["usage"]["user"] = st.value("user", uint64_t{0}) * 10000000;
        cpu["usage"]["kernel"] = st.value("system", uint64_t{0}) * 10000000;
        json th = keyed(d + "/cpu.stat");
        cpu["throttling"] = {{"periods", th.value("nr_periods", uint64_t{0})},
                             {"throttled_periods", th.value("nr_throttled", uint64_t{0})},
                             {"throttled_time", th.value("throttled_time", uint64_t{0})}};
      } else if (hier == "pids") {
        pids = {{"current", num(d + "/pids.current")}, {"limit", num(d + "/pids.max")}};
      }
    }
  }
  return json{{"type", "stats"},
              {"id", id},
              {"data", {{"cpu", cpu}, {"memory", memory}, {"pids", pids}, {"blkio", json::object()}, {"hugetlb", json::object()}}}};
}

}  // namespace cubby::oci
