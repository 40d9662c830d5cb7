// Seccomp filter and capability drop, each tried in a forked child (both are
// irreversible). Children report through their exit code or a pipe.
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/sys.h"
#include "sandbox/confine.h"
#include "sandbox/seccomp_profile.h"

using cubby::sandbox::SeccompFilter;
using cubby::sandbox::apply_default_capabilities;

namespace {

// Runs fn in a forked child; returns the raw wait status. Anything fn writes
// to out_fd ends up in *out.
int run_in_child(const std::function<int(int out_fd)>& fn, std::string* out = nullptr) {
  auto pipe = cubby::sys::make_pipe();
  if (!pipe) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    pipe->first.reset();
    int code = fn(pipe->second.get());
    ::_exit(code);
  }
  pipe->second.reset();
  auto text = cubby::sys::read_all(pipe->first.get());
  if (out && text) *out = *text;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status); }

// Expects a syscall result of -1 with errno e.
bool fails_with(long rc, int e) { return rc == -1 && errno == e; }

long raw_clone(unsigned long flags) { return ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr); }

// i386 syscall through int 0x80 (returns -errno).
long int80(long nr, long a1 = 0, long a2 = 0) {
  long ret;
  asm volatile("int $0x80" : "=a"(ret) : "0"(nr), "b"(a1), "c"(a2) : "memory", "r8", "r9", "r10", "r11");
  return ret;
}
constexpr long kI386Getpid = 20;
constexpr long kI386Unshare = 310;

uint64_t status_field(const std::string& status, const std::string& key) {
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::strtoull(line.c_str() + key.size() + 1, nullptr, 16);
  }
  ADD_FAILURE() << key << " not in /proc/self/status";
  return ~uint64_t{0};
}

int dump_status(int fd) {
  auto s = cubby::read_file("/proc/self/status");
  if (!s) return 90;
  return cubby::sys::write_all(fd, s->data(), s->size()) ? 0 : 91;
}

constexpr uint64_t kDockerCaps = 0x00000000a80425fbull;

}  // namespace

TEST(SeccompFilter, BuildsANonEmptyProgram) {
  auto f = SeccompFilter::build_default();
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_GT(f->instruction_count(), 50u);
}

TEST(SeccompFilter, UnshareWorksWithoutTheFilter) {
  // Makes the EPERM below meaningful: as root, unshare normally succeeds.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  int st = run_in_child([](int) { return ::unshare(CLONE_NEWNS) == 0 ? 0 : 1; });
  EXPECT_EQ(exit_code(st), 0);
}

TEST(SeccompFilter, BlocksDangerousSyscallsAndAllowsTheRest) {
  auto f = SeccompFilter::build_default();
  ASSERT_TRUE(f.has_value()) << f.error().message();
  int st = run_in_child([&](int) {
    if (f->apply() != 0) return 2;
    if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 3;
    if (!fails_with(::unshare(CLONE_NEWNS), EPERM)) return 10;
    if (!fails_with(::mount("none", "/mnt", "tmpfs", 0, nullptr), EPERM)) return 11;
    if (!fails_with(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM)) return 12;
    if (!fails_with(::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), EPERM))
      return 13;
    if (!fails_with(::syscall(SYS_bpf, 0, nullptr, 0), EPERM)) return 14;
    if (!fails_with(::setns(-1, 0), EPERM)) return 15;
    if (!fails_with(::umount2("/", MNT_DETACH), EPERM)) return 16;
    if (!fails_with(raw_clone(CLONE_NEWUTS | SIGCHLD), EPERM)) return 20;
    if (!fails_with(raw_clone(CLONE_NEWUSER | CLONE_NEWPID | SIGCHLD), EPERM)) return 21;
    clone_args ca{};
    ca.exit_signal = SIGCHLD;
    if (!fails_with(::syscall(SYS_clone3, &ca, sizeof ca), ENOSYS)) return 22;
    // Allowed: plain syscalls, I/O, and fork (clone without namespace flags).
    if (::getpid() != ::syscall(SYS_getpid) || ::getpid() <= 1) return 30;
    int p[2];
    if (::pipe(p) != 0) return 31;
    if (::write(p[1], "x", 1) != 1) return 32;
    char c;
    if (::read(p[0], &c, 1) != 1 || c != 'x') return 33;
    pid_t child = ::fork();
    if (child < 0) return 34;
    if (child == 0) ::_exit(7);
    int cst = 0;
    if (::waitpid(child, &cst, 0) != child || !WIFEXITED(cst) || WEXITSTATUS(cst) != 7) return 35;
    return 0;
  });
  EXPECT_EQ(exit_code(st), 0) << "see the numbered checks in the test";
}

TEST(SeccompFilter, CoversThe32BitAbi) {
  // Skip where the kernel has no IA-32 emulation (int 0x80 faults).
  int probe = run_in_child([](int) { return int80(kI386Getpid) == ::getpid() ? 0 : 1; });
  if (exit_code(probe) != 0) GTEST_SKIP() << "no IA-32 syscall entry";
  auto f = SeccompFilter::build_default();
  ASSERT_TRUE(f.has_value()) << f.error().message();
  int st = run_in_child([&](int) {
    if (f->apply() != 0) return 2;
    if (int80(kI386Getpid) != ::getpid()) return 3;  // allowed, not killed
    if (int80(kI386Unshare, CLONE_NEWNS) != -EPERM) return 4;
    return 0;
  });
  EXPECT_EQ(exit_code(st), 0);
}

