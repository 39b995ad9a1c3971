// Data-link wire formats: the hello that opens each stream, and the fixed
// header in front of every data frame.
//
// Every data frame names (epoch, group, tag, seq, step, segment) and the op
// descriptor (kind, dtype, op, count, root), so a receiver can drop frames of
// an old epoch and detect peers that disagree about an op. The decoders are
// the only way bytes from a data stream are interpreted; they check magic,
// version, enum ranges and sizes. Fuzzed by tests/fuzz/fuzz_data.cc.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "wire/control.h"

namespace eccl::wire {

inline constexpr uint32_t kHelloMagic = 0x48434345;      // "ECCH"
inline constexpr uint32_t kChallengeMagic = 0x43434345;  // "ECCC"
inline constexpr uint32_t kProofMagic = 0x50434345;      // "ECCP"
inline constexpr uint32_t kDataMagic = 0x44434345;       // "ECCD"
inline constexpr uint32_t kShmOfferMagic = 0x53434345;   // "ECCS"
inline constexpr uint32_t kVerbsOfferMagic = 0x52434345;  // "ECCR"
// 8: the RDMA transport's queue-pair exchange (VerbsOffer).
inline constexpr uint16_t kDataVersion = 8;
// Magic and version lead every handshake message, so the version is checked
// (and a readable mismatch logged) before the rest is read.
inline constexpr size_t kHandshakePrefixBytes = 8;
inline constexpr size_t kHelloBytes = 84;
inline constexpr size_t kChallengeBytes = 72;
inline constexpr size_t kProofBytes = 40;
inline constexpr size_t kShmOfferBytes = 80;
inline constexpr size_t kVerbsOfferBytes = 576;
inline constexpr size_t kDataHeaderBytes = 64;
inline constexpr uint32_t kMaxStreams = 64;

// The handshake of every data stream (security/auth.h): the dialler sends a
// LinkHello naming the stream, the acceptor answers with a LinkChallenge (its
// nonce and proof), the dialler checks that and sends a LinkProof. Both
// proofs are bound to linkContext(hello), so a stream cannot be replayed or
// moved to another link, epoch or stream index.
struct LinkHello {
  uint64_t fromPeer = 0;
  uint64_t toPeer = 0;
  uint64_t epoch = 0;
  // Streams 0 .. streamCount-1 open the link; a sender that finds more
  // streams help adds more while the link lives (index >= streamCount).
  uint32_t streamIndex = 0;
  uint32_t streamCount = 0;
  // 0: the ring link the master named. Otherwise a shared-state transfer
  // channel (syncChannel): links of one sync op between two peers.
  uint64_t channel = 0;
  security::Nonce nonce{};
  // kHelloOffersShm on stream 0: once the stream is accepted, the dialler
  // sends a ShmOffer and the acceptor answers one byte (1: the link runs
  // through the shared ring, and stream 0 only watches that both live; 0: a
  // TCP link as usual).
  uint32_t flags = 0;
};
inline constexpr uint32_t kHelloOffersShm = 1;
// kHelloRdma on a link's one stream: an RDMA link (transport "ibverbs"),
// whose VerbsOffer follows the confirmation. An acceptor of another
// transport refuses it, and an RDMA acceptor refuses a hello without it.
inline constexpr uint32_t kHelloRdma = 2;

// Where peers on one host meet: the same kernel (boot id), network and pid
// namespace (so /proc/<pid> names the dialler) and user.
struct HostIdentity {
  std::array<std::byte, 16> bootId{};
  uint64_t netNamespace = 0;
  uint64_t pidNamespace = 0;
  uint32_t uid = 0;
  bool operator==(const HostIdentity&) const = default;
};

// The dialler's shared-memory ring for a link (transport/shm/ring.h): a
// sealed memfd, open as descriptor `fd` of process `pid`, of a 4 KiB header
// (which starts with `nonce`) and `ringBytes` of data.
struct ShmOffer {
  HostIdentity host;
  uint32_t pid = 0;
  uint32_t fd = 0;
  uint64_t ringBytes = 0;
  std::array<std::byte, 16> nonce{};
};
inline constexpr uint64_t kMinShmRingBytes = 64 << 10;
inline constexpr uint64_t kMaxShmRingBytes = 256ull << 20;

// The channel of a shared-state transfer link: sync op `seq`, requests
// (receiver -> source) or data (source -> receiver). Never 0.
enum class SyncDirection : uint64_t { kRequests = 1, kData = 2 };
inline uint64_t syncChannel(uint64_t seq, SyncDirection d) {
  return (seq << 2) | static_cast<uint64_t>(d);
}
// The channel of a bandwidth probe (ecclCommOptimizeTopology): round `round`
// of probe session `session`, each partner sending to the other. Never 0,
// never a sync channel (low bits 3).
inline uint64_t probeChannel(uint64_t session, uint32_t round) {
  return (((session & ((1ull << 40) - 1)) << 20 | (round & 0xfffff)) << 2) | 3;
}
// The channel of a small-message collectives' link (collectives/small.h): to
// the member 2^k places on along the ring, k >= 1 (k = 0 is the ring link).
// Never 0, never a sync or probe channel (low bits 0).
inline uint64_t hopChannel(uint32_t k) { return uint64_t{k} << 2; }
struct LinkChallenge {
  security::Nonce nonce{};
  security::Proof proof{};
};
struct LinkProof {
  security::Proof proof{};
};

struct DataHeader {
  uint8_t kind = 0;  // OpKind
  uint8_t dtype = 0;
  uint8_t redop = 0;
  uint32_t group = 0;
  uint32_t tag = 0;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t count = 0;
  int32_t root = 0;
  uint32_t step = 0;
  uint32_t segment = 0;
  uint32_t payloadBytes = 0;  // encoded size when the op has a codec
  uint8_t codec = 0;          // OpDescriptor::codec
  uint16_t blockElems = 0;

