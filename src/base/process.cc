#include "base/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <linux/magic.h>
#include <unistd.h>

#include <charconv>
#include <cstring>

#include "base/fs.h"
#include "base/sys.h"

namespace cubby {

ExitStatus ExitStatus::from_wait_status(int status) {
  ExitStatus s;
  if (WIFSIGNALED(status)) {
    s.signaled = true;
    s.signal = WTERMSIG(status);
  } else {
    s.code = WEXITSTATUS(status);
  }
  return s;
}

Result<ProcStat> process_stat(pid_t pid) {
  auto text = CUBBY_TRY(read_file("/proc/" + std::to_string(pid) + "/stat"));
  // The fields after "(comm)"; comm may contain spaces and ')'. Field 3
  // (state) comes first, field 22 (starttime) is the 20th.
  auto close = text.rfind(')');
  if (close == std::string::npos) return fail(Error::protocol("malformed /proc stat"));
  ProcStat st;
  size_t pos = close + 1;
  for (int field = 0; field < 20; ++field) {
    pos = text.find_first_not_of(' ', pos);
    if (pos == std::string::npos) return fail(Error::protocol("short /proc stat"));
    size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    if (field == 0) st.state = text[pos];
    if (field == 19) {
      auto r = std::from_chars(text.data() + pos, text.data() + end, st.start_time);
      if (r.ec != std::errc() || r.ptr != text.data() + end) return fail(Error::protocol("malformed /proc stat"));
    }
    pos = end;
  }
  return st;
}

Result<uint64_t> process_start_time(pid_t pid) { return CUBBY_TRY(process_stat(pid)).start_time; }

Result<char> process_state(pid_t pid) { return CUBBY_TRY(process_stat(pid)).state; }

Result<std::vector<std::string>> process_argv(pid_t pid) {
  auto raw = CUBBY_TRY(read_file("/proc/" + std::to_string(pid) + "/cmdline"));
  std::vector<std::string> argv;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    argv.emplace_back(raw, start, end - start);
    start = end + 1;
  }
  return argv;
}

// ---------------------------------------------------------------------------
// close_fds_except: runs between fork and exec. Only raw syscalls, no
// allocation, no locks, no errno-dependent library calls.

namespace {
struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

bool is_kept(int fd, const int* keep, int nkeep) {
  for (int i = 0; i < nkeep; ++i)
    if (keep[i] == fd) return true;
  return false;
}

bool close_via_close_range(int lowfd, const int* keep, int nkeep) {
  int from = lowfd;
  for (int i = 0; i < nkeep; ++i) {
    if (keep[i] < from) continue;
    if (keep[i] > from && ::syscall(SYS_close_range, from, keep[i] - 1, 0) < 0) return false;
    from = keep[i] + 1;
  }
  return ::syscall(SYS_close_range, from, ~0U, 0) == 0;
}

bool close_via_proc(int lowfd, const int* keep, int nkeep) {
  int dfd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, "/proc/self/fd",
                                       O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd < 0) return false;
  struct statfs sfs;
  if (::fstatfs(dfd, &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC) {
    ::close(dfd);
    return false;
  }
  alignas(linux_dirent64) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n < 0) {
      ::close(dfd);
      return false;  // an error is not EOF: let the caller brute-force
    }
    if (n == 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<linux_dirent64*>(buf + off);
      off += d->d_reclen;
      int fd = 0;
      const char* p = d->d_name;
      if (*p < '0' || *p > '9') continue;
      for (; *p >= '0' && *p <= '9'; ++p) fd = fd * 10 + (*p - '0');
      if (fd >= lowfd && fd != dfd && !is_kept(fd, keep, nkeep)) ::close(fd);
    }
  }
  ::close(dfd);
  return true;
}
}  // namespace

void close_fds_except(int lowfd, const int* keep, int nkeep) {
  if (close_via_close_range(lowfd, keep, nkeep)) return;
  if (close_via_proc(lowfd, keep, nkeep)) return;
  struct rlimit rl;
  long max = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
    max = static_cast<long>(rl.rlim_max);
  for (long fd = lowfd; fd < max; ++fd)
    if (!is_kept(static_cast<int>(fd), keep, nkeep)) ::close(static_cast<int>(fd));
}

// ---------------------------------------------------------------------------

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    kill_and_reap();
    pid_ = o.pid_;
    pidfd_ = std::move(o.pidfd_);
    o.pid_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() { kill_and_reap(); }

void ChildProcess::kill_and_reap() {
  if (!pidfd_.valid()) return;
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  siginfo_t si{};
  while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED) < 0 && errno == EINTR) {
  }
  pidfd_.reset();
}

Result<void> ChildProcess::signal(int sig) {
  if (!pidfd_.valid()) return fail(Error::internal("signal: no child"));
  return sys::pidfd_send_signal(pidfd_.get(), sig);
}

Result<ExitStatus> ChildProcess::wait() {
  if (!pidfd_.valid()) return fail(Error::internal("wait: no child"));
  siginfo_t si{};
  while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED) < 0) {
    if (errno != EINTR) return sys_fail("waitid");
  }
  pidfd_.reset();
  ExitStatus s;
  if (si.si_code == CLD_EXITED) {
    s.code = si.si_status;
  } else {
    s.signaled = true;
    s.signal = si.si_status;
  }
  return s;
}

Result<std::optional<ExitStatus>> ChildProcess::try_wait() {
  if (!pidfd_.valid()) return fail(Error::internal("wait: no child"));
  siginfo_t si{};
  if (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED | WNOHANG) < 0)
    return sys_fail("waitid");
  if (si.si_pid == 0) return std::optional<ExitStatus>{};
  pidfd_.reset();
  ExitStatus s;
  if (si.si_code == CLD_EXITED) {
    s.code = si.si_status;
  } else {
    s.signaled = true;
    s.signal = si.si_status;
  }
  return std::optional<ExitStatus>{s};
}

UniqueFd ChildProcess::release() {
  pid_ = -1;
  return std::move(pidfd_);
}

}  // namespace cubby
