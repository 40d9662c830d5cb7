// Prints "euid N": run setuid by the home-modes tests, it shows whether a
// setuid file gave its caller root (busybox drops a setuid euid itself).
#include <unistd.h>

#include <cstdio>

int main() {
  std::printf("euid %u\n", static_cast<unsigned>(::geteuid()));
  return 0;
}
