// A stand-in process for ownership tests: it blocks until its stdin closes,
// whatever its argv says (tests run it as [.../cubby-shim, box-10]).
#include <unistd.h>

int main() {
  char b;
  while (::read(0, &b, 1) > 0) {
  }
  return 0;
}
