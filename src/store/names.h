// <home>/names/<name>: the id of the box of that name, written by the
// runtime at create so that `exec NAME` needs no database (Runtime::
// exec_direct); Store::finish_removal removes it unless another box took the
// name. Names are valid_name()s: never '/', never a leading '.'.
#pragma once

#include <string>

namespace cubby::store {

inline std::string name_file(const std::string& home, const std::string& name) { return home + "/names/" + name; }

}  // namespace cubby::store
