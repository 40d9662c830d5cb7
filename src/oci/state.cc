#include "oci/state.h"

#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/process.h"

namespace cubby::oci {

using nlohmann::json;

Result<void> check_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 128 && std::isalnum(static_cast<unsigned char>(id[0]));
  for (char c : id) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-');
  if (!ok)
    return fail(Error::invalid("invalid container id \"" + id.substr(0, 64) +
                               "\": use 1 to 128 characters of [a-zA-Z0-9_.-], starting with a letter or digit"));
  return {};
}

Result<void> StateDir::reserve(const std::string& id) {
  CUBBY_TRYV(check_id(id));
  CUBBY_TRYV(mkdir_p(root_, 0700));
  if (::mkdir(dir(id).c_str(), 0700) < 0) {
    if (errno == EEXIST) return fail(Error::conflict("container \"" + id + "\" already exists"));
    return sys_fail("mkdir " + dir(id));
  }
  if (::mkfifo(start_fifo(id).c_str(), 0600) < 0) return sys_fail("mkfifo " + start_fifo(id));
  return {};
}

Result<void> StateDir::save(const ContainerState& s) {
  json j = {{"id", s.id},           {"box", s.box},         {"bundle", s.bundle}, {"pid", s.pid},
            {"pid_start", s.pid_start}, {"created", s.created}, {"started", s.started},
            {"annotations", s.annotations}, {"hooks", s.hooks}};
  return write_file_atomic(dir(s.id) + "/state.json", j.dump());
}

Result<ContainerState> StateDir::load(const std::string& id) const {
  CUBBY_TRYV(check_id(id));
  auto text = read_file(dir(id) + "/state.json", 1 << 20);
  if (!text) {
    if (text.error().sys_errno() == ENOENT) return fail(Error::not_found("container \"" + id + "\" does not exist"));
    return fail(text.error());
  }
  json j = json::parse(*text, nullptr, false);
  try {
    ContainerState s;
    s.id = j.at("id").get<std::string>();
    s.box = j.at("box").get<std::string>();
    s.bundle = j.at("bundle").get<std::string>();
    s.pid = j.at("pid").get<pid_t>();
    s.pid_start = j.at("pid_start").get<uint64_t>();
    s.created = j.at("created").get<std::string>();
    s.started = j.at("started").get<bool>();
    s.annotations = j.value("annotations", json::object());
    if (j.contains("hooks")) s.hooks = j["hooks"].get<Hooks>();
    return s;
  } catch (const json::exception& e) {
    return fail(Error::internal("container \"" + id + "\": corrupt state.json: " + e.what()));
  }
}

Result<void> StateDir::remove(const std::string& id) {
  CUBBY_TRYV(check_id(id));
  return remove_tree(dir(id));
}

std::vector<std::string> StateDir::ids() const {
  std::vector<std::string> out;
  for (auto& n : list_dir(root_))
    if (check_id(n) && ::access((dir(n) + "/state.json").c_str(), F_OK) == 0) out.push_back(n);
  return out;
}

bool relay_alive(const ContainerState& s) {
  if (s.pid <= 0) return false;
  auto st = process_stat(s.pid);
  // A zombie has ended: its status is its parent's to read.
  return st && st->start_time == s.pid_start && st->state != 'Z';
}

std::string status_of(const ContainerState& s) {
  if (!relay_alive(s)) return "stopped";
  return s.started ? "running" : "created";
}

}  // namespace cubby::oci
