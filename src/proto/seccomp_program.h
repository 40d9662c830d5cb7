// A box's own seccomp filter on its way to the agent: a compiled classic-BPF
// program (the host compiles, e.g. cubby-runc from config.json's
// linux.seccomp; sandbox/seccomp_profile.h) and the seccomp(2) flags to load
// it with. It travels in BoxSpec and in the agent's config, so the agent
// needs no profile parser: it only checks the shape here and loads the
// program into each box process (sandbox::SeccompFilter::from_program).
// Empty: the box has cubby's default filter.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace cubby {

struct SeccompProgram {
  uint32_t flags = 0;  // SECCOMP_FILTER_FLAG_* for seccomp(SECCOMP_SET_MODE_FILTER)
  std::string bpf;     // the sock_filter instructions, as lowercase hex of their bytes
  bool empty() const { return bpf.empty(); }

  // 8 bytes (16 hex digits) per instruction, 1 to 4096 (BPF_MAXINSNS) of them.
  static constexpr size_t kHexPerInstruction = 16;
  static constexpr size_t kMaxInstructions = 4096;
  bool well_formed() const {
    if (bpf.empty() || bpf.size() % kHexPerInstruction != 0 || bpf.size() / kHexPerInstruction > kMaxInstructions)
      return false;
    return bpf.find_first_not_of("0123456789abcdef") == std::string::npos;
  }
};

inline void to_json(nlohmann::json& j, const SeccompProgram& p) { j = {{"flags", p.flags}, {"bpf", p.bpf}}; }
inline void from_json(const nlohmann::json& j, SeccompProgram& p) {
  p.flags = j.value("flags", uint32_t{0});
  p.bpf = j.at("bpf").get<std::string>();
}

}  // namespace cubby
