// libFuzzer target: the data-link handshake (hello, challenge, proof,
// shared-memory offer, RDMA link offer), data
// frame headers and shared-state transfer requests. Any input must decode or
// fail cleanly; what decodes must re-encode to what decodes the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "wire/data.h"

namespace {

using namespace eccl::wire;

// Decodes the first N bytes with `decode`; a success must round-trip.
template <size_t N, typename Decode, typename Encode, typename Same>
void roundTrip(std::span<const std::byte> in, Decode decode, Encode encode, Same same) {
  (void)decode(in);  // any length
  if (in.size() < N) return;
  auto first = decode(in.first(N));
  if (!first) return;
  std::byte out[N];
  encode(*first, out);
  auto again = decode(std::span<const std::byte>(out, N));
  if (!again || !same(*first, *again)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  if (in.size() >= kHandshakePrefixBytes) {
    (void)checkHandshakePrefix(in.first(kHandshakePrefixBytes), kHelloMagic, "hello");
  }
  roundTrip<kHelloBytes>(in, decodeHello, encodeHello, [](const LinkHello& a, const LinkHello& b) {
    return linkContext(a) == linkContext(b) && a.nonce == b.nonce;
  });
  roundTrip<kShmOfferBytes>(in, decodeShmOffer, encodeShmOffer,
                            [](const ShmOffer& a, const ShmOffer& b) {
                              return a.host == b.host && a.pid == b.pid && a.fd == b.fd &&
                                     a.ringBytes == b.ringBytes && a.nonce == b.nonce;
                            });
  for (bool acceptor : {false, true}) {
    roundTrip<kVerbsOfferBytes>(
        in, [acceptor](std::span<const std::byte> b) { return decodeVerbsOffer(b, acceptor); },
        encodeVerbsOffer, [](const VerbsOffer& a, const VerbsOffer& b) {
          bool same = a.refusal == b.refusal && a.lid == b.lid && a.mtu == b.mtu &&
                      a.global == b.global && a.gid == b.gid && a.slotAddress == b.slotAddress &&
                      a.rkey == b.rkey && a.slotBytes == b.slotBytes &&
                      a.slotsPerQp == b.slotsPerQp && a.qps.size() == b.qps.size();
          for (size_t i = 0; same && i < a.qps.size(); ++i) {
            same = a.qps[i].qpn == b.qps[i].qpn && a.qps[i].psn == b.qps[i].psn;
          }
          return same;
        });
  }
  roundTrip<kChallengeBytes>(in, decodeChallenge, encodeChallenge,
                             [](const LinkChallenge& a, const LinkChallenge& b) {
                               return a.nonce == b.nonce && a.proof == b.proof;
                             });
  roundTrip<kProofBytes>(in, decodeProof, encodeProof,
                         [](const LinkProof& a, const LinkProof& b) { return a.proof == b.proof; });
  roundTrip<kSyncRequestBytes>(in, decodeSyncRequest, encodeSyncRequest,
                               [](const SyncRequest& a, const SyncRequest& b) {
                                 return a.tensor == b.tensor && a.done == b.done &&
                                        a.offset == b.offset && a.length == b.length;
                               });
  roundTrip<kDataHeaderBytes>(in, decodeDataHeader, encodeDataHeader,
                              [](const DataHeader& a, const DataHeader& b) {
                                return a.descriptor() == b.descriptor() &&
                                       a.payloadBytes == b.payloadBytes && a.seq == b.seq;
                              });
  return 0;
}
