#include "sandbox/seccomp_profile.h"

#include <linux/seccomp.h>
#include <seccomp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <memory>

namespace cubby::sandbox {
namespace {

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(static_cast<scmp_filter_ctx>(ctx)); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

Error bad(const std::string& field, const std::string& why) { return Error::invalid(field + ": " + why); }

// The kernel's errno range: SECCOMP_RET_ERRNO's data is returned as -errno.
constexpr uint32_t kMaxErrno = 4095;

// An OCI action name (and its errnoRet) as a libseccomp action.
Result<uint32_t> action_of(const std::string& field, const std::string& name, std::optional<uint32_t> errno_ret) {
  if (name == "SCMP_ACT_NOTIFY")
    return fail(bad(field, "SCMP_ACT_NOTIFY is not supported by cubby (no seccomp agent would answer the "
                           "notifications: linux.seccomp.listenerPath)"));
  if (errno_ret && *errno_ret > kMaxErrno) return fail(bad(field, "errnoRet " + std::to_string(*errno_ret) + " is above 4095"));
  const uint32_t err = errno_ret.value_or(EPERM);
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(err);
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(err);
  if (errno_ret) return fail(bad(field, "errnoRet is only taken with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not " + name));
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  return fail(bad(field, "unknown action \"" + name + "\""));
}

Result<scmp_compare> op_of(const std::string& field, const std::string& name) {
  static const std::array<std::pair<const char*, scmp_compare>, 7> kOps = {{{"SCMP_CMP_NE", SCMP_CMP_NE},
                                                                            {"SCMP_CMP_LT", SCMP_CMP_LT},
                                                                            {"SCMP_CMP_LE", SCMP_CMP_LE},
                                                                            {"SCMP_CMP_EQ", SCMP_CMP_EQ},
                                                                            {"SCMP_CMP_GE", SCMP_CMP_GE},
                                                                            {"SCMP_CMP_GT", SCMP_CMP_GT},
                                                                            {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}}};
  for (const auto& [n, op] : kOps)
    if (name == n) return op;
  return fail(bad(field, "unknown operator \"" + name + "\""));
}

// SCMP_ARCH_X86_64 -> libseccomp's "x86_64" (every OCI name is libseccomp's
// own, upper-cased, after the prefix).
Result<uint32_t> arch_of(const std::string& field, const std::string& name) {
  const std::string prefix = "SCMP_ARCH_";
  if (name.rfind(prefix, 0) == 0) {
    std::string lower = name.substr(prefix.size());
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (uint32_t a = seccomp_arch_resolve_name(lower.c_str()); a != 0) return a;
  }
  return fail(bad(field, "unknown architecture \"" + name + "\""));
}

Result<uint32_t> flags_of(const std::vector<std::string>& flags) {
  uint32_t out = 0;
  for (size_t i = 0; i < flags.size(); ++i) {
    const auto& f = flags[i];
    // TSYNC is what every box process has anyway: they are single-threaded
    // when the agent loads the filter, just before exec.
    if (f == "SECCOMP_FILTER_FLAG_TSYNC") out |= SECCOMP_FILTER_FLAG_TSYNC;
    else if (f == "SECCOMP_FILTER_FLAG_LOG") out |= SECCOMP_FILTER_FLAG_LOG;
    else if (f == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") out |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    else return fail(bad("flags[" + std::to_string(i) + "]", "unknown or unsupported flag \"" + f + "\""));
  }
  return out;
}

Error libseccomp_error(const std::string& field, const std::string& what, int rc) {
  return Error::invalid(field + ": libseccomp: " + what + ": " + std::strerror(-rc));
}

}  // namespace

Result<CompiledProfile> compile_profile(const SeccompProfile& p) {
  const uint32_t default_action = CUBBY_TRY(action_of("defaultAction", p.default_action, p.default_errno_ret));
  const uint32_t flags = CUBBY_TRY(flags_of(p.flags));
  Ctx ctx(seccomp_init(default_action));
  if (!ctx) return fail(Error::internal("seccomp_init failed"));
  for (size_t i = 0; i < p.architectures.size(); ++i) {
    const std::string field = "architectures[" + std::to_string(i) + "]";
    uint32_t arch = CUBBY_TRY(arch_of(field, p.architectures[i]));
    int rc = seccomp_arch_add(ctx.get(), arch);
    if (rc < 0 && rc != -EEXIST) return fail(libseccomp_error(field, "add " + p.architectures[i], rc));
  }

  CompiledProfile out;
  for (size_t i = 0; i < p.syscalls.size(); ++i) {
    const auto& r = p.syscalls[i];
    const std::string field = "syscalls[" + std::to_string(i) + "]";
    const uint32_t action = CUBBY_TRY(action_of(field + ".action", r.action, r.errno_ret));
    std::vector<scmp_arg_cmp> conds;
    std::array<int, 6> per_index{};
    for (size_t k = 0; k < r.args.size(); ++k) {
      const auto& a = r.args[k];
      const std::string af = field + ".args[" + std::to_string(k) + "]";
      if (a.index > 5) return fail(bad(af + ".index", "must be 0 to 5"));
      conds.push_back({a.index, CUBBY_TRY(op_of(af + ".op", a.op)), a.value, a.value_two});
      ++per_index[a.index];
    }
    // Checked before the names, so a bad rule is refused even when none of
    // its names is known here.
    if (action == default_action) continue;
    const bool or_each = conds.size() > 1 && std::any_of(per_index.begin(), per_index.end(), [](int n) { return n > 1; });
    for (const auto& name : r.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) {
        out.unknown_syscalls.push_back(name);
        continue;
      }
      auto add = [&](unsigned n, const scmp_arg_cmp* c) -> Result<void> {
        int rc = seccomp_rule_add_array(ctx.get(), action, nr, n, c);
        if (rc < 0) return fail(libseccomp_error(field, "add a rule for " + name, rc));
        return {};
      };
      if (or_each) {
        for (const auto& c : conds) CUBBY_TRYV(add(1, &c));
      } else {
        CUBBY_TRYV(add(static_cast<unsigned>(conds.size()), conds.data()));
      }
    }
  }
  out.filter = CUBBY_TRY(SeccompFilter::from_libseccomp(ctx.get(), flags));
  return out;
}

}  // namespace cubby::sandbox
