// syscall_probe NR: makes raw syscall NR with zero arguments and prints
// "ok" or the errno's name, so a test can tell a seccomp refusal (EPERM)
// from the kernel's own answer to bad arguments (EINVAL, EFAULT).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  long r = syscall(atol(argv[1]), 0, 0, 0, 0, 0, 0);
  if (r >= 0) {
    puts("ok");
  } else {
    const char* name = strerrorname_np(errno);
    puts(name ? name : "?");
  }
  return 0;
}
