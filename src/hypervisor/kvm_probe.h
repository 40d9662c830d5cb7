// Can KVM boot cubby's guest on this host, and if not, why?
//
// `/dev/kvm` opening proves little: PVM (a software nested-virtualisation
// hypervisor, /sys/module/kvm_pvm) exposes a /dev/kvm that QEMU opens and
// then either aborts on (`-cpu host`: "failed to set MSR 0x10a") or boots a
// stock kernel that spins forever; a container may pass the device through
// without the rights to use it; a module may be loaded with VT-x/AMD-V off in
// firmware. So the verdict is judged from what the kernel says (which KVM
// module is loaded, the CPU's vmx/svm flags) and, where those say "hardware",
// from a real check: KVM_CREATE_VM + a vCPU + the CPUID and MSR set QEMU
// makes (the MSR QEMU aborts on above included). The real check costs ~13 ms
// (PVM host), so its answer is cached in the home, keyed by the boot id and
// the loaded modules; every other part costs microseconds, so CLI calls stay
// fast and no call ever boots a guest.
//
// One probe serves `--isolation auto`, `cubby info` and the vm backend.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::hypervisor {

// What the host says, gathered by gather_facts(); unit tests build their own.
struct KvmFacts {
  bool device = false;               // /dev/kvm exists
  int open_errno = 0;                // 0: it opened read-write
  std::vector<std::string> modules;  // KVM modules in /sys/module: kvm_intel, kvm_amd, kvm_pvm, ...
  bool cpu_vmx = false, cpu_svm = false;
  // The real check's answer, when it ran: "" passed, else what failed.
  std::optional<std::string> check_failure;
};

struct KvmVerdict {
  bool present = false;  // a /dev/kvm exists
  bool usable = false;   // KVM can boot cubby's guest
  // "hardware" (VT-x/AMD-V), "pvm", "unknown" (a KVM whose flavour we cannot
  // tell), or "none" (no /dev/kvm).
  std::string kind = "none";
  std::string reason;  // why not usable ("" when usable), one clause: "/dev/kvm is PVM: ..."
};

// The verdict for a set of facts (pure; the unit tests' entry point).
KvmVerdict judge(const KvmFacts& facts);

// Reads this host. The real check runs only where the kernel's facts say
// hardware KVM and the device opens; `cache_dir` (the home; "" for none)
// keeps its answer across calls.
KvmFacts gather_facts(const std::string& cache_dir);

// judge(gather_facts(cache_dir)), once per process.
const KvmVerdict& probe(const std::string& cache_dir);

// The accelerator a vm box uses here. `env_accel` is CUBBY_VM_ACCEL: "tcg"
// runs under TCG whatever /dev/kvm is (slow software emulation, e.g. tests on
// hosts without usable KVM); "kvm" insists on KVM; unset picks KVM where the
// verdict says it can boot the guest. Otherwise an error naming the cause and
// the way out.
Result<std::string> choose_accel(const KvmVerdict& verdict, const char* env_accel);

}  // namespace cubby::hypervisor
