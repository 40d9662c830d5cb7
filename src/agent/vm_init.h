// The agent as init (PID 1) of a micro-VM: see vm_init.cc.
#pragma once

namespace cubby::agent {

// True when this process is the kernel's init in a cubby VM.
bool is_vm_init();
// Never returns: powers the VM off with the workload's exit code sent out.
[[noreturn]] void run_vm_init();

}  // namespace cubby::agent
