// The shim's view of an isolation backend. The sandbox backend (namespaces)
// implements it now; the vm backend (QEMU microvm) implements the same
// interface, so the shim's supervision, readiness and cleanup logic is
// shared and every CLI command behaves the same on both.
#pragma once

#include <memory>
#include <string>

#include "base/error.h"
#include "base/process.h"
#include "proto/launch.h"
#include "runtime/box_spec.h"

namespace cubby::shim {

class Network;

// A launched box: the supervised process (agent as PID 1, or the VMM) and
// the resources that must be released when it ends.
class BoxInstance {
 public:
  virtual ~BoxInstance() = default;
  // pidfd of the supervised process; readable when it exits.
  virtual int pidfd() const = 0;
  // Reaps the supervised process once pidfd() is readable.
  virtual Result<ExitStatus> reap() = 0;
  // Lets the workload start (after the host's handshake succeeded).
  virtual Result<void> allow_start() = 0;
  // Graceful stop request: delivered to the workload.
  virtual Result<void> request_stop(int sig) = 0;
  // Ends the box now (SIGKILL to the supervised process).
  virtual Result<void> kill() = 0;
  // A stream of diagnostics (the agent's stderr or the VM console); -1 if none.
  virtual int diag_fd() const = 0;
  // Why the box ended when it left no diagnostics of its own ("" if unknown).
  virtual std::string failure_hint() const { return ""; }
  // Whether the OOM killer killed a process of the workload (the main
  // process or an exec) while the box ran. Read after reap(), before
  // cleanup(). The vm backend does not tell yet (the guest's kernel kills).
  virtual bool oom_killed() { return false; }
  // Where the shim copies the VM console for `cubby logs` (the write end of
  // a pipe into the box log, shim/box_log.h); invalid if the backend has no
  // console of its own.
  virtual Result<UniqueFd> console_log() { return UniqueFd(); }
  // A line of the shim's own into the box log (the console stream).
  virtual void note_in_log(const std::string& line) = 0;
  // The box's --network default helper (nullptr with --network none): the
  // shim watches it and starts it again if it dies while the box runs.
  virtual Network* network() { return nullptr; }
  // Releases cgroups, helper processes, sockets. Idempotent.
  virtual void cleanup() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Result<std::unique_ptr<BoxInstance>> launch(const ShimConfig& cfg) = 0;
};

std::unique_ptr<Backend> make_sandbox_backend();
// QEMU microvm with its own guest kernel (vm_backend.cc).
std::unique_ptr<Backend> make_vm_backend();

using launch::kAgentSocket;
inline constexpr const char* kBoxLog = "box.log";

}  // namespace cubby::shim
