// Mutual HMAC-SHA256 challenge-response on the shared auth token.
//
// Every connection (control channel, each data stream) opens with three
// messages: the dialler's nonce, the listener's nonce with its proof, and the
// dialler's proof. A proof is HMAC-SHA256(token, label | role | purpose |
// context | client nonce | server nonce): both nonces make it useless on any
// other connection, the role keeps one side's proof from serving as the
// other's, and the context binds what the connection is for (for a data
// stream: from, to, epoch, stream index and count), so a stream cannot be
// replayed or moved to another link. The token itself never crosses the wire.
//
// Crypto comes from OpenSSL only (HMAC, RAND_bytes, CRYPTO_memcmp). An empty
// token is a valid key: an open master and its peers still run the exchange,
// which then proves nothing but costs the same, so one code path serves both.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.h"

namespace eccl::security {

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kProofBytes = 32;
using Nonce = std::array<std::byte, kNonceBytes>;
using Proof = std::array<std::byte, kProofBytes>;

enum class Role : uint8_t { kClient = 1, kServer = 2 };
enum class Purpose : uint8_t { kControl = 1, kData = 2 };

// A fresh nonce from OpenSSL's CSPRNG; ecclSystemError if it has no entropy.
Result<Nonce> randomNonce();

// HMAC-SHA256 of `message` under `key`.
Proof hmacSha256(std::string_view key, std::span<const std::byte> message);

// The proof one side sends; `context` is the purpose's binding (may be empty).
Proof makeProof(std::string_view token, Role role, Purpose purpose,
                std::span<const std::byte> context, const Nonce& client, const Nonce& server);

// Constant-time comparison (CRYPTO_memcmp): no secret leaks through timing.
bool proofsEqual(const Proof& a, const Proof& b);

// Checks `got` against the proof `role` must have sent.
inline bool verifyProof(std::string_view token, Role role, Purpose purpose,
                        std::span<const std::byte> context, const Nonce& client,
                        const Nonce& server, const Proof& got) {
  return proofsEqual(makeProof(token, role, purpose, context, client, server), got);
}

}  // namespace eccl::security
