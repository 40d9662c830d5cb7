#include "hypervisor/kvm_probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace cubby::hypervisor {
namespace {

constexpr const char* kDevice = "/dev/kvm";
constexpr uint32_t kMsrArchCapabilities = 0x10a;  // IA32_ARCH_CAPABILITIES: QEMU sets it, PVM refuses it

bool has(const std::vector<std::string>& v, const char* s) { return std::find(v.begin(), v.end(), s) != v.end(); }

std::vector<std::string> kvm_modules() {
  std::vector<std::string> out;
  DIR* d = ::opendir("/sys/module");
  if (!d) return out;
  while (dirent* e = ::readdir(d))
    if (std::strncmp(e->d_name, "kvm_", 4) == 0) out.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void read_cpu_flags(KvmFacts& f) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    line += ' ';
    f.cpu_vmx = line.find(" vmx ") != std::string::npos;
    f.cpu_svm = line.find(" svm ") != std::string::npos;
    return;  // every CPU lists the same flags
  }
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// What QEMU does first with a KVM vCPU, minus the boot: "" if all of it works.
std::string real_check() {
  UniqueFd kvm(::open(kDevice, O_RDWR | O_CLOEXEC));
  if (!kvm) return errno_text("open");
  if (int v = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0); v != KVM_API_VERSION)
    return "KVM_GET_API_VERSION answered " + std::to_string(v);
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));  // KVM's fds are O_CLOEXEC
  if (!vm) return errno_text("KVM_CREATE_VM");
  UniqueFd vcpu(::ioctl(vm.get(), KVM_CREATE_VCPU, 0));
  if (!vcpu) return errno_text("KVM_CREATE_VCPU");
  std::vector<char> buf;
  for (uint32_t n = 64;; n *= 2) {
    buf.assign(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2), 0);
    reinterpret_cast<kvm_cpuid2*>(buf.data())->nent = n;
    if (::ioctl(kvm.get(), KVM_GET_SUPPORTED_CPUID, buf.data()) == 0) break;
    if (errno != E2BIG || n >= 4096) return errno_text("KVM_GET_SUPPORTED_CPUID");
  }
  if (::ioctl(vcpu.get(), KVM_SET_CPUID2, buf.data()) != 0) return errno_text("KVM_SET_CPUID2");
  alignas(kvm_msrs) char msr[sizeof(kvm_msrs) + sizeof(kvm_msr_entry)] = {};
  reinterpret_cast<kvm_msrs*>(msr)->nmsrs = 1;
  reinterpret_cast<kvm_msrs*>(msr)->entries[0].index = kMsrArchCapabilities;
  // A feature MSR read from the system fd: 1 means KVM offers it, so QEMU
  // will set it and asserts that the set took (KVM_SET_MSRS returns how many).
  if (::ioctl(kvm.get(), KVM_GET_MSRS, msr) == 1 && ::ioctl(vcpu.get(), KVM_SET_MSRS, msr) != 1)
    return "KVM refuses to set MSR 0x10a (IA32_ARCH_CAPABILITIES), which QEMU sets on every vCPU";
  return "";
}

std::string cache_key(const KvmFacts& f) {
  std::string key = read_file("/proc/sys/kernel/random/boot_id", 256).value_or("?");
  while (!key.empty() && key.back() == '\n') key.pop_back();
  for (const auto& m : f.modules) key += " " + m;
  return key;
}

}  // namespace

KvmVerdict judge(const KvmFacts& f) {
  KvmVerdict v;
  if (!f.device) {
    v.reason = "there is no /dev/kvm (no KVM module is loaded, or the device was not passed in)";
    return v;
  }
  v.present = true;
  bool hw_module = has(f.modules, "kvm_intel") || has(f.modules, "kvm_amd");
  v.kind = has(f.modules, "kvm_pvm") ? "pvm" : hw_module ? "hardware" : "unknown";
  if (f.open_errno == EACCES || f.open_errno == EPERM)
    v.reason = "this user may not open /dev/kvm (add it to the device's group, e.g. kvm)";
  else if (f.open_errno != 0)
    v.reason = std::string("/dev/kvm does not open (") + std::strerror(f.open_errno) + ")";
  else if (v.kind == "pvm")
    v.reason = "/dev/kvm is PVM: it cannot boot a stock kernel";
  else if (v.kind == "unknown")
    v.reason = "/dev/kvm is not hardware KVM (neither kvm_intel nor kvm_amd is loaded)";
  else if (!f.cpu_vmx && !f.cpu_svm)
    v.reason = "the CPU shows neither vmx nor svm (virtualisation is off in firmware or not passed to this VM)";
  else if (!f.check_failure)
    v.reason = "/dev/kvm was not checked";
  else if (!f.check_failure->empty())
    v.reason = "/dev/kvm failed a real check (" + *f.check_failure + ")";
  v.usable = v.reason.empty();
  return v;
}

KvmFacts gather_facts(const std::string& cache_dir) {
  KvmFacts f;
  f.device = ::access(kDevice, F_OK) == 0;
  if (!f.device) return f;
  if (UniqueFd fd(::open(kDevice, O_RDWR | O_CLOEXEC)); !fd) f.open_errno = errno;
  f.modules = kvm_modules();
  read_cpu_flags(f);
  // The real check only where nothing cheaper has said no.
  KvmFacts would_check = f;
  would_check.check_failure = "";
  if (!judge(would_check).usable) return f;
  std::string cache = cache_dir.empty() ? "" : cache_dir + "/kvm-probe", key = cache_key(f);
  if (!cache.empty()) {
    if (auto text = read_file(cache, 4096); text && text->starts_with(key + "\n")) {
      f.check_failure = text->substr(key.size() + 1);
      return f;
    }
  }
  f.check_failure = real_check();
  if (!cache.empty()) (void)write_file_atomic(cache, key + "\n" + *f.check_failure, 0600);
  return f;
}

const KvmVerdict& probe(const std::string& cache_dir) {
  static const KvmVerdict v = judge(gather_facts(cache_dir));
  return v;
}

Result<std::string> choose_accel(const KvmVerdict& v, const char* env_accel) {
  std::string want = env_accel ? env_accel : "";
  if (want == "tcg") return std::string("tcg");
  if (!want.empty() && want != "kvm")
    return fail(Error::invalid("CUBBY_VM_ACCEL=" + want + " is not an accelerator cubby knows (want kvm or tcg)"));
  if (v.usable) return std::string("kvm");
  return fail(Error::invalid("--isolation vm needs KVM, and " + v.reason +
                             "; set CUBBY_VM_ACCEL=tcg to run vm boxes under slow software emulation, or use "
                             "--isolation sandbox"));
}

}  // namespace cubby::hypervisor
