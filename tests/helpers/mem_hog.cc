// mem_hog MIB: allocates MIB mebibytes and touches every page (so they are
// really charged to its memory cgroup), then prints "touched MIB MiB" and
// exits 0. Past a memory limit the OOM killer ends it with SIGKILL.
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  long mib = atol(argv[1]);
  for (long i = 0; i < mib; ++i) {
    char* p = static_cast<char*>(mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) {
      perror("mmap");
      return 1;
    }
    for (long off = 0; off < (1 << 20); off += 4096) p[off] = 1;
  }
  printf("touched %ld MiB\n", mib);
  return 0;
}
