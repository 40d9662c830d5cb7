// The agent's config (JSON from the shim: the sandbox's config pipe, the vm's
// control channel): the parts both backends share.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "agent/box_init.h"
#include "agent/server.h"
#include "proto/frame.h"

namespace cubby::agent {

// The workload ("main"), hold, hostname and network of `cfg` into opts and
// plan. Throws nlohmann::json's exceptions on a malformed config.
inline void read_common_config(const proto::Json& cfg, AgentOptions& opts, RootfsPlan& plan) {
  const auto& m = cfg.at("main");
  opts.main.argv = m.at("argv").get<std::vector<std::string>>();
  opts.main.env = m.value("env", std::vector<std::string>{});
  opts.main.cwd = m.value("cwd", std::string("/"));
  opts.main.user = m.value("user", std::string());
  opts.main.tty = m.value("tty", false);
  opts.hold = cfg.value("hold", false);
  opts.cap_drop = cfg.value("cap_drop", uint64_t{0});
  if (cfg.contains("seccomp")) {
    auto f = sandbox::SeccompFilter::from_program(cfg["seccomp"].get<SeccompProgram>());
    if (!f) throw std::runtime_error(f.error().message());
    opts.box_seccomp = std::move(*f);
  }
  plan.hostname = cfg.value("hostname", std::string());
  plan.network_default = cfg.value("network", std::string("none")) == "default";
  for (const auto& t : cfg.value("joined_ns", std::vector<std::string>{}))
    if (t == "network") plan.joined_net = true;
  plan.resolv_conf = cfg.value("resolv_conf", std::string());
  plan.extra_hosts = cfg.value("extra_hosts", std::vector<std::string>{});
  if (cfg.contains("fs")) plan.fs = cfg["fs"].get<BoxFs>();
}

}  // namespace cubby::agent
