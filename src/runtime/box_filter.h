// `ls --filter KEY=VALUE`, with Docker's semantics: values of one key are
// alternatives (status=exited --filter status=created: either), except
// label's, which must all hold (as Docker's MatchKVList); different keys
// must all match. Keys:
//   status=created|running|stopped|exited|removing (exited also matches a
//          stopped box: Docker calls both exited)
//   name=TEXT    the name contains TEXT (an extended regular expression, as
//                Docker's is one)
//   id=PREFIX    the id starts with PREFIX
//   label=KEY or label=KEY=VALUE
//   image=REF    the box's image: its reference as given or normalised (a
//                name without a tag means any tag), or an id prefix
//                ("sha256:" optional); Docker's "ancestor" is an alias
// A filter on status lists ended boxes without -a, as Docker's does.
#pragma once

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/store.h"

namespace cubby {

class BoxFilter {
 public:
  // Each item is "KEY=VALUE"; an unknown key or a bad value is an error.
  static Result<BoxFilter> parse(const std::vector<std::string>& items);
  bool matches(const store::BoxRecord& b) const;
  bool filters_status() const { return by_key_.count("status") != 0; }

 private:
  std::map<std::string, std::vector<std::string>> by_key_;
  std::vector<std::regex> names_;
};

}  // namespace cubby
