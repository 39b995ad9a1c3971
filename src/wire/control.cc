#include "wire/control.h"

#include <fmt/format.h>

#include "codec/codec.h"
#include "common/dtype.h"
#include "wire/codec.h"

namespace eccl::wire {
namespace {

// The largest Topology (kMaxRingPeers entries of id, longest host, port,
// plus the fixed fields and a full message) must fit what a peer accepts.
static_assert(kMaxRingPeers * (8 + 4 + kMaxHostBytes + 2) + 68 + kMaxStringBytes <=
              kMaxControlPayload);

constexpr std::string_view kTruncated = " [truncated]";

// Free text is cut to what every decoder accepts, marked as cut.
std::string clip(const std::string& s) {
  if (s.size() <= kMaxStringBytes) return s;
  return s.substr(0, kMaxStringBytes - kTruncated.size()) + std::string(kTruncated);
}

// One put/get pair per message; the two must mirror each other.
void put(Writer& w, const Register& m) {
  w.u32(m.peerGroup);
  w.str(m.dataHost);
  w.u16(m.dataPort);
  w.u32(m.opTimeoutMs);
  w.u32(m.segmentBytes);
}

bool segmentInRange(uint32_t bytes) {
  return bytes >= kMinSegmentBytes && bytes <= kMaxSegmentBytes;
}
bool get(Reader& r, Register* m) {
  return r.u32(&m->peerGroup) && r.str(&m->dataHost, kMaxHostBytes) && r.u16(&m->dataPort) &&
         r.u32(&m->opTimeoutMs) && r.u32(&m->segmentBytes) && segmentInRange(m->segmentBytes);
}

void put(Writer& w, const RegisterReply& m) {
  w.u32(m.result);
  w.u64(m.peerId);
  w.str(clip(m.message));
}
bool get(Reader& r, RegisterReply* m) {
  return r.u32(&m->result) && m->result < ecclNumResults && r.u64(&m->peerId) &&
         r.str(&m->message, kMaxStringBytes);
}

// A list of (peer id, host, port): a ring, or a probe plan's partners.
void putPeers(Writer& w, const std::vector<RingPeer>& peers) {
  w.u32(static_cast<uint32_t>(peers.size()));
  for (const RingPeer& p : peers) {
    w.u64(p.peerId);
    w.str(p.host);
    w.u16(p.port);
  }
}
bool getPeers(Reader& r, std::vector<RingPeer>* peers, size_t most) {
  uint32_t n = 0;
  // Each entry takes at least 14 bytes: refuse counts the input cannot hold.
  if (!r.u32(&n) || n > most || n > r.remaining() / 14) return false;
  peers->resize(n);
  for (RingPeer& p : *peers) {
    if (!(r.u64(&p.peerId) && r.str(&p.host, kMaxHostBytes) && r.u16(&p.port))) return false;
  }
  return true;
}

void put(Writer& w, const Topology& m) {
  w.u32(m.result);
  w.u64(m.epoch);
  w.u32(m.peerGroup);
  w.u32(m.rank);
  putPeers(w, m.ring);
  w.str(clip(m.message));
  w.u32(m.segmentBytes);
}
bool get(Reader& r, Topology* m) {
  if (!(r.u32(&m->result) && m->result < ecclNumResults && r.u64(&m->epoch) &&
        r.u32(&m->peerGroup) && r.u32(&m->rank) && getPeers(r, &m->ring, kMaxRingPeers))) {
    return false;
  }
  if (!r.str(&m->message, kMaxStringBytes) || !r.u32(&m->segmentBytes) ||
      !segmentInRange(m->segmentBytes)) {
    return false;
  }
  return m->ring.empty() ? m->rank == 0 : m->rank < m->ring.size();
}

void put(Writer& w, const Vote& m) {
  w.u64(m.epoch);
  w.u8(m.optimize ? 1 : 0);
}
bool get(Reader& r, Vote* m) {
  uint8_t optimize = 0;
  if (!(r.u64(&m->epoch) && r.u8(&optimize) && optimize <= 1)) return false;
  m->optimize = optimize == 1;
  return true;
}

void put(Writer& w, const ProbePlan& m) {
  w.u64(m.epoch);
  w.u64(m.session);
  w.u32(m.probeMs);
  putPeers(w, m.rounds);
}
bool get(Reader& r, ProbePlan* m) {
  return r.u64(&m->epoch) && r.u64(&m->session) && r.u32(&m->probeMs) && m->probeMs > 0 &&
         m->probeMs <= kMaxProbeMs && getPeers(r, &m->rounds, kMaxProbeMembers);
}

void put(Writer& w, const ProbeReport& m) {
  w.u64(m.epoch);
  w.u64(m.session);
  w.u32(m.result);
  w.u32(static_cast<uint32_t>(m.rates.size()));
  for (const ProbeRate& p : m.rates) {
    w.u64(p.from);
    w.u64(p.bytesPerSecond);
  }
}
bool get(Reader& r, ProbeReport* m) {
  uint32_t n = 0;
  if (!(r.u64(&m->epoch) && r.u64(&m->session) && r.u32(&m->result) &&
        m->result < ecclNumResults && r.u32(&n) && n <= kMaxProbeMembers &&
        n <= r.remaining() / 16)) {
    return false;
  }
  m->rates.resize(n);
  for (ProbeRate& p : m->rates) {
    if (!(r.u64(&p.from) && r.u64(&p.bytesPerSecond))) return false;
  }
  return true;
}

void put(Writer&, const PendingQuery&) {}
bool get(Reader&, PendingQuery*) { return true; }

void put(Writer& w, const PendingReply& m) { w.u32(m.pending); }
bool get(Reader& r, PendingReply* m) { return r.u32(&m->pending); }

void put(Writer&, const Heartbeat&) {}
bool get(Reader&, Heartbeat*) { return true; }

void put(Writer&, const Leave&) {}
bool get(Reader&, Leave*) { return true; }

void put(Writer& w, const Kick& m) { w.str(clip(m.message)); }
bool get(Reader& r, Kick* m) { return r.str(&m->message, kMaxStringBytes); }

void put(Writer& w, const Suspect& m) {
  w.u64(m.epoch);
  w.u32(m.tag);
  w.u64(m.seq);
  w.u64(m.suspect);
  w.u32(m.silentMs);
  w.u8(m.sending ? 1 : 0);
}
bool get(Reader& r, Suspect* m) {
  uint8_t sending = 0;
  if (!(r.u64(&m->epoch) && r.u32(&m->tag) && r.u64(&m->seq) && r.u64(&m->suspect) &&
        r.u32(&m->silentMs) && r.u8(&sending) && sending <= 1)) {
    return false;
  }
  m->sending = sending == 1;
  return true;
}

void put(Writer& w, const MemberLost& m) {
  w.u64(m.epoch);
  w.u64(m.peerId);
}
bool get(Reader& r, MemberLost* m) { return r.u64(&m->epoch) && r.u64(&m->peerId); }

void put(Writer& w, const OpBegin& m) {
  w.u64(m.epoch);
  w.u32(m.tag);
  w.u64(m.seq);
  w.u8(m.desc.kind);
  w.u8(m.desc.dtype);
  w.u8(m.desc.redop);
  w.u64(m.desc.count);
  w.i32(m.desc.root);
  w.u8(m.desc.codec);
  w.u16(m.desc.blockElems);
}
bool get(Reader& r, OpBegin* m) {
  return r.u64(&m->epoch) && r.u32(&m->tag) && r.u64(&m->seq) && r.u8(&m->desc.kind) &&
         m->desc.kind >= 1 && m->desc.kind <= 3 && r.u8(&m->desc.dtype) &&
         m->desc.dtype < ecclNumTypes && r.u8(&m->desc.redop) && m->desc.redop < ecclNumOps &&
         r.u64(&m->desc.count) && r.i32(&m->desc.root) && r.u8(&m->desc.codec) &&
         r.u16(&m->desc.blockElems) && isValidCodec(m->desc.codec, m->desc.blockElems);
}

void put(Writer& w, const SyncEntry& e) {
  w.str(e.name);
  w.u8(e.dtype);
  w.u64(e.count);
  w.u64(e.hash);
  w.u8(e.allowDivergence ? 1 : 0);
}
constexpr size_t kSyncEntryMinBytes = 4 + 1 + 8 + 8 + 1;
bool get(Reader& r, SyncEntry* e) {
  uint8_t divergent = 0;
  return r.str(&e->name, kMaxTensorNameBytes) && r.u8(&e->dtype) && e->dtype < ecclNumTypes &&
         r.u64(&e->count) && r.u64(&e->hash) && r.u8(&divergent) && divergent <= 1 &&
         ((e->allowDivergence = divergent == 1), true);
}

void put(Writer& w, const SyncManifest& m) {
  w.u64(m.epoch);
  w.u64(m.seq);
  w.u64(m.revision);
  w.u8(m.strategy);
  w.u32(m.part);
  w.u32(m.parts);
  w.u32(m.totalEntries);
  w.u32(static_cast<uint32_t>(m.entries.size()));
  for (const SyncEntry& e : m.entries) put(w, e);
}
bool get(Reader& r, SyncManifest* m) {
  uint32_t n = 0;
  if (!(r.u64(&m->epoch) && r.u64(&m->seq) && r.u64(&m->revision) && r.u8(&m->strategy) &&
        m->strategy < ecclNumSyncStrategies && r.u32(&m->part) && r.u32(&m->parts) &&
        m->part < m->parts && r.u32(&m->totalEntries) && m->totalEntries <= kMaxSyncTensors &&
        r.u32(&n) && n <= m->totalEntries && n <= r.remaining() / kSyncEntryMinBytes)) {
    return false;
  }
  m->entries.resize(n);
  for (SyncEntry& e : m->entries) {
    if (!get(r, &e)) return false;
  }
  return true;
}

void putIds(Writer& w, const std::vector<uint64_t>& ids) {
  w.u32(static_cast<uint32_t>(ids.size()));
  for (uint64_t id : ids) w.u64(id);
}
bool getIds(Reader& r, std::vector<uint64_t>* ids) {
  uint32_t n = 0;
  if (!r.u32(&n) || n > kMaxRingPeers || n > r.remaining() / 8) return false;
  ids->resize(n);
  for (uint64_t& id : *ids) {
    if (!r.u64(&id)) return false;
  }
  return true;
}

void put(Writer& w, const SyncPlan& m) {
  w.u64(m.epoch);
  w.u64(m.seq);
  w.u32(m.result);
  w.str(clip(m.message));
  w.u64(m.revision);
  w.u32(m.part);
  w.u32(m.parts);
  putIds(w, m.sources);
  putIds(w, m.receivers);
  w.u32(static_cast<uint32_t>(m.fetch.size()));
  for (const SyncFetch& f : m.fetch) {
    w.u32(f.index);
    w.u64(f.hash);
  }
}
bool get(Reader& r, SyncPlan* m) {
  uint32_t n = 0;
  if (!(r.u64(&m->epoch) && r.u64(&m->seq) && r.u32(&m->result) && m->result < ecclNumResults &&
        r.str(&m->message, kMaxStringBytes) && r.u64(&m->revision) && r.u32(&m->part) &&
        r.u32(&m->parts) && m->part < m->parts && getIds(r, &m->sources) &&
        getIds(r, &m->receivers) && r.u32(&n) && n <= kMaxSyncTensors && n <= r.remaining() / 12)) {
    return false;
  }
  m->fetch.resize(n);
  for (SyncFetch& f : m->fetch) {
    if (!(r.u32(&f.index) && f.index < kMaxSyncTensors && r.u64(&f.hash))) return false;
  }
  return true;
}

template <typename T>  // OpDone and OpVerdict share a layout
void putResultMsg(Writer& w, const T& m) {
  w.u64(m.epoch);
  w.u32(m.tag);
  w.u64(m.seq);
  w.u32(m.result);
  w.str(clip(m.message));
}
template <typename T>
bool getResultMsg(Reader& r, T* m) {
  return r.u64(&m->epoch) && r.u32(&m->tag) && r.u64(&m->seq) && r.u32(&m->result) &&
         m->result < ecclNumResults && r.str(&m->message, kMaxStringBytes);
}
void put(Writer& w, const OpDone& m) { putResultMsg(w, m); }
bool get(Reader& r, OpDone* m) { return getResultMsg(r, m); }
void put(Writer& w, const OpVerdict& m) { putResultMsg(w, m); }
bool get(Reader& r, OpVerdict* m) { return getResultMsg(r, m); }

void put(Writer& w, const AuthHello& m) { w.fixed(m.clientNonce); }
bool get(Reader& r, AuthHello* m) { return r.fixed(&m->clientNonce); }
void put(Writer& w, const AuthChallenge& m) {
  w.fixed(m.serverNonce);
  w.fixed(m.serverProof);
}
bool get(Reader& r, AuthChallenge* m) {
  return r.fixed(&m->serverNonce) && r.fixed(&m->serverProof);
}
void put(Writer& w, const AuthProof& m) { w.fixed(m.clientProof); }
bool get(Reader& r, AuthProof* m) { return r.fixed(&m->clientProof); }

template <typename T>
Result<ControlMessage> decodeAs(MsgType type, std::span<const std::byte> payload) {
  Reader r(payload);
  T msg{};
  if (!get(r, &msg)) {
    return error(ecclInvalidArgument,
                 fmt::format("malformed {} message ({} bytes)", typeName(type), payload.size()));
  }
  if (!r.atEnd()) {
    return error(ecclInvalidArgument, fmt::format("{} message has {} trailing bytes",
                                                  typeName(type), r.remaining()));
  }
  return ControlMessage(std::move(msg));
}

}  // namespace

std::string describe(const OpDescriptor& d) {
  const char* kind = d.kind == static_cast<uint8_t>(OpKind::kAllReduce) ? "allreduce" : "broadcast";
  std::string codec;
  if (d.codec != 0) {
    codec = fmt::format(", {}{}", quantName(static_cast<ecclQuantization_t>(d.codec & ~kCodecStochastic)),
                        (d.codec & kCodecStochastic) != 0 ? " stochastic" : "");
    if (d.blockElems != 0) codec += fmt::format(" block {}", d.blockElems);
  }
  if (d.kind == static_cast<uint8_t>(OpKind::kBroadcast)) {
    return fmt::format("{}(count={}, {}, root={}{})", kind, d.count,
                       dtypeName(static_cast<ecclDataType_t>(d.dtype)), d.root, codec);
  }
  return fmt::format("{}(count={}, {}, {}{})", kind, d.count,
                     dtypeName(static_cast<ecclDataType_t>(d.dtype)),
                     opName(static_cast<ecclRedOp_t>(d.redop)), codec);
}

bool isValidCodec(uint8_t codec, uint16_t blockElems) {
  const int quant = codec & ~kCodecStochastic;
  switch (quant) {
    case ecclQuantNone:
      return codec == 0 && blockElems == 0;
    case ecclQuantFloat16:
    case ecclQuantBfloat16:
      return blockElems == 0;
    case ecclQuantUint8:
    case ecclQuantUint4:
      return blockElems >= codec::kMinBlockElems && blockElems <= codec::kMaxBlockElems &&
             blockElems % 8 == 0;
    default:
      return false;
  }
}

MsgType typeOf(const ControlMessage& msg) {
  return static_cast<MsgType>(msg.index() + 1);  // variant order == MsgType order
}

const char* typeName(MsgType type) {
  switch (type) {
    case MsgType::kRegister: return "Register";
    case MsgType::kRegisterReply: return "RegisterReply";
    case MsgType::kTopology: return "Topology";
    case MsgType::kVote: return "Vote";
    case MsgType::kPendingQuery: return "PendingQuery";
    case MsgType::kPendingReply: return "PendingReply";
    case MsgType::kHeartbeat: return "Heartbeat";
    case MsgType::kOpBegin: return "OpBegin";
    case MsgType::kOpDone: return "OpDone";
    case MsgType::kOpVerdict: return "OpVerdict";
    case MsgType::kLeave: return "Leave";
    case MsgType::kKick: return "Kick";
    case MsgType::kSuspect: return "Suspect";
    case MsgType::kMemberLost: return "MemberLost";
    case MsgType::kAuthHello: return "AuthHello";
    case MsgType::kAuthChallenge: return "AuthChallenge";
    case MsgType::kAuthProof: return "AuthProof";
    case MsgType::kSyncManifest: return "SyncManifest";
    case MsgType::kSyncPlan: return "SyncPlan";
    case MsgType::kProbePlan: return "ProbePlan";
    case MsgType::kProbeReport: return "ProbeReport";
  }
  return "unknown";
}

std::vector<std::byte> encodeControl(const ControlMessage& msg) {
  Writer w;
  w.u32(kControlMagic);
  w.u16(kProtocolVersion);
  w.u16(static_cast<uint16_t>(typeOf(msg)));
  w.u32(0);  // payload length, patched below
  std::visit([&w](const auto& m) { put(w, m); }, msg);
  std::vector<std::byte>& out = w.bytes();
  const uint32_t len = static_cast<uint32_t>(out.size() - kControlHeaderBytes);
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<std::byte>(len >> (8 * i));
  return std::move(out);
}

Result<ControlHeader> decodeControlHeader(std::span<const std::byte> bytes) {
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t type = 0;
  ControlHeader h;
  if (!(r.u32(&magic) && r.u16(&h.version) && r.u16(&type) && r.u32(&h.payloadBytes))) {
    return error(ecclInvalidArgument, "short control header");
  }
  if (magic != kControlMagic) {
    return error(ecclInvalidArgument,
                 fmt::format("bad control magic {:#010x}: not an ECCL peer or master", magic));
  }
  if (h.version != kProtocolVersion) {
    // Before anything else of the frame: a peer of another version learns
    // that, not that its message type or size looks wrong.
    return error(ecclVersionMismatch, fmt::format("protocol version {} (this build speaks {})",
                                                  h.version, kProtocolVersion));
  }
  if (type < static_cast<uint16_t>(MsgType::kRegister) ||
      type > static_cast<uint16_t>(MsgType::kProbeReport)) {
    return error(ecclInvalidArgument, fmt::format("unknown control message type {}", type));
  }
  if (h.payloadBytes > kMaxControlPayload) {
    return error(ecclInvalidArgument,
                 fmt::format("control payload of {} bytes exceeds {}", h.payloadBytes,
                             kMaxControlPayload));
  }
  h.type = static_cast<MsgType>(type);
  return h;
}

Result<ControlMessage> decodeControl(MsgType type, std::span<const std::byte> payload) {
  switch (type) {
    case MsgType::kRegister: return decodeAs<Register>(type, payload);
    case MsgType::kRegisterReply: return decodeAs<RegisterReply>(type, payload);
    case MsgType::kTopology: return decodeAs<Topology>(type, payload);
    case MsgType::kVote: return decodeAs<Vote>(type, payload);
    case MsgType::kPendingQuery: return decodeAs<PendingQuery>(type, payload);
    case MsgType::kPendingReply: return decodeAs<PendingReply>(type, payload);
    case MsgType::kHeartbeat: return decodeAs<Heartbeat>(type, payload);
    case MsgType::kOpBegin: return decodeAs<OpBegin>(type, payload);
    case MsgType::kOpDone: return decodeAs<OpDone>(type, payload);
    case MsgType::kOpVerdict: return decodeAs<OpVerdict>(type, payload);
    case MsgType::kLeave: return decodeAs<Leave>(type, payload);
    case MsgType::kKick: return decodeAs<Kick>(type, payload);
    case MsgType::kSuspect: return decodeAs<Suspect>(type, payload);
    case MsgType::kMemberLost: return decodeAs<MemberLost>(type, payload);
    case MsgType::kAuthHello: return decodeAs<AuthHello>(type, payload);
    case MsgType::kAuthChallenge: return decodeAs<AuthChallenge>(type, payload);
    case MsgType::kAuthProof: return decodeAs<AuthProof>(type, payload);
    case MsgType::kSyncManifest: return decodeAs<SyncManifest>(type, payload);
    case MsgType::kSyncPlan: return decodeAs<SyncPlan>(type, payload);
    case MsgType::kProbePlan: return decodeAs<ProbePlan>(type, payload);
    case MsgType::kProbeReport: return decodeAs<ProbeReport>(type, payload);
  }
  return error(ecclInvalidArgument, "unknown control message type");
}

std::vector<SyncManifest> splitManifest(uint64_t epoch, uint64_t seq, uint64_t revision,
                                        uint8_t strategy, const std::vector<SyncEntry>& entries) {
  std::vector<SyncManifest> parts;
  SyncManifest cur{epoch, seq, revision, strategy, 0, 1, static_cast<uint32_t>(entries.size()), {}};
  size_t bytes = 41;  // the fixed fields
  for (const SyncEntry& e : entries) {
    const size_t add = kSyncEntryMinBytes + e.name.size();
    if (!cur.entries.empty() && bytes + add > kMaxSyncPartBytes) {
      parts.push_back(std::move(cur));
      cur = {epoch, seq, revision, strategy, 0, 1, static_cast<uint32_t>(entries.size()), {}};
      bytes = 41;
    }
    cur.entries.push_back(e);
    bytes += add;
  }
  parts.push_back(std::move(cur));
  for (size_t i = 0; i < parts.size(); ++i) {
    parts[i].part = static_cast<uint32_t>(i);
    parts[i].parts = static_cast<uint32_t>(parts.size());
  }
  return parts;
}

std::vector<SyncPlan> splitPlan(const SyncPlan& whole) {
  // Part 0 carries the message and the peer lists (at most 2 * kMaxRingPeers
  // ids, 16 KiB: over a part's budget, but far under what a peer accepts).
  constexpr size_t kFetchPerPart = kMaxSyncPartBytes / 12;
  std::vector<SyncPlan> parts;
  size_t next = 0;
  do {
    SyncPlan p;
    p.epoch = whole.epoch;
    p.seq = whole.seq;
    p.result = whole.result;
    p.revision = whole.revision;
    if (parts.empty()) {
      p.message = whole.message;
      p.sources = whole.sources;
      p.receivers = whole.receivers;
    }
    const size_t n = std::min(kFetchPerPart, whole.fetch.size() - next);
    p.fetch.assign(whole.fetch.begin() + static_cast<std::ptrdiff_t>(next),
                   whole.fetch.begin() + static_cast<std::ptrdiff_t>(next + n));
    next += n;
    parts.push_back(std::move(p));
  } while (next < whole.fetch.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    parts[i].part = static_cast<uint32_t>(i);
    parts[i].parts = static_cast<uint32_t>(parts.size());
  }
  return parts;
}

}  // namespace eccl::wire
