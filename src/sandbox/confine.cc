#include "sandbox/confine.h"

#include "proto/launch.h"

#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "base/sys.h"
#include "base/unique_fd.h"

namespace cubby::sandbox {
namespace {

// Docker's default seccomp profile, reduced to its deny list: these fail
// with EPERM, everything else is allowed.
constexpr const char* kBlockedSyscalls[] = {
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "get_mempolicy", "init_module",
    // io_uring: a large attack surface that bypasses per-syscall filtering
    // (Docker 25 and podman block it by default too).
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mbind", "mount", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot", "request_key",
    "set_mempolicy", "setns", "settimeofday", "stime", "swapon", "swapoff", "sysfs",
    "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86",
    "vm86old",
};

// clone() creating any of these namespaces fails with EPERM.
constexpr uint64_t kCloneNsFlags[] = {
    CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(static_cast<scmp_filter_ctx>(ctx)); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

Error seccomp_error(const std::string& what, int rc) { return Error::sys("seccomp: " + what, -rc); }

// Docker's default capability set as a 64-bit mask (0x00000000a80425fb).
constexpr uint64_t bit(int cap) { return uint64_t{1} << cap; }
constexpr uint64_t kDefaultCaps =
    bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_FSETID) | bit(CAP_FOWNER) |
    bit(CAP_MKNOD) | bit(CAP_NET_RAW) | bit(CAP_SETGID) | bit(CAP_SETUID) | bit(CAP_SETFCAP) |
    bit(CAP_SETPCAP) | bit(CAP_NET_BIND_SERVICE) | bit(CAP_SYS_CHROOT) | bit(CAP_KILL) |
    bit(CAP_AUDIT_WRITE);
static_assert(kDefaultCaps == 0xa80425fbull);
static_assert(kDefaultCaps == launch::kDefaultCapabilityMask);

struct CapSets {
  uint64_t effective, permitted, inheritable;
};

int cap_get(CapSets* out) noexcept {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &hdr, data) < 0) return -errno;
  out->effective = data[0].effective | (uint64_t{data[1].effective} << 32);
  out->permitted = data[0].permitted | (uint64_t{data[1].permitted} << 32);
  out->inheritable = data[0].inheritable | (uint64_t{data[1].inheritable} << 32);
  return 0;
}

int cap_set(const CapSets& s) noexcept {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  data[0].effective = static_cast<uint32_t>(s.effective);
  data[1].effective = static_cast<uint32_t>(s.effective >> 32);
  data[0].permitted = static_cast<uint32_t>(s.permitted);
  data[1].permitted = static_cast<uint32_t>(s.permitted >> 32);
  data[0].inheritable = static_cast<uint32_t>(s.inheritable);
  data[1].inheritable = static_cast<uint32_t>(s.inheritable >> 32);
  if (::syscall(SYS_capset, &hdr, data) < 0) return -errno;
  return 0;
}

}  // namespace

Result<SeccompFilter> SeccompFilter::build_default() {
  Ctx ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return fail(Error::internal("seccomp_init failed"));
  // Cover the other x86 ABIs too (as Docker does), so 32-bit and x32
  // binaries run under the same rules instead of being killed.
  if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
    for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
      int rc = seccomp_arch_add(ctx.get(), arch);
      if (rc < 0 && rc != -EEXIST) return fail(seccomp_error("add arch", rc));
    }
  }

  for (const char* name : kBlockedSyscalls) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc < 0) return fail(seccomp_error(std::string("block ") + name, rc));
  }
  // Several rules on one syscall are OR'ed: any namespace flag blocks clone.
  // (flags is the first argument of clone on every arch added above.)
  for (uint64_t flag : kCloneNsFlags) {
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc < 0) return fail(seccomp_error("restrict clone", rc));
  }
  // clone3 passes flags in memory, out of a filter's reach: ENOSYS makes
  // glibc fall back to clone, which the rules above check.
  {
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc < 0) return fail(seccomp_error("block clone3", rc));
  }

  return from_libseccomp(ctx.get(), 0);
}

Result<SeccompFilter> SeccompFilter::from_libseccomp(void* ctx, uint32_t flags) {
  // libseccomp 2.5.4 exports only to an fd; go through a memfd.
  UniqueFd mem(::memfd_create("cubby-seccomp", MFD_CLOEXEC));
  if (!mem) return sys_fail("memfd_create");
  if (int rc = seccomp_export_bpf(static_cast<scmp_filter_ctx>(ctx), mem.get()); rc < 0)
    return fail(seccomp_error("export BPF", rc));
  if (::lseek(mem.get(), 0, SEEK_SET) < 0) return sys_fail("lseek memfd");
  std::string bytes = CUBBY_TRY(sys::read_all(mem.get()));
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0 ||
      bytes.size() / sizeof(sock_filter) > BPF_MAXINSNS)
    return fail(Error::internal("seccomp: exported BPF has a bad size: " + std::to_string(bytes.size()) +
                                " bytes (at most " + std::to_string(BPF_MAXINSNS) + " instructions)"));

  SeccompFilter f;
  f.prog_.resize(bytes.size() / sizeof(sock_filter));
  std::memcpy(f.prog_.data(), bytes.data(), bytes.size());
  f.flags_ = flags;
  return f;
}

