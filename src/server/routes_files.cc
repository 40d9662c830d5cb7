// Files: one file's bytes, and tar trees, through the same Runtime calls as
// `cubby cp` (its rules and safety: nothing lands outside the target, no
// write through a symlink). Uploads arrive spooled to an unlinked file of the
// home (Route::spool); a file read from a box passes through another.
#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include "base/sys.h"
#include <tuple>

#include "server/routes.h"

namespace cubby::server {

namespace {

std::pair<std::string, std::string> split_parent(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  std::string base = p.substr(slash + 1), dir = slash == 0 ? "/" : p.substr(0, slash);
  if (base.empty() || base == ".") throw bad_request("path must name a file: \"" + path.substr(0, 128) + "\"");
  return {dir, base};
}

asio::awaitable<Reply> file_get(Server& srv, Request& req) {
  std::string ref = req.param("ref"), path = box_path(req);
  co_return stream_from_worker(srv, "application/octet-stream", [a = std::make_shared<std::pair<std::string, std::string>>(ref, path)](Runtime& rt, int out) {
    auto& [ref, path] = *a;
    // cp BOX:path - gives a tar of one entry; its data is the file.
    UniqueFd tar = unwrap(spool_file(rt.home()));
    CopyOptions o;
    o.follow_links = true;
    unwrap(rt.copy_from_box(ref, path, "-", o, tar.get()));
    ::lseek(tar.get(), 0, SEEK_SET);
    struct archive* a = archive_read_new();
    archive_read_support_format_tar(a);
    std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_read_free);
    struct archive_entry* e = nullptr;
    if (archive_read_open_fd(a, tar.get(), 64 * 1024) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK)
      throw internal_error("reading the box's file: " + std::string(archive_error_string(a) ? archive_error_string(a) : "?"));
    if (archive_entry_filetype(e) == AE_IFDIR) throw bad_request(path + " is a directory (use /archive)");
    if (archive_entry_filetype(e) != AE_IFREG) throw bad_request(path + " is not a regular file");
    char buf[64 * 1024];
    for (;;) {
      la_ssize_t n = archive_read_data(a, buf, sizeof buf);
      if (n < 0) throw internal_error(std::string("reading the box's file: ") + archive_error_string(a));
      if (n == 0) break;
      if (!sys::write_all(out, buf, static_cast<size_t>(n))) return;  // the client left
    }
  });
}

asio::awaitable<Reply> file_put(Server& srv, Request& req) {
  std::string ref = req.param("ref"), path = box_path(req);
  auto [dir, base] = split_parent(path);
  std::string mode_s = req.q("mode").value_or("0644");
  char* end = nullptr;
  long mode = std::strtol(mode_s.c_str(), &end, 8);
  if (mode_s.empty() || *end || mode < 0 || mode > 07777) throw bad_request("mode must be octal, e.g. 0644: \"" + mode_s.substr(0, 16) + "\"");
  auto work1 = [&](Runtime& rt) {
    // A one-entry tar of the body, extracted into the parent as cp - BOX:dir does.
    UniqueFd tar = unwrap(spool_file(rt.home()));
    struct archive* a = archive_write_new();
    std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_write_free);
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_fd(a, tar.get()) != ARCHIVE_OK) throw internal_error("tar: " + std::string(archive_error_string(a)));
    struct archive_entry* e = archive_entry_new();
    std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> entry(e, archive_entry_free);
    archive_entry_set_pathname(e, base.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, static_cast<mode_t>(mode));
    archive_entry_set_size(e, static_cast<la_int64_t>(req.body_size));
    archive_entry_set_mtime(e, ::time(nullptr), 0);
    if (archive_write_header(a, e) != ARCHIVE_OK) throw internal_error("tar: " + std::string(archive_error_string(a)));
    std::vector<char> buf(256 * 1024);
    for (uint64_t left = req.body_size; left > 0;) {
      ssize_t n = ::read(req.body_file.get(), buf.data(), std::min<uint64_t>(left, buf.size()));
      if (n <= 0) throw internal_error("reading the spooled upload: " + std::string(n < 0 ? strerror(errno) : "short"));
      if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) != n)
        throw internal_error("tar: " + std::string(archive_error_string(a)));
      left -= static_cast<uint64_t>(n);
    }
    if (archive_write_close(a) != ARCHIVE_OK) throw internal_error("tar: " + std::string(archive_error_string(a)));
    req.body_file.reset();
    if (::lseek(tar.get(), 0, SEEK_SET) < 0) throw internal_error("tar: lseek");
    unwrap(rt.copy_to_box("-", ref, dir, {}, tar.get()));
    return true;
  };
  co_await srv.blocking(std::move(work1));
  co_return no_content();
}

asio::awaitable<Reply> archive_get(Server& srv, Request& req) {
  std::string ref = req.param("ref"), path = box_path(req);
  co_return stream_from_worker(srv, "application/x-tar", [a = std::make_shared<std::pair<std::string, std::string>>(ref, path)](Runtime& rt, int out) {
    auto& [ref, path] = *a;
    unwrap(rt.copy_from_box(ref, path, "-", {}, out));
  });
}

asio::awaitable<Reply> archive_put(Server& srv, Request& req) {
  std::string ref = req.param("ref"), path = box_path(req);
  auto work2 = [&](Runtime& rt) {
    unwrap(rt.copy_to_box("-", ref, path, {}, req.body_file.get()));
    return true;
  };
  co_await srv.blocking(std::move(work2));
  co_return no_content();
}

}  // namespace

void add_file_routes(std::vector<Route>& r) {
  r.push_back({http::verb::get, "/v1/boxes/{ref}/files", file_get});
  r.push_back({http::verb::put, "/v1/boxes/{ref}/files", file_put, kUploadLimit, false, true});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/archive", archive_get});
  r.push_back({http::verb::put, "/v1/boxes/{ref}/archive", archive_put, kUploadLimit, false, true});
}

}  // namespace cubby::server