  OpDescriptor descriptor() const { return {kind, dtype, redop, count, root, codec, blockElems}; }
};

// Checks the magic and version that lead a handshake message; a version
// mismatch is ecclVersionMismatch with a readable message.
Status checkHandshakePrefix(std::span<const std::byte> prefix, uint32_t magic, const char* what);

void encodeHello(const LinkHello& hello, std::byte* out /* kHelloBytes */);
Result<LinkHello> decodeHello(std::span<const std::byte> bytes);
void encodeChallenge(const LinkChallenge& c, std::byte* out /* kChallengeBytes */);
Result<LinkChallenge> decodeChallenge(std::span<const std::byte> bytes);
void encodeProof(const LinkProof& p, std::byte* out /* kProofBytes */);
Result<LinkProof> decodeProof(std::span<const std::byte> bytes);
// What both proofs of a stream are bound to: every field of the hello but its nonce.
std::array<std::byte, 44> linkContext(const LinkHello& hello);
// The ring size must be a power of two in [kMinShmRingBytes, kMaxShmRingBytes].
void encodeShmOffer(const ShmOffer& offer, std::byte* out /* kShmOfferBytes */);
Result<ShmOffer> decodeShmOffer(std::span<const std::byte> bytes);

// One side of an RDMA link's set-up (transport/ibverbs/), sent on the link's
// one authenticated TCP stream: the dialler (the sending side) offers its
// queue pairs, the acceptor answers with its own and the receive slots the
// dialler writes into. `refusal` != 0 (an ecclResult_t, acceptor only): it
// could not set up its side, and no queue pair is named.
struct VerbsQp {
  uint32_t qpn = 0;  // 24 bits
  uint32_t psn = 0;  // 24 bits
};
struct VerbsOffer {
  uint32_t refusal = 0;
  uint16_t lid = 0;      // InfiniBand; 0 on RoCE
  uint8_t mtu = 0;       // ibv_mtu, 1 (256 B) .. 5 (4096 B)
  uint8_t global = 0;    // 1: address by gid (RoCE, or IB across subnets)
  std::array<std::byte, 16> gid{};
  uint64_t slotAddress = 0;  // acceptor: its receive slots, slotsPerQp per queue pair in order
  uint32_t rkey = 0;
  uint32_t slotBytes = 0;
  uint32_t slotsPerQp = 0;
  std::vector<VerbsQp> qps;  // 1 .. kMaxStreams (0 with a refusal)
};
inline constexpr uint32_t kMinVerbsSlotBytes = 4096;
inline constexpr uint32_t kMaxVerbsSlotBytes = 16u << 20;
inline constexpr uint32_t kMaxVerbsSlotsPerQp = 1024;
void encodeVerbsOffer(const VerbsOffer& offer, std::byte* out /* kVerbsOfferBytes */);
// `acceptor`: the answer, which must name the receive slots (the dialler's
// offer names none).
Result<VerbsOffer> decodeVerbsOffer(std::span<const std::byte> bytes, bool acceptor);

// A shared-state transfer request (receiver -> source, the payload of a
// kSync frame on the requests channel): `length` bytes at `offset` of tensor
// `tensor` (its place in the elected state, sorted by name), answered with a
// kSync frame of the same step on the data channel. `done`: no more requests.
struct SyncRequest {
  uint32_t tensor = 0;
  bool done = false;
  uint64_t offset = 0;
  uint64_t length = 0;
};
inline constexpr size_t kSyncRequestBytes = 24;
void encodeSyncRequest(const SyncRequest& r, std::byte* out /* kSyncRequestBytes */);
Result<SyncRequest> decodeSyncRequest(std::span<const std::byte> bytes);

void encodeDataHeader(const DataHeader& h, std::byte* out /* kDataHeaderBytes */);
Result<DataHeader> decodeDataHeader(std::span<const std::byte> bytes);

}  // namespace eccl::wire
