// `cubby cp` with real boxes on both backends: files and directories both
// ways under docker cp's rules ("SRC/." copies contents, a file onto a
// directory goes inside it), tar streams through "-", a 20 MiB file each way
// by checksum, modes, mtimes and ownership (-a), a box's symlinks that try to
// steer a copy out of the box, and errors that are one line, exit 125 and
// write nothing. The vm cases share one box per test (each boot costs ~2 s
// under TCG). A compromised agent's stream (a symlink and then a file
// through it, "..") is played by an impostor on the box's agent socket.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <random>
#include <set>
#include <sstream>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "image/digest.h"
#include "proto/frame.h"
#include "proto/messages.h"

namespace cubby::test {
namespace {

using proto::Json;

std::string sha256_of(const std::string& data) {
  image::Sha256 h;
  h.update(data.data(), data.size());
  return h.hex_final();
}

std::string file_sha256(const std::string& path) {
  auto d = read_file(path, 64u << 20);
  return d ? sha256_of(*d) : "(unreadable: " + d.error().message() + ")";
}

// A sparse test file: its size and its 4 KiB data blocks (each one letter).
struct SparseFile {
  uint64_t size = 0;
  std::vector<std::pair<uint64_t, char>> blocks;
};

// Checks that path holds exactly f (the data blocks at their offsets, zeros
// everywhere else) and that it is stored sparse: its data extents
// (SEEK_DATA/SEEK_HOLE) are read whole and compared, the holes read as
// zeros by definition, so 4 GiB compare in a few reads.
void expect_sparse_file(const std::string& path, const SparseFile& f) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd) << path;
  struct stat st;
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), f.size) << path;
  EXPECT_LE(st.st_blocks * 512, 1 << 20) << path << " was written dense (" << st.st_blocks << " blocks)";
  auto expected = [&](uint64_t off) {
    for (const auto& [at, c] : f.blocks)
      if (off >= at && off < at + 4096) return c;
    return '\0';
  };
  uint64_t covered = 0, pos = 0;
  std::string buf;
  while (pos < f.size) {
    off_t d = ::lseek(fd.get(), static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) break;
    off_t h = ::lseek(fd.get(), d, SEEK_HOLE);
    ASSERT_GT(h, d);
    ASSERT_LE(h - d, 1 << 20) << path << ": a data extent of " << (h - d) << " bytes";
    buf.resize(static_cast<size_t>(h - d));
    ASSERT_EQ(::pread(fd.get(), buf.data(), buf.size(), d), static_cast<ssize_t>(buf.size()));
    for (size_t i = 0; i < buf.size(); ++i) {
      uint64_t off = static_cast<uint64_t>(d) + i;
      ASSERT_EQ(buf[i], expected(off)) << path << " at offset " << off;
      if (expected(off) != '\0') ++covered;
    }
    pos = static_cast<uint64_t>(h);
  }
  EXPECT_EQ(covered, 4096 * f.blocks.size()) << path << ": data blocks missing";
}

// The box's view of a copied sparse file: size and 512-byte blocks, then
// each data block's bytes that are not its letter (none) and its length.
std::string box_sparse_check(const std::string& path, const SparseFile& f) {
  std::string s = "stat -c '%s %b' " + path;
  for (const auto& [at, c] : f.blocks)
    s += " && dd if=" + path + " bs=4096 skip=" + std::to_string(at / 4096) + " count=1 2>/dev/null | tr -d " + c +
         " | wc -c && dd if=" + path + " bs=4096 skip=" + std::to_string(at / 4096) + " count=1 2>/dev/null | wc -c";
  return s;
}