TEST(Capabilities, RootGetsDockersDefaultSet) {
  std::string status;
  int st = run_in_child(
      [](int fd) {
        if (apply_default_capabilities(true) != 0) return 2;
        return dump_status(fd);
      },
      &status);
  ASSERT_EQ(exit_code(st), 0);
  uint64_t host_bnd = status_field(cubby::read_file("/proc/self/status").value(), "CapBnd");
  EXPECT_EQ(status_field(status, "CapBnd"), kDockerCaps & host_bnd);
  EXPECT_EQ(status_field(status, "CapEff"), kDockerCaps & host_bnd);
  EXPECT_EQ(status_field(status, "CapPrm"), kDockerCaps & host_bnd);
  EXPECT_EQ(status_field(status, "CapInh"), 0u);
  EXPECT_EQ(status_field(status, "CapAmb"), 0u);
}

TEST(Capabilities, NonRootGetsNone) {
  std::string status;
  int st = run_in_child(
      [](int fd) {
        if (apply_default_capabilities(false) != 0) return 2;
        return dump_status(fd);
      },
      &status);
  ASSERT_EQ(exit_code(st), 0);
  EXPECT_EQ(status_field(status, "CapBnd") & ~kDockerCaps, 0u);
  EXPECT_EQ(status_field(status, "CapEff"), 0u);
  EXPECT_EQ(status_field(status, "CapPrm"), 0u);
  EXPECT_EQ(status_field(status, "CapInh"), 0u);
}

TEST(Capabilities, WorksAfterSetuidWithKeepCaps) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  std::string status;
  int st = run_in_child(
      [](int fd) {
        // Effective is emptied by setuid; permitted is kept.
        if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return 3;
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 4;
        if (int rc = apply_default_capabilities(false); rc != 0) return 10 + (-rc & 0x3f);
        return dump_status(fd);
      },
      &status);
  ASSERT_EQ(exit_code(st), 0);
  EXPECT_EQ(status_field(status, "CapBnd") & ~kDockerCaps, 0u);
  EXPECT_EQ(status_field(status, "CapEff"), 0u);
  EXPECT_EQ(status_field(status, "CapPrm"), 0u);
}

// ---- A box's own profile (sandbox/seccomp_profile.h) ----
namespace {
using cubby::sandbox::SeccompProfile;

SeccompProfile deny_getpgid_of(uint64_t pid, uint32_t err) {
  SeccompProfile p;
  p.default_action = "SCMP_ACT_ALLOW";
  p.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
  p.syscalls.push_back({{"getpgid", "not_a_syscall"}, "SCMP_ACT_ERRNO", err, {{0, pid, 0, "SCMP_CMP_EQ"}}});
  return p;
}
}  // namespace

// Compiled on the host, carried as hex (proto/seccomp_program.h), loaded by
// the agent: the args condition and the chosen errno hold after the trip.
TEST(SeccompProfile, ACompiledProfileSurvivesTheTripAndDeniesWhatItSays) {
  auto c = cubby::sandbox::compile_profile(deny_getpgid_of(424242, 42));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->unknown_syscalls, std::vector<std::string>{"not_a_syscall"});
  auto program = c->filter.program();
  ASSERT_TRUE(program.well_formed());
  auto f = SeccompFilter::from_program(program);
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->instruction_count(), c->filter.instruction_count());
  int status = run_in_child([&](int) {
    if (f->apply() != 0) return 10;
    if (!fails_with(::getpgid(424242), 42)) return 11;  // the condition holds: the chosen errno
    if (!fails_with(::getpgid(424243), ESRCH)) return 12;  // another pid: the kernel's own answer
    return ::getpgid(0) == ::getpgrp() ? 0 : 13;
  });
  EXPECT_EQ(exit_code(status), 0);
  // A malformed program never loads.
  program.bpf.pop_back();
  EXPECT_FALSE(SeccompFilter::from_program(program));
}

TEST(SeccompProfile, WhatCannotBeHonouredIsAnErrorNamingTheField) {
  auto err = [](SeccompProfile p) {
    auto c = cubby::sandbox::compile_profile(p);
    return c ? std::string("compiled") : c.error().message();
  };
  auto p = deny_getpgid_of(1, 1);
  p.syscalls[0].action = "SCMP_ACT_NOTIFY";
  EXPECT_EQ(err(p).rfind("syscalls[0].action: SCMP_ACT_NOTIFY is not supported by cubby", 0), 0u) << err(p);
  p = deny_getpgid_of(1, 1);
  p.syscalls[0].args[0].op = "SCMP_CMP_SOMETIMES";
  EXPECT_EQ(err(p), "syscalls[0].args[0].op: unknown operator \"SCMP_CMP_SOMETIMES\"");
  p = deny_getpgid_of(1, 5000);
  EXPECT_EQ(err(p), "syscalls[0].action: errnoRet 5000 is above 4095");
  p = deny_getpgid_of(1, 1);
  p.architectures.push_back("SCMP_ARCH_Z80");
  EXPECT_EQ(err(p), "architectures[3]: unknown architecture \"SCMP_ARCH_Z80\"");
  p = deny_getpgid_of(1, 1);
  p.flags = {"SECCOMP_FILTER_FLAG_NEW_LISTENER"};
  EXPECT_EQ(err(p), "flags[0]: unknown or unsupported flag \"SECCOMP_FILTER_FLAG_NEW_LISTENER\"");
  p = deny_getpgid_of(1, 1);
  p.default_action = "SCMP_ACT_ERRNO";  // deny by default, with an errno of its own
  p.default_errno_ret = 38;
  p.syscalls[0].action = "SCMP_ACT_ALLOW";
  p.syscalls[0].errno_ret.reset();
  EXPECT_EQ(err(p), "compiled");
}
