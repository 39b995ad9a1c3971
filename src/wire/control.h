// Control messages between peers and the master.
//
// A control frame is a 12-byte header (magic "ECCM", protocol version, type,
// payload length) followed by the payload. decodeControlHeader and
// decodeControl are the only entry points for bytes from the network; they
// reject anything malformed (bad magic, unknown type, short or trailing bytes,
// oversize strings or lists, invalid enum values) with ecclInvalidArgument
// and a message, and never crash. Fuzzed by tests/fuzz/fuzz_control.cc.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "security/auth.h"

namespace eccl::wire {

inline constexpr uint32_t kControlMagic = 0x4d434345;  // "ECCM" little-endian
inline constexpr uint16_t kProtocolVersion = 6;
inline constexpr size_t kControlHeaderBytes = 12;
// What a peer accepts from the master (a Topology of the largest group fits).
inline constexpr uint32_t kMaxControlPayload = 1u << 20;
// What the master accepts from a peer: before it proved the token, and after
// (the largest peer message is a Register or an OpDone with a full message).
inline constexpr uint32_t kMaxPreAuthPayload = 256;
inline constexpr uint32_t kMaxPeerPayload = 16u << 10;
// Free text (error messages): encoders truncate to this, decoders refuse more.
inline constexpr size_t kMaxStringBytes = 4096;
// Host names and addresses (DNS names are at most 253 bytes).
inline constexpr size_t kMaxHostBytes = 255;
// Members of one peer group: the master refuses registrations beyond it, so
// that every Topology fits kMaxControlPayload (static_assert in control.cc)
// and an update's Topologies (one full ring per member: quadratic) stay
// within tens of MB.
inline constexpr size_t kMaxRingPeers = 1024;
// Pipelining segments (one data frame each): the group's size is negotiated
// through the master (the smallest its members announce).
inline constexpr uint32_t kMinSegmentBytes = 4096;
inline constexpr uint32_t kDefaultSegmentBytes = 1u << 20;
inline constexpr uint32_t kMaxSegmentBytes = 64u << 20;

enum class MsgType : uint16_t {
  kRegister = 1,
  kRegisterReply = 2,
  kTopology = 3,
  kVote = 4,
  kPendingQuery = 5,
  kPendingReply = 6,
  kHeartbeat = 7,
  kOpBegin = 8,
  kOpDone = 9,
  kOpVerdict = 10,
  kLeave = 11,
  kKick = 12,
  kSuspect = 13,
  kMemberLost = 14,
  kAuthHello = 15,
  kAuthChallenge = 16,
  kAuthProof = 17,
  kSyncManifest = 18,
  kSyncPlan = 19,
  kProbePlan = 20,
  kProbeReport = 21,
};

struct ControlHeader {
  uint16_t version = kProtocolVersion;
  MsgType type{};
  uint32_t payloadBytes = 0;
};

// Peer -> master: sent once the handshake below has succeeded. The version
// travels in the frame header, so a peer of another version still gets a
// readable reply (to whatever it sent first).
struct Register {
  uint32_t peerGroup = 0;
  std::string dataHost;  // where neighbours dial this peer's data links
  uint16_t dataPort = 0;
  // The peer's op timeout: an op that some members finished and the others
  // did not within it fails on all of them (0: no limit).
  uint32_t opTimeoutMs = 0;
  // The pipelining segment it would use (ECCL_SEGMENT_BYTES).
  uint32_t segmentBytes = kDefaultSegmentBytes;
};

struct RegisterReply {
  uint32_t result = 0;  // ecclResult_t
  uint64_t peerId = 0;
  std::string message;
};

struct RingPeer {
  uint64_t peerId = 0;
  std::string host;
  uint16_t port = 0;
  bool operator==(const RingPeer&) const = default;
};

// Master -> peer: admission, and the answer to a Vote. `ring` lists the
// members of the receiver's peer group in ring order.
struct Topology {
  uint32_t result = 0;
  uint64_t epoch = 0;
  uint32_t peerGroup = 0;
  uint32_t rank = 0;
  std::vector<RingPeer> ring;
  std::string message;
  // The group's segment size: every member cuts its frames to it, and a
  // frame larger than it breaks the link.
  uint32_t segmentBytes = kDefaultSegmentBytes;
};

// ecclCommUpdateTopology, or with `optimize` set ecclCommOptimizeTopology:
// when any member asks for it, the update probes bandwidths first.
struct Vote {
  uint64_t epoch = 0;
  bool optimize = false;
};
struct PendingQuery {};
struct PendingReply {
  uint32_t pending = 0;
};
// Peer -> master every heartbeat interval; the master echoes each one, so
// both sides notice the other's silence.
struct Heartbeat {};
struct Leave {};

// Master -> peer, then the master closes: the peer was declared dead (silent
// past the failure timeout, or cut off from a neighbour) and removed. Its
// calls return ecclKicked; it may connect again as a newcomer.
struct Kick {
  std::string message;
};

// Peer -> master: this peer has been stuck for `silentMs` in op (epoch, tag,
// seq), receiving nothing from `suspect` (its left neighbour), or, with
// `sending` set, unable to hand bytes to it (its right neighbour). Sent again
// every half failure timeout while it lasts. The master decides what it means.
struct Suspect {
  uint64_t epoch = 0;
  uint32_t tag = 0;
  uint64_t seq = 0;
  uint64_t suspect = 0;
  uint32_t silentMs = 0;
  bool sending = false;
};

// What every member must agree on for one (tag, seq).
// The codec of an op on the wire: ecclQuantization_t in the low 4 bits, bit
// 7 set for stochastic rounding; and the block size of the blocked codecs
// (uint8, uint4), 0 for the others.
inline constexpr uint8_t kCodecStochastic = 0x80;
inline uint8_t packCodec(int quant, bool stochastic) {
  return static_cast<uint8_t>(quant | (stochastic ? kCodecStochastic : 0));
}
bool isValidCodec(uint8_t codec, uint16_t blockElems);

struct OpDescriptor {
  uint8_t kind = 0;  // OpKind
  uint8_t dtype = 0;
  uint8_t redop = 0;
  uint64_t count = 0;
  int32_t root = 0;
  uint8_t codec = 0;         // packCodec
  uint16_t blockElems = 0;
  bool operator==(const OpDescriptor&) const = default;
};
// "allreduce(count=N, float32, sum, uint8 block 256)" for messages.
std::string describe(const OpDescriptor& d);

struct OpBegin {
  uint64_t epoch = 0;
  uint32_t tag = 0;
  uint64_t seq = 0;
  OpDescriptor desc;
};
struct OpDone {
  uint64_t epoch = 0;
  uint32_t tag = 0;
  uint64_t seq = 0;
  uint32_t result = 0;
  std::string message;
};
struct OpVerdict {
  uint64_t epoch = 0;
  uint32_t tag = 0;
  uint64_t seq = 0;
  uint32_t result = 0;
  std::string message;
};

// Master -> members of a group: `peerId` left or was removed in `epoch`.
// Members still opening that epoch's links stop waiting for it.
struct MemberLost {
  uint64_t epoch = 0;
  uint64_t peerId = 0;
};

// The handshake that opens every control connection (security/auth.h):
// peer -> master AuthHello, master -> peer AuthChallenge (its nonce and its
// proof, which the peer checks before it answers), peer -> master AuthProof.
// A wrong proof from the peer gets RegisterReply{ecclAuthFailed}.
struct AuthHello {
  security::Nonce clientNonce{};
};
struct AuthChallenge {
  security::Nonce serverNonce{};
  security::Proof serverProof{};
};
struct AuthProof {
  security::Proof clientProof{};
};

// Shared-state sync (docs/state.md). A sync is an op on the reserved tag
// kSyncTag: OpBegin (kind kSync), then the manifest in parts, then the
// master's plan in parts, transfers, OpDone and OpVerdict as for any op.
inline constexpr uint32_t kSyncTag = 0xffffffffu;
inline constexpr size_t kMaxTensorNameBytes = 256;
// Every part of a manifest or plan encodes within this, far below what either
// side accepts, however many tensors a state has.
inline constexpr size_t kMaxSyncPartBytes = 12u << 10;
// A state of more tensors than this is refused (ecclInvalidArgument); it
// bounds what a member's manifest makes the master hold.
inline constexpr uint32_t kMaxSyncTensors = 1u << 16;

struct SyncEntry {
  std::string name;
  uint8_t dtype = 0;
  uint64_t count = 0;
  uint64_t hash = 0;
  bool allowDivergence = false;
  bool operator==(const SyncEntry&) const = default;
};

// Peer -> master: part `part` of `parts` of the state this peer holds for
// sync op (epoch, seq); entries in the caller's order, split over the parts.
struct SyncManifest {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t revision = 0;
  uint8_t strategy = 0;  // ecclSyncStrategy_t
  uint32_t part = 0;
  uint32_t parts = 1;
  uint32_t totalEntries = 0;
  std::vector<SyncEntry> entries;
};

struct SyncFetch {
  uint32_t index = 0;  // into the receiver's manifest
  uint64_t hash = 0;   // the elected content's
  bool operator==(const SyncFetch&) const = default;
};

// Master -> peer: what this peer does in sync op (epoch, seq). `result` is
// not ecclSuccess when this peer is refused (ecclStateMismatch, message says
// why); then nothing else is set. Part 0 carries the peer lists.
struct SyncPlan {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint32_t result = 0;
  std::string message;
  uint64_t revision = 0;  // the group's revision after the sync
  uint32_t part = 0;
  uint32_t parts = 1;
  std::vector<uint64_t> sources;    // peers this one fetches from, in order of preference
  std::vector<uint64_t> receivers;  // peers this one serves
  std::vector<SyncFetch> fetch;     // this peer's tensors to fetch
};

// Cuts a manifest or a plan into parts of at most kMaxSyncPartBytes encoded.
std::vector<SyncManifest> splitManifest(uint64_t epoch, uint64_t seq, uint64_t revision,
                                        uint8_t strategy, const std::vector<SyncEntry>& entries);
std::vector<SyncPlan> splitPlan(const SyncPlan& whole);

// Bandwidth probing (ecclCommOptimizeTopology, docs/topology.md). Once
// every member voted, the master sends each member of a group of at most
// kMaxProbeMembers its plan: one partner per round (peerId 0: it sits out).
// In a round, both partners send to each other for probeMs over a transfer
// channel (wire::probeChannel); each reports what it received.
inline constexpr uint32_t kMaxProbeMembers = 256;
struct ProbePlan {
  uint64_t epoch = 0;
  uint64_t session = 0;
  uint32_t probeMs = 0;
  std::vector<RingPeer> rounds;
};
// What a member received from one partner: bytes/s, 0 when nothing arrived
// (the partner could not reach it).
struct ProbeRate {
  uint64_t from = 0;
  uint64_t bytesPerSecond = 0;
  bool operator==(const ProbeRate&) const = default;
};
// Member -> master, after its last round (or when probing stopped: `result`
// says why, and the rates are those measured so far).
struct ProbeReport {
  uint64_t epoch = 0;
  uint64_t session = 0;
  uint32_t result = 0;
  std::vector<ProbeRate> rates;
};
inline constexpr uint32_t kMaxProbeMs = 60000;
// What a probe round may take beyond its send time (dialling, a partner still
// finishing its previous round, the last frames draining).
inline constexpr uint32_t kProbeRoundSlackMs = 3000;

using ControlMessage = std::variant<Register, RegisterReply, Topology, Vote, PendingQuery,
                                    PendingReply, Heartbeat, OpBegin, OpDone, OpVerdict, Leave,
                                    Kick, Suspect, MemberLost, AuthHello, AuthChallenge, AuthProof,
                                    SyncManifest, SyncPlan, ProbePlan, ProbeReport>;

enum class OpKind : uint8_t { kAllReduce = 1, kBroadcast = 2, kSync = 3, kProbe = 4 };

MsgType typeOf(const ControlMessage& msg);
const char* typeName(MsgType type);

// Header + payload, ready to write. Whatever it encodes decodes within the
// receiver's limits: free text longer than kMaxStringBytes is truncated
// (marked "[truncated]"); hosts are checked on registration, and a Topology
// of kMaxRingPeers members fits kMaxControlPayload.
std::vector<std::byte> encodeControl(const ControlMessage& msg);

Result<ControlHeader> decodeControlHeader(std::span<const std::byte> bytes);
// Decodes a payload of the given type; the whole span must be consumed.
Result<ControlMessage> decodeControl(MsgType type, std::span<const std::byte> payload);

}  // namespace eccl::wire
