// SHA-256 helpers for the image store (OpenSSL EVP). Internal to cubby_image,
// but tests and the registry work may include it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cubby::image {

// Incremental SHA-256. Not copyable; one digest per object.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t len);
  // Lowercase hex of the digest (64 chars). Call once.
  std::string hex_final();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// Lowercase hex SHA-256 of data.
std::string sha256_hex(std::string_view data);

// True if s is exactly 64 lowercase hex characters.
bool is_sha256_hex(std::string_view s);

}  // namespace cubby::image
