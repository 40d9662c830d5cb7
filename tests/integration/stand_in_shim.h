// A process the ownership probe takes for a box's shim by its argv: the
// stand_in helper run as [<tmp dir>/cubby-shim, BOX_ID]. It lives until
// stop() (which closes its stdin and reaps it) or destruction, and is
// outside any cgroup, so only a signal to it (as rm -f sends) ends it early.
#pragma once

#include <unistd.h>

#include <string>

#include "base/process.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {

class StandInShim {
 public:
  explicit StandInShim(const std::string& box_id) {
    char tmpl[] = "/tmp/cubby-own-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    std::string fake = dir_ + "/cubby-shim";
    if (::symlink((bin_dir() + "/stand_in").c_str(), fake.c_str()) != 0) return;
    auto pipe = sys::make_pipe();
    if (!pipe) return;
    SpawnSpec s;
    s.argv = {fake, box_id};
    s.fds = {pipe->first.get(), -1, -1};
    auto child = spawn(s);
    if (!child) return;
    child_ = std::move(*child);
    stdin_ = std::move(pipe->second);
  }
  StandInShim(const StandInShim&) = delete;
  StandInShim& operator=(const StandInShim&) = delete;
  ~StandInShim() {
    stop();
    if (!dir_.empty()) {
      ::unlink((dir_ + "/cubby-shim").c_str());
      ::rmdir(dir_.c_str());
    }
  }

  bool ok() const { return child_.valid(); }
  pid_t pid() const { return child_.pid(); }
  // Lets it exit (EOF on its stdin) and reaps it; its pid stays readable.
  void stop() {
    stdin_.reset();
    if (child_.valid() && !stopped_) (void)child_.wait();
    stopped_ = true;
  }

 private:
  std::string dir_;
  UniqueFd stdin_;
  ChildProcess child_;
  bool stopped_ = false;
};

}  // namespace cubby::test
