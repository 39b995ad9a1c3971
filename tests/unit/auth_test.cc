// The handshake's crypto: OpenSSL's HMAC-SHA256 and what each proof is bound to.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "security/auth.h"

namespace eccl::security {
namespace {

std::string hex(const Proof& p) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::byte b : p) {
    s += digits[static_cast<unsigned>(b) >> 4];
    s += digits[static_cast<unsigned>(b) & 15];
  }
  return s;
}

std::span<const std::byte> bytesOf(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(Auth, HmacSha256MatchesRfc4231) {
  // RFC 4231, test case 2.
  EXPECT_EQ(hex(hmacSha256("Jefe", bytesOf("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Auth, NoncesAreFresh) {
  std::set<Nonce> seen;
  for (int i = 0; i < 64; ++i) {
    Result<Nonce> n = randomNonce();
    ASSERT_TRUE(n.hasValue());
    EXPECT_TRUE(seen.insert(*n).second);
  }
}

TEST(Auth, ProofsAreBoundToTokenRolePurposeContextAndBothNonces) {
  const Nonce c = randomNonce().value(), s = randomNonce().value(), other = randomNonce().value();
  const std::byte ctx[] = {std::byte{1}, std::byte{2}};
  const std::byte ctx2[] = {std::byte{1}, std::byte{3}};
  const Proof p = makeProof("tok", Role::kClient, Purpose::kData, ctx, c, s);
  EXPECT_TRUE(verifyProof("tok", Role::kClient, Purpose::kData, ctx, c, s, p));
  // Each ingredient changes the proof: a proof made for anything else fails.
  EXPECT_FALSE(verifyProof("tok2", Role::kClient, Purpose::kData, ctx, c, s, p));
  EXPECT_FALSE(verifyProof("", Role::kClient, Purpose::kData, ctx, c, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kServer, Purpose::kData, ctx, c, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kControl, ctx, c, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kData, ctx2, c, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kData, {}, c, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kData, ctx, other, s, p));
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kData, ctx, c, other, p));
  // Swapping the nonces (a reflected handshake) does not verify either.
  EXPECT_FALSE(verifyProof("tok", Role::kClient, Purpose::kData, ctx, s, c, p));
  Proof flipped = p;
  flipped[31] ^= std::byte{1};
  EXPECT_FALSE(proofsEqual(p, flipped));
}

}  // namespace
}  // namespace eccl::security
