// Running a short-lived helper program (cubby-fetch, docker-credential-*)
// that reads a small request on stdin and answers on stdout.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"

namespace cubby::image {

struct HelperOutput {
  std::string out;  // stdout (and stderr, when merged), at most 1 MiB
  ExitStatus status;
};

// Runs argv (argv[0] a path) with `input` on stdin (empty: /dev/null) and
// collects its stdout; its stderr is merged into it, or goes to ours.
// The input is small (one line or one JSON object): it fits the pipe, so
// writing it before reading cannot deadlock. `extra_fd` (>= 0) is the
// helper's fd 3.
Result<HelperOutput> run_helper(const std::vector<std::string>& argv, const std::string& input,
                                bool merge_stderr, int extra_fd = -1);

// The first executable NAME in $PATH, or nullopt.
std::optional<std::string> find_on_path(const std::string& name);

}  // namespace cubby::image
