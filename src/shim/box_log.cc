#include "shim/box_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "base/sys.h"
#include "proto/logfile.h"

namespace cubby::shim {

struct BoxLog::Input {
  UniqueFd fd;
  std::string buf;
  bool open = true;
  bool broken = false;  // a corrupt record: what follows cannot be framed
};

Result<std::unique_ptr<BoxLog>> BoxLog::open(const std::string& box_dir, LogLimits limits) {
  std::unique_ptr<BoxLog> log(new BoxLog());
  log->limits_ = limits;
  log->dir_.reset(::open(box_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!log->dir_) return sys_fail("open " + box_dir);
  log->file_.reset(::openat(log->dir_.get(), logfile::file_name(0).c_str(),
                            O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!log->file_) return sys_fail("open box log");
  struct stat st;
  if (::fstat(log->file_.get(), &st) < 0) return sys_fail("stat box log");
  log->size_ = st.st_size;
  log->stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!log->stop_) return sys_fail("eventfd");
  return log;
}

BoxLog::~BoxLog() { finish(); }

Result<UniqueFd> BoxLog::add_input() {
  auto [r, w] = CUBBY_TRY(sys::make_pipe());
  // Room for several of the agent's 64 KiB records, so its writes rarely
  // wait for us (best effort: above pipe-max-size it keeps the default).
  (void)::fcntl(w.get(), F_SETPIPE_SZ, 1 << 20);
  auto in = std::make_unique<Input>();
  ::fcntl(r.get(), F_SETFL, O_NONBLOCK);
  in->fd = std::move(r);
  inputs_.push_back(std::move(in));
  return std::move(w);
}

void BoxLog::start() { th_ = std::thread([this] { loop(); }); }

void BoxLog::finish() {
  if (!th_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  th_.join();
}

void BoxLog::loop() {
  for (;;) {
    std::vector<pollfd> p = {{stop_.get(), POLLIN, 0}};
    std::vector<Input*> open;
    for (auto& in : inputs_)
      if (in->open) {
        p.push_back({in->fd.get(), POLLIN, 0});
        open.push_back(in.get());
      }
    if (open.empty()) return;  // every writer is done
    if (::poll(p.data(), p.size(), -1) < 0) continue;
    if (p[0].revents) {
      // The box has ended: whatever the pipes hold is all there is.
      for (Input* in : open) {
        drain(*in, true);
      }
      return;
    }
    for (size_t i = 1; i < p.size(); ++i)
      if (p[i].revents) drain(*open[i - 1], false);
  }
}

void BoxLog::drain(Input& in, bool until_eof) {
  char buf[65536];
  // Read ends are non-blocking: up to EAGAIN (the writer is idle), and a
  // busy writer yields to the others after a few reads.
  for (int i = 0; until_eof || i < 16; ++i) {
    ssize_t n = ::read(in.fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // EOF: that writer is gone
      if (n == 0 || errno != EAGAIN) in.open = false;
      return;
    }
    if (in.broken) continue;
    in.buf.append(buf, static_cast<size_t>(n));
    size_t pos = 0;
    bool ok = logfile::parse_records(in.buf, pos, [&](int stream, std::string_view d) { append(stream, d); });
    in.buf.erase(0, pos);
    if (!ok) {
      // Only the guest can send this (its log frames are untrusted); the
      // log stays well-formed and says nothing more from that writer.
      LOG_WARN("box log: a corrupt record from a writer; ignoring the rest of what it writes");
      in.broken = true;
      in.buf.clear();
    }
  }
}

void BoxLog::note(int stream, std::string_view data) { append(stream, data); }

void BoxLog::append(int stream, std::string_view data) {
  std::lock_guard<std::mutex> g(mu_);
  const size_t room = static_cast<size_t>(limits_.max_size) - logfile::kRecordHeader;
  do {
    std::string_view piece = data.substr(0, room);
    data.remove_prefix(piece.size());
    const int64_t need = static_cast<int64_t>(logfile::kRecordHeader + piece.size());
    if (size_ > 0 && size_ + need > limits_.max_size) rotate();
    if (!file_) return;  // could not start a new file: dropped, as at ENOSPC
    std::string rec;
    logfile::append_record(rec, stream, piece);
    if (sys::write_all(file_.get(), rec.data(), rec.size())) size_ += need;
  } while (!data.empty());
}

void BoxLog::rotate() {
  file_.reset();
  const int d = dir_.get();
  const int last = limits_.max_files - 1;
  if (last == 0) {
    (void)::unlinkat(d, logfile::file_name(0).c_str(), 0);  // max-file=1: start over
  } else {
    for (int i = last - 1; i >= 0; --i)  // box.log.(last-1) -> box.log.last replaces the oldest
      if (::renameat(d, logfile::file_name(i).c_str(), d, logfile::file_name(i + 1).c_str()) < 0 && errno != ENOENT)
        LOG_WARN("box log: rename {}: {}", logfile::file_name(i), std::strerror(errno));
  }
  file_.reset(::openat(d, logfile::file_name(0).c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file_) LOG_WARN("box log: start a new box.log: {}", std::strerror(errno));
  size_ = 0;
}

}  // namespace cubby::shim
