// The KVM probe's verdicts (hypervisor/kvm_probe.h), from hand-made facts:
// each kind of host the probe must tell apart, and what the vm backend then
// does with it.
#include "hypervisor/kvm_probe.h"

#include <gtest/gtest.h>

namespace cubby::hypervisor {
namespace {

KvmFacts hardware_host() {
  KvmFacts f;
  f.device = true;
  f.modules = {"kvm_intel"};
  f.cpu_vmx = true;
  f.check_failure = "";
  return f;
}

TEST(KvmProbe, NoDeviceIsAbsent) {
  KvmFacts f;
  auto v = judge(f);
  EXPECT_FALSE(v.present);
  EXPECT_FALSE(v.usable);
  EXPECT_EQ(v.kind, "none");
  EXPECT_NE(v.reason.find("no /dev/kvm"), std::string::npos) << v.reason;
}

TEST(KvmProbe, NoPermissionIsPresentButUnusable) {
  KvmFacts f = hardware_host();
  f.open_errno = EACCES;
  f.check_failure.reset();  // gather_facts never runs the check on a device it cannot open
  auto v = judge(f);
  EXPECT_TRUE(v.present);
  EXPECT_FALSE(v.usable);
  EXPECT_EQ(v.kind, "hardware");
  EXPECT_NE(v.reason.find("may not open /dev/kvm"), std::string::npos) << v.reason;
}

TEST(KvmProbe, PvmIsPresentButCannotBootAStockKernel) {
  // This project's machines: kvm + kvm_pvm, no vmx/svm, and a device that opens.
  KvmFacts f;
  f.device = true;
  f.modules = {"kvm_pvm"};
  auto v = judge(f);
  EXPECT_TRUE(v.present);
  EXPECT_FALSE(v.usable);
  EXPECT_EQ(v.kind, "pvm");
  EXPECT_EQ(v.reason, "/dev/kvm is PVM: it cannot boot a stock kernel");
  // Even where its CPU flags claim vmx and the ioctls pass, PVM is PVM.
  f.cpu_vmx = true;
  f.check_failure = "";
  EXPECT_FALSE(judge(f).usable);
}

TEST(KvmProbe, HardwareKvmThatPassesTheRealCheckIsUsable) {
  auto v = judge(hardware_host());
  EXPECT_TRUE(v.present);
  EXPECT_TRUE(v.usable);
  EXPECT_EQ(v.kind, "hardware");
  EXPECT_EQ(v.reason, "");
  KvmFacts amd = hardware_host();
  amd.modules = {"kvm_amd"};
  amd.cpu_vmx = false;
  amd.cpu_svm = true;
  EXPECT_TRUE(judge(amd).usable);
}

TEST(KvmProbe, HardwareKvmThatFailsTheRealCheckIsUnusable) {
  KvmFacts f = hardware_host();
  f.check_failure = "KVM_CREATE_VCPU: Invalid argument";
  auto v = judge(f);
  EXPECT_FALSE(v.usable);
  EXPECT_NE(v.reason.find("failed a real check (KVM_CREATE_VCPU"), std::string::npos) << v.reason;
  f.check_failure.reset();  // not checked is not a yes
  EXPECT_FALSE(judge(f).usable);
}

TEST(KvmProbe, UnknownFlavourOrNoCpuSupportIsUnusable) {
  KvmFacts f = hardware_host();
  f.modules = {};
  auto v = judge(f);
  EXPECT_EQ(v.kind, "unknown");
  EXPECT_FALSE(v.usable);
  f = hardware_host();
  f.cpu_vmx = false;  // module loaded, VT-x off in firmware or not passed to this VM
  v = judge(f);
  EXPECT_FALSE(v.usable);
  EXPECT_NE(v.reason.find("neither vmx nor svm"), std::string::npos) << v.reason;
}

TEST(KvmProbe, AcceleratorChoice) {
  KvmFacts pvm;
  pvm.device = true;
  pvm.modules = {"kvm_pvm"};
  auto bad = judge(pvm), good = judge(hardware_host());
  EXPECT_EQ(choose_accel(good, nullptr).value(), "kvm");
  EXPECT_EQ(choose_accel(good, "kvm").value(), "kvm");
  EXPECT_EQ(choose_accel(good, "tcg").value(), "tcg");
  EXPECT_EQ(choose_accel(bad, "tcg").value(), "tcg") << "TCG runs even though /dev/kvm exists";
  auto refused = choose_accel(bad, nullptr);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(refused.error().message().find("PVM"), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().message().find("CUBBY_VM_ACCEL=tcg"), std::string::npos) << refused.error().message();
  EXPECT_FALSE(choose_accel(bad, "kvm"));
  auto typo = choose_accel(good, "tgc");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().message().find("CUBBY_VM_ACCEL=tgc"), std::string::npos);
}

TEST(KvmProbe, ThisHostsFactsAreConsistent) {
  // Whatever this machine is, the verdict follows from what gather_facts saw
  // (PVM here: present, not usable, kind "pvm").
  auto f = gather_facts("");
  auto v = judge(f);
  EXPECT_EQ(v.present, f.device);
  if (v.usable) {
    EXPECT_EQ(v.kind, "hardware");
  } else {
    EXPECT_FALSE(v.reason.empty());
  }
}

}  // namespace
}  // namespace cubby::hypervisor
