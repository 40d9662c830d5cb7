// A box's own seccomp profile, in the OCI runtime spec's terms
// (config-linux.md "Seccomp": what config.json's linux.seccomp holds, and
// what Docker and podman write there from their profiles), and its
// compilation with libseccomp into a SeccompFilter.
//
// The profile replaces cubby's default filter (confine.h) for the box that
// asks for it; the agent loads the compiled program into each box process
// (the workload and every exec) just before exec.
//
// What compiles like runc: any default action, so allow-by-default
// profiles with deny rules work as well as Docker's deny-by-default one;
// syscall names this libseccomp does not know are skipped (and listed in
// unknown_syscalls, for a warning); a rule whose action is the default is
// skipped (libseccomp refuses it, and it changes nothing); a rule's args
// are AND'ed, unless one argument index appears twice, then each is a rule
// of its own (OR'ed), as runc does. What cubby cannot honour is an error
// naming the field: SCMP_ACT_NOTIFY (no one would answer the notification),
// unknown actions, operators, architectures and flags.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "sandbox/confine.h"

namespace cubby::sandbox {

struct SeccompArg {
  uint32_t index = 0;  // 0..5
  uint64_t value = 0, value_two = 0;
  std::string op;  // SCMP_CMP_EQ, ... (SCMP_CMP_MASKED_EQ: value is the mask, value_two the datum)
};

struct SeccompRule {
  std::vector<std::string> names;
  std::string action;                 // SCMP_ACT_*
  std::optional<uint32_t> errno_ret;  // SCMP_ACT_ERRNO / SCMP_ACT_TRACE only
  std::vector<SeccompArg> args;
};

struct SeccompProfile {
  std::string default_action;
  std::optional<uint32_t> default_errno_ret;
  std::vector<std::string> architectures;  // SCMP_ARCH_*; the native one is always there
  std::vector<std::string> flags;          // SECCOMP_FILTER_FLAG_*
  std::vector<SeccompRule> syscalls;
};

struct CompiledProfile {
  SeccompFilter filter;
  std::vector<std::string> unknown_syscalls;  // skipped, in profile order
};

// Errors are Error::invalid with the field's path inside the profile
// ("syscalls[3].action: ..."), for the caller to prefix.
Result<CompiledProfile> compile_profile(const SeccompProfile& profile);

}  // namespace cubby::sandbox
