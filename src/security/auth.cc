#include "security/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <vector>

#include "common/log.h"

namespace eccl::security {
namespace {

// Versioned, so a proof of this handshake can never be one of a later design.
constexpr std::string_view kLabel = "ECCL-auth-v1";

}  // namespace

Result<Nonce> randomNonce() {
  Nonce n{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1) {
    return error(ecclSystemError, "OpenSSL RAND_bytes failed: no entropy for a handshake nonce");
  }
  return n;
}

Proof hmacSha256(std::string_view key, std::span<const std::byte> message) {
  Proof out{};
  unsigned int len = 0;
  // HMAC() with a NULL md context is OpenSSL's one-shot EVP-backed HMAC.
  const unsigned char* ok = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                 reinterpret_cast<const unsigned char*>(message.data()),
                                 message.size(), reinterpret_cast<unsigned char*>(out.data()), &len);
  if (ok == nullptr || len != out.size()) {
    // Fail closed: a fixed (zero) result would let anyone pass. Random bytes
    // match nothing, so every handshake fails, loudly.
    ECCL_LOG(kError, kApi, "OpenSSL HMAC-SHA256 failed; authentication cannot succeed");
    RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  }
  return out;
}

Proof makeProof(std::string_view token, Role role, Purpose purpose,
                std::span<const std::byte> context, const Nonce& client, const Nonce& server) {
  std::vector<std::byte> msg;
  msg.reserve(kLabel.size() + 2 + 4 + context.size() + 2 * kNonceBytes);
  for (char c : kLabel) msg.push_back(static_cast<std::byte>(c));
  msg.push_back(static_cast<std::byte>(role));
  msg.push_back(static_cast<std::byte>(purpose));
  // The context's length first, so no two (context, nonce) splits collide.
  const auto n = static_cast<uint32_t>(context.size());
  for (int i = 0; i < 4; ++i) msg.push_back(static_cast<std::byte>(n >> (8 * i)));
  msg.insert(msg.end(), context.begin(), context.end());
  msg.insert(msg.end(), client.begin(), client.end());
  msg.insert(msg.end(), server.begin(), server.end());
  return hmacSha256(token, msg);
}

bool proofsEqual(const Proof& a, const Proof& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace eccl::security