class Cp : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    char t[] = "/tmp/cubby-cp-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    host_ = t;
  }
  void TearDown() override {
    if (!host_.empty()) (void)remove_tree(host_);
    BackendTest::TearDown();
  }

  // `sh -c script` in the box; its stdout (asserting success).
  std::string in_box(const std::string& box, const std::string& script) {
    auto r = cubby({"exec", box, "sh", "-c", script});
    EXPECT_EQ(r.rc, 0) << script << "\n" << r.err;
    return r.out;
  }
  CmdResult cp(const std::vector<std::string>& args, const std::optional<std::string>& input = std::nullopt) {
    std::vector<std::string> a = {"cp"};
    a.insert(a.end(), args.begin(), args.end());
    return cubby(a, input);
  }
  void expect_cp(const std::vector<std::string>& args, const std::optional<std::string>& input = std::nullopt) {
    auto r = cp(args, input);
    std::string what;
    for (const auto& a : args) what += " " + a;
    EXPECT_EQ(r.rc, 0) << "cp" << what << "\n" << r.err;
    EXPECT_EQ(r.err, "") << "cp" << what;
  }
  // Exit 125, one line holding `needle`, nothing on stdout.
  void expect_refused(const std::vector<std::string>& args, const std::string& needle) {
    auto r = cp(args);
    std::string what;
    for (const auto& a : args) what += " " + a;
    EXPECT_EQ(r.rc, 125) << "cp" << what << "\n" << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << "cp" << what << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "cp" << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << "cp" << what;
  }
  void write(const std::string& rel, const std::string& data, mode_t mode, time_t mtime) {
    std::string p = host_ + "/" + rel;
    ASSERT_TRUE(write_file(p, data));
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
    set_mtime(rel, mtime);
  }
  void set_mtime(const std::string& rel, time_t mtime) {
    timespec ts[2] = {{0, UTIME_OMIT}, {mtime, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (host_ + "/" + rel).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << rel;
  }
  struct stat host_stat(const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(::lstat((host_ + "/" + rel).c_str(), &st), 0) << rel << " is missing on the host";
    return st;
  }
  std::string host_read(const std::string& rel) {
    auto d = read_file(host_ + "/" + rel);
    return d ? *d : "(missing)";
  }

  std::string host_;
};

INSTANTIATE_TEST_SUITE_P(Backends, Cp, ::testing::Values("sandbox", "vm"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST_P(Cp, FilesDirectoriesAndTarStreamsBothWays) {
  std::string box = run_detached();
  // A host tree: modes, mtimes, a symlink, an owner to keep with -a.
  ASSERT_TRUE(mkdir_p(host_ + "/tree/sub"));
  write("hello.txt", "hi\n", 0640, 1500000000);
  write("tree/a.txt", "a\n", 0600, 1500000100);
  write("tree/sub/b.sh", "#!/bin/sh\n", 0755, 1500000200);
  ASSERT_EQ(::symlink("a.txt", (host_ + "/tree/link").c_str()), 0);
  ASSERT_EQ(::lchown((host_ + "/tree/sub/b.sh").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod((host_ + "/tree/sub").c_str(), 0750), 0);
  set_mtime("tree/sub", 1500000300);
  ASSERT_EQ(::chmod((host_ + "/tree").c_str(), 0751), 0);
  set_mtime("tree", 1500000400);

  // Host -> box. A file onto a directory goes inside it; to a new name
  // becomes that name; mode and mtime are kept, the owner is the box's root.
  expect_cp({host_ + "/hello.txt", box + ":/tmp"});
  expect_cp({host_ + "/hello.txt", box + ":/tmp/renamed.txt"});
  EXPECT_EQ(in_box(box, "stat -c '%a %Y %u:%g' /tmp/hello.txt /tmp/renamed.txt; cat /tmp/renamed.txt"),
            "640 1500000000 0:0\n640 1500000000 0:0\nhi\n");
  // A directory to a new path becomes it; onto a directory goes inside;
  // "SRC/." puts its contents in; -a keeps the owner.
  expect_cp({host_ + "/tree", box + ":/tmp/newtree"});
  expect_cp({host_ + "/tree", box + ":/tmp"});
  in_box(box, "mkdir /tmp/contents");
  expect_cp({"-a", host_ + "/tree/.", box + ":/tmp/contents"});
  EXPECT_EQ(in_box(box,
                   "cd /tmp && stat -c '%n %a %Y %u:%g' newtree newtree/a.txt newtree/sub newtree/sub/b.sh "
                   "tree/sub/b.sh contents/sub/b.sh && readlink newtree/link && cat contents/a.txt"),
            "newtree 751 1500000400 0:0\n"
            "newtree/a.txt 600 1500000100 0:0\n"
            "newtree/sub 750 1500000300 0:0\n"
            "newtree/sub/b.sh 755 1500000200 0:0\n"
            "tree/sub/b.sh 755 1500000200 0:0\n"
            "contents/sub/b.sh 755 1500000200 1234:5678\n"
            "a.txt\na\n");
  // A symlink is copied as a link; -L copies what it points at.
  expect_cp({host_ + "/tree/link", box + ":/tmp/l1"});
  expect_cp({"-L", host_ + "/tree/link", box + ":/tmp/l2"});
  EXPECT_EQ(in_box(box, "readlink /tmp/l1; test -f /tmp/l2 && test ! -L /tmp/l2 && cat /tmp/l2"), "a.txt\na\n");
  // Hard links within the copy stay links, both ways.
  ASSERT_TRUE(mkdir_p(host_ + "/linked"));
  ASSERT_TRUE(write_file(host_ + "/linked/one", "1\n"));
  ASSERT_EQ(::link((host_ + "/linked/one").c_str(), (host_ + "/linked/two").c_str()), 0);
  expect_cp({host_ + "/linked", box + ":/tmp"});
  EXPECT_EQ(in_box(box, "stat -c '%h' /tmp/linked/one /tmp/linked/two; test /tmp/linked/one -ef /tmp/linked/two && echo same"),
            "2\n2\nsame\n");
  expect_cp({box + ":/tmp/linked", host_ + "/linked-back"});
  EXPECT_EQ(host_stat("linked-back/one").st_ino, host_stat("linked-back/two").st_ino);
  // A file onto an existing file replaces it.
  in_box(box, "echo old > /tmp/over.txt");
  expect_cp({host_ + "/hello.txt", box + ":/tmp/over.txt"});
  EXPECT_EQ(in_box(box, "cat /tmp/over.txt"), "hi\n");

  // Box -> host: the same rules the other way.
  in_box(box, "chown 4321:8765 /tmp/tree/a.txt");
  expect_cp({box + ":/tmp/hello.txt", host_ + "/back.txt"});
  EXPECT_EQ(host_read("back.txt"), "hi\n");
  EXPECT_EQ(host_stat("back.txt").st_mode & 07777, 0640u);
  EXPECT_EQ(host_stat("back.txt").st_mtime, 1500000000);
  expect_cp({box + ":/tmp/tree", host_ + "/out"});
  EXPECT_EQ(host_read("out/a.txt"), "a\n");
  EXPECT_EQ(host_stat("out/a.txt").st_uid, ::getuid()) << "without -a the caller owns what it copied out";
  EXPECT_EQ(host_stat("out").st_mode & 07777, 0751u);
  EXPECT_EQ(host_stat("out").st_mtime, 1500000400);
  EXPECT_EQ(host_stat("out/sub").st_mode & 07777, 0750u);
  EXPECT_EQ(host_stat("out/sub/b.sh").st_mode & 07777, 0755u);
  EXPECT_TRUE(S_ISLNK(host_stat("out/link").st_mode));
  ASSERT_TRUE(mkdir_p(host_ + "/existing"));
  expect_cp({"-a", box + ":/tmp/tree/.", host_ + "/existing"});
  EXPECT_EQ(host_read("existing/sub/b.sh"), "#!/bin/sh\n");
  EXPECT_EQ(host_stat("existing/a.txt").st_uid, 4321u);
  EXPECT_EQ(host_stat("existing/a.txt").st_gid, 8765u);
  expect_cp({box + ":/tmp/tree", host_ + "/existing"});  // onto a directory: inside it
  EXPECT_EQ(host_read("existing/tree/a.txt"), "a\n");

  // Tar streams: "-" as DST writes one (named after SRC), "-" as SRC
  // extracts one into a box directory.
  auto t = cp({box + ":/tmp/tree", "-"});
  ASSERT_EQ(t.rc, 0) << t.err;
  ASSERT_TRUE(write_file(host_ + "/tree.tar", t.out));
  std::string list_cmd = "tar -tvf '" + host_ + "/tree.tar' | awk '{print $1, $6}' > '" + host_ + "/list'";
  ASSERT_EQ(std::system(list_cmd.c_str()), 0);
  EXPECT_EQ(host_read("list"),
            "drwxr-x--x tree/\n-rw------- tree/a.txt\nlrwxrwxrwx tree/link\ndrwxr-x--- tree/sub/\n"
            "-rwxr-xr-x tree/sub/b.sh\n");
  in_box(box, "mkdir /tmp/fromtar");
  expect_cp({"-", box + ":/tmp/fromtar"}, t.out);
  EXPECT_EQ(in_box(box, "cd /tmp/fromtar && stat -c '%n %a %Y' tree tree/a.txt tree/sub/b.sh && readlink tree/link"),
            "tree 751 1500000400\ntree/a.txt 600 1500000100\ntree/sub/b.sh 755 1500000200\na.txt\n");

  // 20 MiB each way, by checksum: the vm mux's flow control carries it
  // with bounded buffers (a stalled window would hang here, not fail).
  std::string big(20u << 20, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= big.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&big[i], &v, 8);
  }
  ASSERT_TRUE(write_file(host_ + "/big", big));
  std::string want = sha256_of(big);
  expect_cp({host_ + "/big", box + ":/tmp/big"});
  EXPECT_EQ(in_box(box, "sha256sum /tmp/big"), want + "  /tmp/big\n");
  expect_cp({box + ":/tmp/big", host_ + "/big2"});
  EXPECT_EQ(file_sha256(host_ + "/big2"), want);

  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

// Issue 10 item 10: a 4 GiB file with three 4 KiB blocks of data (the last
// at its very end) and a 1 GiB file of holes only, copied out of the box,
// back in, and through tars both ways: each copy moves a few blocks (well
// under a second of the CLI's CPU), lands sparse, and reads back the same.
TEST_P(Cp, SparseFilesKeepTheirHolesBothWays) {
  std::string box = run_detached();
  const SparseFile sparse{4ull << 30, {{1 << 20, 'A'}, {2ull << 30, 'B'}, {(4ull << 30) - 4096, 'C'}}};
  const SparseFile holes{1ull << 30, {}};
  std::string mk = "mkdir /data && truncate -s " + std::to_string(sparse.size) + " /data/sparse";
  for (const auto& [at, c] : sparse.blocks)
    mk += std::string(" && printf '%4096s' '' | tr ' ' ") + c + " | dd of=/data/sparse bs=4096 seek=" +
          std::to_string(at / 4096) + " conv=notrunc 2>/dev/null";
  mk += " && truncate -s " + std::to_string(holes.size) + " /data/holes";
  in_box(box, mk);
  auto expect_in_box = [&](const std::string& path, const SparseFile& f) {
    std::string out = in_box(box, box_sparse_check(path, f));
    std::istringstream in(out);
    uint64_t size = 0, blocks = 0;
    in >> size >> blocks;
    EXPECT_EQ(size, f.size) << path;
    EXPECT_LE(blocks * 512, 1u << 20) << path << " was written dense in the box (" << blocks << " blocks)";
    for (size_t i = 0; i < f.blocks.size(); ++i) {
      int stray = -1, len = -1;
      in >> stray >> len;
      EXPECT_EQ(stray, 0) << path << ": block " << i << " holds other bytes";
      EXPECT_EQ(len, 4096) << path << ": block " << i;
    }
  };
  expect_in_box("/data/sparse", sparse);
  // The CLI's own work (the agent's is in the box): a dense copy of these
  // 5 GiB would cost it tens of seconds of CPU.
  auto cpu_of = [&](const std::vector<std::string>& args, std::string* out = nullptr) {
    struct rusage before{}, after{};
    ::getrusage(RUSAGE_CHILDREN, &before);
    auto r = cp(args);
    ::getrusage(RUSAGE_CHILDREN, &after);
    EXPECT_EQ(r.rc, 0) << r.err;
    if (out) *out = std::move(r.out);
    auto us = [](const struct rusage& u) {
      return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000LL + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
    };
    return std::chrono::microseconds(us(after) - us(before));
  };
  using std::chrono::milliseconds;
  // Box -> host.
  auto t = cpu_of({box + ":/data", host_ + "/out"});
  EXPECT_LT(t, milliseconds(1000)) << "box -> host took " << t.count() << " us of CPU";
  expect_sparse_file(host_ + "/out/sparse", sparse);
  expect_sparse_file(host_ + "/out/holes", holes);
  // Host -> box.
  t = cpu_of({host_ + "/out", box + ":/data/back"});
  EXPECT_LT(t, milliseconds(1000)) << "host -> box took " << t.count() << " us of CPU";
  expect_in_box("/data/back/sparse", sparse);
  expect_in_box("/data/back/holes", holes);
  // Box -> tar on stdout: pax sparse entries, which GNU tar extracts sparse.
  std::string tar;
  t = cpu_of({box + ":/data/sparse", "-"}, &tar);
  EXPECT_LT(t, milliseconds(1000)) << "box -> tar took " << t.count() << " us of CPU";
  EXPECT_LT(tar.size(), 1u << 20) << "the tar holds the holes";
  ASSERT_TRUE(write_file(host_ + "/sparse.tar", tar));
  ASSERT_TRUE(mkdir_p(host_ + "/untar"));
  std::string untar = "tar -xf '" + host_ + "/sparse.tar' -C '" + host_ + "/untar'";
  ASSERT_EQ(std::system(untar.c_str()), 0);
  expect_sparse_file(host_ + "/untar/sparse", sparse);
  // Tar on stdin -> box (GNU tar's own sparse format too).
  in_box(box, "mkdir /data/fromtar /data/fromgnu");
  expect_cp({"-", box + ":/data/fromtar"}, tar);
  expect_in_box("/data/fromtar/sparse", sparse);
  std::string gnu = "tar --sparse -cf '" + host_ + "/gnu.tar' -C '" + host_ + "/out' sparse holes";
  ASSERT_EQ(std::system(gnu.c_str()), 0);
  auto gnu_tar = read_file(host_ + "/gnu.tar");
  ASSERT_TRUE(gnu_tar);
  EXPECT_LT(gnu_tar->size(), 1u << 20);
  expect_cp({"-", box + ":/data/fromgnu"}, *gnu_tar);
  expect_in_box("/data/fromgnu/sparse", sparse);
  expect_in_box("/data/fromgnu/holes", holes);
  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

// Waits for an inotify event on ifd while child runs (a backstop of 120 s);
// false when the child ended first.
bool wait_event_while(int ifd, const ChildProcess& child) {
  pollfd p[2] = {{ifd, POLLIN, 0}, {child.pidfd(), POLLIN, 0}};
  if (::poll(p, 2, 120000) <= 0 || !(p[0].revents & POLLIN)) return false;
  return true;
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// Issue 10 item 10: a SIGKILLed `cp` leaves the destination as it was (the
// old file, here) and no temporary, whichever side writes. Box -> host: the
// kill comes at the first write into the destination directory (inotify
// sees the temporary's IN_MODIFY). Host -> box: a tar on a pipe the test
// holds open mid-file, so the copy is certainly in its file when killed; on
// the sandbox inotify on the box's upper directory sees the agent write.
TEST_P(Cp, KilledCopyLeavesTheOldFileAndNoTemporary) {
  std::string box = run_detached();
  const int mib = vm() ? 48 : 256;
  in_box(box, "mkdir -p /data/in && echo old > /data/in/f && dd if=/dev/zero of=/data/big bs=1M count=" +
                  std::to_string(mib) + " 2>/dev/null");

  // Box -> host.
  ASSERT_TRUE(mkdir_p(host_ + "/dst"));
  ASSERT_TRUE(write_file(host_ + "/dst/f", "old\n"));
  UniqueFd ifd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  ASSERT_TRUE(ifd);
  ASSERT_GE(::inotify_add_watch(ifd.get(), (host_ + "/dst").c_str(), IN_MODIFY), 0);
  {
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    ChildProcess c = spawn_cubby(home_, {"cp", box + ":/data/big", host_ + "/dst/f"}, null.get(), null.get());
    ASSERT_TRUE(wait_event_while(ifd.get(), c)) << "the copy ended (or hung) before writing anything";
    ASSERT_TRUE(c.signal(SIGKILL));
    auto st = c.wait();
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->signaled) << "the copy finished before the kill (exit " << st->code << ")";
  }
  std::string f = host_read("dst/f");
  EXPECT_TRUE(f == "old\n") << "the killed copy left " << f.size() << " bytes in the destination";
  EXPECT_EQ(names_in(host_ + "/dst"), std::set<std::string>{"f"});

  // Host -> box: a tar with f (64 MiB, replacing the box's f), cut after
  // 1 MiB of its data and held open.
  UniqueFd box_watch;
  if (!vm()) {
    box_watch.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ASSERT_GE(::inotify_add_watch(box_watch.get(), (home_ + "/boxes/" + box + "/upper/data/in").c_str(), IN_MODIFY),
              0);
  }
  auto [in_r, in_w] = sys::make_pipe().value();
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  SpawnSpec spec;
  spec.argv = {cubby_path(), "--home", home_, "cp", "-", box + ":/data/in"};
  spec.fds = {in_r.get(), null.get(), null.get()};
  auto child = spawn(spec);
  ASSERT_TRUE(child) << child.error().message();
  in_r.reset();
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_write_new(), archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  ASSERT_EQ(archive_write_open_fd(a.get(), in_w.get()), ARCHIVE_OK);
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
  archive_entry_set_pathname(e.get(), "f");
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_size(e.get(), 64 << 20);
  ASSERT_EQ(archive_write_header(a.get(), e.get()), ARCHIVE_OK);
  // More than a pipe holds: when this returns the copy has taken most of it.
  std::string mib_of_x(1 << 20, 'x');
  ASSERT_EQ(archive_write_data(a.get(), mib_of_x.data(), mib_of_x.size()), static_cast<la_ssize_t>(mib_of_x.size()));
  if (box_watch) ASSERT_TRUE(wait_event_while(box_watch.get(), *child)) << "the agent never wrote the file";
  ASSERT_TRUE(child->signal(SIGKILL));
  auto st = child->wait();
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->signaled);
  archive_write_fail(a.get());  // nothing more to the dead reader
  in_w.reset();
  // The agent's worker sees the stream end mid-file and drops the file
  // (an O_TMPFILE; a named temporary on the vm's overlay, unlinked).
  EXPECT_EQ(in_box(box, "wc -c < /data/in/f; cat /data/in/f | head -c 4; ls -A /data/in"), "4\nold\nf\n")
      << "the killed copy left part of its file in the box";
  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

TEST_P(Cp, BoxSymlinksStayInTheBoxAndBadInputWritesNothing) {
  std::string box = run_detached();
  ASSERT_TRUE(write_file(host_ + "/x.txt", "payload\n"));
  // The box points /tmp/evil at /etc: the copy follows it inside the box
  // (as docker cp resolves container paths), never onto the host's /etc.
  std::string name = "cubby-cp-escape-" + std::to_string(::getpid());
  in_box(box, "ln -s /etc /tmp/evil && ln -s ../../../../../etc /tmp/evil2 && ln -s /proc/1/root /tmp/magic");
  expect_cp({host_ + "/x.txt", box + ":/tmp/evil/" + name});
  expect_cp({host_ + "/x.txt", box + ":/tmp/evil2/" + name + ".2"});
  EXPECT_EQ(in_box(box, "cat /etc/" + name + " /etc/" + name + ".2"), "payload\npayload\n");
  EXPECT_NE(::access(("/etc/" + name).c_str(), F_OK), 0) << "the copy escaped onto the host";
  EXPECT_NE(::access(("/etc/" + name + ".2").c_str(), F_OK), 0) << "the copy escaped onto the host";
  // A magic link of /proc is not crossed at all.
  auto m = cp({host_ + "/x.txt", box + ":/tmp/magic/tmp/" + name});
  EXPECT_EQ(m.rc, 125) << m.err;
  // Copying a box's symlink out copies the link, not what it points at.
  expect_cp({box + ":/tmp/evil", host_ + "/evil"});
  EXPECT_TRUE(S_ISLNK(host_stat("evil").st_mode));
  // A tar with ".." or an absolute name is refused before anything is written.
  std::string mk = "cd '" + host_ + "' && python3 -c \"import tarfile,io\n"
                   "t=tarfile.open('dotdot.tar','w')\n"
                   "i=tarfile.TarInfo('../../escaped'); i.size=2; t.addfile(i, io.BytesIO(b'x\\\\n'))\n"
                   "t.close()\"";
  ASSERT_EQ(std::system(mk.c_str()), 0);
  auto tar = read_file(host_ + "/dotdot.tar");
  ASSERT_TRUE(tar);
  in_box(box, "mkdir /tmp/t");
  auto r = cp({"-", box + ":/tmp/t"}, *tar);
  EXPECT_EQ(r.rc, 125);
  EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find(".."), std::string::npos) << r.err;
  EXPECT_EQ(in_box(box, "ls -A /tmp/t; test ! -e /escaped && test ! -e /tmp/escaped && echo none"), "none\n");

  // Errors: one line, 125, nothing written.
  expect_refused({box + ":/no/such/file", host_ + "/nothing"}, "no such file or directory");
  EXPECT_NE(::access((host_ + "/nothing").c_str(), F_OK), 0);
  expect_refused({host_ + "/x.txt", box + ":/no/such/dir/"}, "does not exist");
  expect_refused({host_ + "/x.txt", box + ":/no/such/dir/file"}, "no such directory");
  expect_refused({host_ + "/missing", box + ":/tmp"}, "no such file or directory");
  expect_refused({"nosuchbox:/etc/passwd", host_ + "/nothing"}, "nosuchbox");
  expect_refused({host_ + "/x.txt", host_ + "/y.txt"}, "BOX:PATH");
  expect_refused({box + ":/etc/passwd", box + ":/tmp/p"}, "two boxes");
  expect_refused({box + ":/etc", host_ + "/x.txt"}, "cannot copy a directory onto the file");
  EXPECT_EQ(host_read("x.txt"), "payload\n");
  EXPECT_NE(::access((host_ + "/nothing").c_str(), F_OK), 0);
  EXPECT_NE(::access((host_ + "/y.txt").c_str(), F_OK), 0);
  // A stopped box.
  ASSERT_EQ(cubby({"stop", "-t", "0", box}).rc, 0);
  expect_refused({box + ":/etc/passwd", host_ + "/nothing"}, "is not running");
  expect_refused({host_ + "/x.txt", box + ":/tmp"}, "is not running");
  EXPECT_NE(::access((host_ + "/nothing").c_str(), F_OK), 0);
  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

// Issue 10: `cp - BOX:/srv` with a tar whose own symlinks or hard links
// lead out of /srv. Each is refused with one line and writes nothing where
// the link points; a symlink the box itself has below the destination is
// not followed either (the destination path itself still resolves in the
// box, see BoxSymlinksStayInTheBoxAndBadInputWritesNothing).
TEST_P(Cp, TarStreamsOwnLinksNeverLeadOutOfTheDestination) {
  std::string box = run_detached();
  in_box(box, "mkdir -p /srv && echo secret > /srv/secret && ln -s /etc /srv/boxlink");
  // python3 statements adding members to tarfile t, then the tar's bytes.
  auto make_tar = [&](const std::string& members) {
    std::string py = host_ + "/mk.py";
    EXPECT_TRUE(write_file(py, "import tarfile, io\n"
                               "t = tarfile.open('" + host_ + "/t.tar', 'w')\n"
                               "def f(name, data=b'x\\n'):\n"
                               "    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
                               "def l(name, target, kind=tarfile.SYMTYPE):\n"
                               "    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; t.addfile(i)\n"
                               "def d(name):\n"
                               "    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)\n" +
                               members + "\nt.close()\n"));
    EXPECT_EQ(std::system(("python3 " + py).c_str()), 0);
    auto tar = read_file(host_ + "/t.tar");
    return tar ? *tar : std::string();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"l('link', '/etc'); f('link/pwned1')", "below link, a symlink"},
      {"l('up', '../..'); f('up/etc/pwned2')", "below up, a symlink"},
      {"l('l2', '/etc'); d('l2'); f('l2/pwned3')", "directory l2 over a symlink"},
      {"l('s', '/etc'); l('h', 's/passwd', tarfile.LNKTYPE)", "hardlink h to s/passwd"},
      {"l('h2', 'secret', tarfile.LNKTYPE)", "hardlink h2 to secret"},
      {"f('boxlink/pwned4')", "refusing to write through a symlink: /srv/boxlink"},
  };
  for (const auto& [members, needle] : cases) {
    auto r = cp({"-", box + ":/srv"}, make_tar(members));
    EXPECT_EQ(r.rc, 125) << members << ": " << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << members << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << members << ": " << r.err;
  }
  EXPECT_EQ(in_box(box, "ls /etc | grep pwned; ls /srv/h /srv/h2 2>&1 >/dev/null | wc -l; cat /srv/secret"),
            "2\nsecret\n");
  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

// The host must survive a compromised agent (in a vm, the box's root owns
// the guest kernel): an impostor serves the box's agent socket and sends
// a symlink to a host directory followed by a file "through" it, or a name
// with "..". Nothing may be written outside the destination.
class CpImpostor : public BoxTest {};

TEST_F(CpImpostor, HostNeverWritesThroughABoxsSymlinkOrOutsideTheDestination) {
  std::string box = run_detached();
  char t[] = "/tmp/cubby-cp-victim-XXXXXX";
  ASSERT_NE(::mkdtemp(t), nullptr);
  std::string victim = t;
  std::string sock = home_ + "/boxes/" + box + "/agent.sock";
  ASSERT_EQ(::rename(sock.c_str(), (sock + ".real").c_str()), 0);
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  ASSERT_LT(sock.size(), sizeof a.sun_path);
  std::strcpy(a.sun_path, sock.c_str());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);

  auto entry = [](const std::string& p, const char* k, uint64_t size = 0, const std::string& target = "") {
    Json m = {{"t", proto::msg::kCpEntry}, {"p", p}, {"k", k}, {"mode", 0755}, {"uid", 0}, {"gid", 0}, {"mt", 0}};
    if (std::string(k) == "f") m["size"] = size;
    if (!target.empty()) m["target"] = target;
    return m;
  };
  std::vector<std::vector<Json>> streams = {
      {entry("", "d"), entry("link", "l", 0, victim), entry("link/pwned", "f", 2)},
      {entry("", "d"), entry("../pwned", "f", 2)},
      {entry("", "d"), entry("/pwned", "f", 2)},
      {entry("", "l", 0, victim)},  // then "SRC/." asks for a directory
      // A hard link to a host file the stream did not make (copied "SRC/."
      // into a directory that holds one), a directory over the stream's
      // own symlink, and a symlink then a file through it into a tar.
      {entry("", "d"), entry("h", "h", 0, "keep")},
      {entry("", "d"), entry("l", "l", 0, victim), entry("l", "d"), entry("l/pwned", "f", 2)},
      {entry("", "d"), entry("link", "l", 0, victim), entry("link/pwned", "f", 2)},
  };
  auto impostor = std::async(std::launch::async, [&] {
    for (auto& frames : streams) {
      UniqueFd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) return;
      proto::Conn conn(std::move(c));
      if (!conn.recv()) return;  // hello
      (void)conn.send({{"t", proto::msg::kHello}, {"v", proto::kVersion}, {"agent", "impostor"}});
      if (!conn.recv()) return;  // cp_get
      for (auto& f : frames) {
        (void)conn.send(f);
        if (f.value("k", "") == "f") (void)conn.send({{"t", proto::msg::kCpData}, {"d", Json::binary({'x', '\n'})}});
      }
      (void)conn.send({{"t", proto::msg::kCpEnd}});
      (void)conn.recv();  // until the client hangs up
    }
  });
  ASSERT_TRUE(mkdir_p(home_ + "/dest/into"));
  ASSERT_TRUE(write_file(home_ + "/dest/into/keep", "the host's\n"));
  // One run per stream above, in order: (SRC path in the box, what the error names).
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"/x", "symlink"}, {"/x", ".."}, {"/x", "absolute"}, {"/x/.", "not a directory"},
      {"/x/.", "hardlink h to keep"}, {"/x", "directory l over a symlink"}, {"/x", "below link, a symlink"}};
  const std::vector<std::string> outs = {"", "", "", "", home_ + "/dest/into", "", "-"};
  for (size_t i = 0; i < expected.size(); ++i) {
    std::string out = !outs[i].empty() ? outs[i] : home_ + "/dest/out" + std::to_string(i);
    auto r = cubby({"cp", box + ":" + expected[i].first, out});
    EXPECT_EQ(r.rc, 125) << i << ": " << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << i << ": " << r.err;
    EXPECT_NE(r.err.find(expected[i].second), std::string::npos) << i << ": " << r.err;
  }
  // An accept still waiting (a cp that failed before connecting) ends here.
  ::shutdown(listener.get(), SHUT_RDWR);
  impostor.get();
  EXPECT_NE(::access((victim + "/pwned").c_str(), F_OK), 0) << "written through the box's symlink";
  EXPECT_NE(::access((home_ + "/dest/pwned").c_str(), F_OK), 0);
  EXPECT_NE(::access((home_ + "/pwned").c_str(), F_OK), 0);
  EXPECT_NE(::access("/pwned", F_OK), 0);
  EXPECT_NE(::access((home_ + "/dest/out3").c_str(), F_OK), 0);
  EXPECT_NE(::access((home_ + "/dest/into/h").c_str(), F_OK), 0) << "a box linked a host file into the copy";

  listener.reset();
  ASSERT_EQ(::rename((sock + ".real").c_str(), sock.c_str()), 0);
  (void)remove_tree(victim);
  EXPECT_EQ(cubby({"rm", "-f", box}).rc, 0);
}

}  // namespace
}  // namespace cubby::test
