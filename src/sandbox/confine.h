// Confinement applied to every process the agent starts inside a box, just
// before exec: Docker's default capability set, no_new_privs, and a default
// seccomp filter. The filter is built once, before any fork (libseccomp
// allocates); applying it after fork is a raw prctl and async-signal-safe.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "proto/seccomp_program.h"

namespace cubby::sandbox {

class SeccompFilter {
 public:
  // Docker-like default: the dangerous syscalls (kexec, module loading,
  // mount, ptrace, bpf, keyctl, ...) fail with EPERM; everything else is allowed.
  static Result<SeccompFilter> build_default();
  // Exports a libseccomp filter context (scmp_filter_ctx) as BPF; `flags`
  // are the SECCOMP_FILTER_FLAG_* apply() loads it with. The context stays
  // the caller's.
  static Result<SeccompFilter> from_libseccomp(void* ctx, uint32_t flags);
  // A program compiled elsewhere (the agent's config), checked for shape.
  static Result<SeccompFilter> from_program(const SeccompProgram& p);
  SeccompProgram program() const;
  // Async-signal-safe. Sets no_new_privs, then installs the filter (with
  // seccomp(2) when there are flags, prctl otherwise). Returns 0 or -errno.
  int apply() const noexcept;
  size_t instruction_count() const { return prog_.size(); }

 private:
  std::vector<sock_filter> prog_;
  uint32_t flags_ = 0;
};

// Docker's default set: CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID
// SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE.
// Drops every other capability from the bounding set, clears ambient, and
// sets permitted/effective to the default set (to nothing when the target
// uid is not 0, as Docker does); inheritable is emptied (Docker since
// 20.10.14, CVE-2022-24769). Async-signal-safe (raw
// syscalls); call after setuid-related work that needs CAP_SETUID... i.e.
// the caller does setgroups/setgid/setuid with PR_SET_KEEPCAPS as needed.
// Returns 0 or -errno.
int apply_default_capabilities(bool target_is_root) noexcept;
// The same with the bounding-set drops precomputed by bounding_set_drops():
// a process whose bounding set does not change (the agent) probes it once
// instead of once per child (64 PR_CAPBSET_READ calls saved per exec).
int apply_default_capabilities(bool target_is_root, uint64_t bounding_drops) noexcept;
// The same with `keep` (a subset of the default set, as a mask of CAP_*
// bits; Docker's --cap-drop) in place of the default set: the rest of the
// default set is dropped from the bounding set too.
int apply_capabilities(bool target_is_root, uint64_t bounding_drops, uint64_t keep) noexcept;
// Docker's default set as a mask of CAP_* bits.
uint64_t default_capability_mask() noexcept;
// The capabilities outside the default set that are still in this process's
// bounding set, as a mask. Async-signal-safe (raw prctl calls).
uint64_t bounding_set_drops() noexcept;

}  // namespace cubby::sandbox