Result<SeccompFilter> SeccompFilter::from_program(const SeccompProgram& p) {
  static_assert(sizeof(sock_filter) * 2 == SeccompProgram::kHexPerInstruction);
  static_assert(SeccompProgram::kMaxInstructions == BPF_MAXINSNS);
  if (!p.well_formed()) return fail(Error::invalid("seccomp program: not 1 to 4096 BPF instructions in hex"));
  constexpr uint32_t kKnownFlags = SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW;
  if (p.flags & ~kKnownFlags) return fail(Error::invalid("seccomp program: unknown flags " + std::to_string(p.flags)));
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string bytes(p.bpf.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<char>(nibble(p.bpf[2 * i]) << 4 | nibble(p.bpf[2 * i + 1]));
  SeccompFilter f;
  f.prog_.resize(bytes.size() / sizeof(sock_filter));
  std::memcpy(f.prog_.data(), bytes.data(), bytes.size());
  f.flags_ = p.flags;
  return f;
}

SeccompProgram SeccompFilter::program() const {
  static constexpr char kHex[] = "0123456789abcdef";
  SeccompProgram p;
  p.flags = flags_;
  const auto* b = reinterpret_cast<const unsigned char*>(prog_.data());
  p.bpf.reserve(prog_.size() * sizeof(sock_filter) * 2);
  for (size_t i = 0; i < prog_.size() * sizeof(sock_filter); ++i) {
    p.bpf.push_back(kHex[b[i] >> 4]);
    p.bpf.push_back(kHex[b[i] & 15]);
  }
  return p;
}

int SeccompFilter::apply() const noexcept {
  if (prog_.empty()) return -EINVAL;
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(prog_.size());
  prog.filter = const_cast<sock_filter*>(prog_.data());
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -errno;
  if (flags_ != 0) {
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags_, &prog) < 0) return -errno;
    return 0;
  }
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) return -errno;
  return 0;
}

uint64_t bounding_set_drops() noexcept {
  // Caps beyond CAP_LAST_CAP of the running kernel give EINVAL and caps
  // already gone read 0: neither is dropped, so this also works where the
  // bounding set is already smaller.
  uint64_t drops = 0;
  for (int cap = 0; cap < 64; ++cap) {
    if (kDefaultCaps & bit(cap)) continue;
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) drops |= bit(cap);
  }
  return drops;
}

int apply_default_capabilities(bool target_is_root) noexcept {
  return apply_default_capabilities(target_is_root, bounding_set_drops());
}

int apply_default_capabilities(bool target_is_root, uint64_t bounding_drops) noexcept {
  return apply_capabilities(target_is_root, bounding_drops, kDefaultCaps);
}

uint64_t default_capability_mask() noexcept { return kDefaultCaps; }

int apply_capabilities(bool target_is_root, uint64_t bounding_drops, uint64_t keep) noexcept {
  // Never more than the default set, whatever the caller passed.
  keep &= kDefaultCaps;
  bounding_drops |= kDefaultCaps & ~keep;
  CapSets cur;
  if (int rc = cap_get(&cur); rc < 0) return rc;
  // After setuid() with PR_SET_KEEPCAPS the effective set is empty while the
  // permitted set is kept; raise it so CAP_SETPCAP works for the drops below.
  if (cur.effective != cur.permitted) {
    CapSets raised = cur;
    raised.effective = cur.permitted;
    if (int rc = cap_set(raised); rc < 0) return rc;
  }
  // Bounding set: drop everything outside the default set. Needs CAP_SETPCAP,
  // so this comes before capset lowers the sets. Never drops a default cap,
  // whatever the caller passed.
  bounding_drops &= ~keep;
  for (int cap = 0; cap < 64; ++cap) {
    if (!(bounding_drops & bit(cap))) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) return -errno;
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
  // Docker gives a non-root user no capabilities at all. Capabilities this
  // process never had can't be granted; they stay off. Inheritable stays
  // empty, as in Docker since 20.10.14 (CVE-2022-24769): otherwise a later
  // setuid to a non-root user could regain caps by exec'ing a binary with
  // inheritable file capabilities.
  // The default set, not `keep`: setgroups below needs CAP_SETGID. For root
  // the exec makes permitted and effective the bounding set, which holds
  // only `keep` by now; another user's are cleared by setuid anyway.
  uint64_t want = target_is_root ? (kDefaultCaps & cur.permitted) : 0;
  return cap_set(CapSets{want, want, 0});
}

}  // namespace cubby::sandbox
