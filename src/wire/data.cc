#include "wire/data.h"

#include <fmt/format.h>

#include <algorithm>

#include "wire/codec.h"

namespace eccl::wire {
namespace {

void copyOut(Writer& w, std::byte* out, size_t n) {
  std::vector<std::byte>& b = w.bytes();
  b.resize(n);  // zero padding up to the fixed size
  std::copy(b.begin(), b.end(), out);
}

}  // namespace

Status checkHandshakePrefix(std::span<const std::byte> prefix, uint32_t magic,
                           const char* what) {
  Reader r(prefix);
  uint32_t m = 0;
  uint16_t version = 0;
  if (!(r.u32(&m) && r.u16(&version))) return error(ecclInvalidArgument, fmt::format("short {}", what));
  if (m != magic) {
    return error(ecclInvalidArgument, fmt::format("bad {} magic {:#010x}: not an ECCL data link",
                                                  what, m));
  }
  if (version != kDataVersion) {
    return error(ecclVersionMismatch, fmt::format("{} of data link version {} (this build speaks "
                                                  "{})", what, version, kDataVersion));
  }
  return Status::ok();
}

namespace {

void putPrefix(Writer& w, uint32_t magic) {
  w.u32(magic);
  w.u16(kDataVersion);
  w.u16(0);
}

// Checks size and prefix, then hands a Reader positioned after the prefix.
Status openMessage(std::span<const std::byte> bytes, size_t size, uint32_t magic, const char* what,
                   Reader* r) {
  if (bytes.size() != size) return error(ecclInvalidArgument, fmt::format("short {}", what));
  ECCL_RETURN_IF_ERROR(checkHandshakePrefix(bytes.first(kHandshakePrefixBytes), magic, what));
  *r = Reader(bytes.subspan(kHandshakePrefixBytes));
  return Status::ok();
}

}  // namespace

void encodeHello(const LinkHello& hello, std::byte* out) {
  Writer w;
  putPrefix(w, kHelloMagic);
  w.u64(hello.fromPeer);
  w.u64(hello.toPeer);
  w.u64(hello.epoch);
  w.u32(hello.streamIndex);
  w.u32(hello.streamCount);
  w.u64(hello.channel);
  w.fixed(hello.nonce);
  w.u32(hello.flags);
  copyOut(w, out, kHelloBytes);
}

Result<LinkHello> decodeHello(std::span<const std::byte> bytes) {
  Reader r({});
  ECCL_RETURN_IF_ERROR(openMessage(bytes, kHelloBytes, kHelloMagic, "link hello", &r));
  LinkHello h;
  r.u64(&h.fromPeer);
  r.u64(&h.toPeer);
  r.u64(&h.epoch);
  r.u32(&h.streamIndex);
  r.u32(&h.streamCount);
  r.u64(&h.channel);
  r.fixed(&h.nonce);
  r.u32(&h.flags);
  const bool shm = (h.flags & kHelloOffersShm) != 0, rdma = (h.flags & kHelloRdma) != 0;
  if ((h.flags & ~(kHelloOffersShm | kHelloRdma)) != 0 || (shm && (h.streamIndex != 0 || rdma)) ||
      (rdma && (h.streamIndex != 0 || h.streamCount != 1))) {
    return error(ecclInvalidArgument, fmt::format("link hello with flags {:#x} on stream {}", h.flags,
                                                  h.streamIndex));
  }
  if (h.streamCount == 0 || h.streamCount > kMaxStreams || h.streamIndex >= kMaxStreams) {
    return error(ecclInvalidArgument, fmt::format("link hello with stream {} of {}",
                                                  h.streamIndex, h.streamCount));
  }
  if (h.fromPeer == h.toPeer) {
    return error(ecclInvalidArgument, fmt::format("link hello from peer {} to itself", h.fromPeer));
  }
  return h;
}

void encodeChallenge(const LinkChallenge& c, std::byte* out) {
  Writer w;
  putPrefix(w, kChallengeMagic);
  w.fixed(c.nonce);
  w.fixed(c.proof);
  copyOut(w, out, kChallengeBytes);
}

Result<LinkChallenge> decodeChallenge(std::span<const std::byte> bytes) {
  Reader r({});
  ECCL_RETURN_IF_ERROR(openMessage(bytes, kChallengeBytes, kChallengeMagic, "link challenge", &r));
  LinkChallenge c;
  r.fixed(&c.nonce);
  r.fixed(&c.proof);
  return c;
}

void encodeProof(const LinkProof& p, std::byte* out) {
  Writer w;
  putPrefix(w, kProofMagic);
  w.fixed(p.proof);
  copyOut(w, out, kProofBytes);
}

Result<LinkProof> decodeProof(std::span<const std::byte> bytes) {
  Reader r({});
  ECCL_RETURN_IF_ERROR(openMessage(bytes, kProofBytes, kProofMagic, "link proof", &r));
  LinkProof p;
  r.fixed(&p.proof);
  return p;
}

std::array<std::byte, 44> linkContext(const LinkHello& hello) {
  Writer w;
  w.u64(hello.fromPeer);
  w.u64(hello.toPeer);
  w.u64(hello.epoch);
  w.u32(hello.streamIndex);
  w.u32(hello.streamCount);
  w.u64(hello.channel);
  w.u32(hello.flags);
  std::array<std::byte, 44> out{};
  std::copy(w.bytes().begin(), w.bytes().end(), out.begin());
  return out;
}

void encodeShmOffer(const ShmOffer& o, std::byte* out) {
  Writer w;
  putPrefix(w, kShmOfferMagic);
  w.fixed(o.host.bootId);
  w.u64(o.host.netNamespace);
  w.u64(o.host.pidNamespace);
  w.u32(o.host.uid);
  w.u32(o.pid);
  w.u32(o.fd);
  w.u64(o.ringBytes);
  w.fixed(o.nonce);
  copyOut(w, out, kShmOfferBytes);
}

Result<ShmOffer> decodeShmOffer(std::span<const std::byte> bytes) {
  Reader r({});
  ECCL_RETURN_IF_ERROR(openMessage(bytes, kShmOfferBytes, kShmOfferMagic, "shared-memory offer", &r));
  ShmOffer o;
  r.fixed(&o.host.bootId);
  r.u64(&o.host.netNamespace);
  r.u64(&o.host.pidNamespace);
  r.u32(&o.host.uid);
  r.u32(&o.pid);
  r.u32(&o.fd);
  r.u64(&o.ringBytes);
  r.fixed(&o.nonce);
  if (o.ringBytes < kMinShmRingBytes || o.ringBytes > kMaxShmRingBytes ||
      (o.ringBytes & (o.ringBytes - 1)) != 0) {
    return error(ecclInvalidArgument, fmt::format("shared-memory offer of a {}-byte ring", o.ringBytes));
  }
  if (o.pid == 0 || o.fd > static_cast<uint32_t>(INT32_MAX)) {
    return error(ecclInvalidArgument, fmt::format("shared-memory offer naming descriptor {} of "
                                                  "process {}", o.fd, o.pid));
  }
  return o;
}

void encodeVerbsOffer(const VerbsOffer& o, std::byte* out) {
  Writer w;
  putPrefix(w, kVerbsOfferMagic);
  w.u32(o.refusal);
  w.u16(o.lid);
  w.u8(o.mtu);
  w.u8(o.global);
  w.fixed(o.gid);
  w.u64(o.slotAddress);
  w.u32(o.rkey);
  w.u32(o.slotBytes);
  w.u32(o.slotsPerQp);
  w.u32(static_cast<uint32_t>(o.qps.size()));
  for (const VerbsQp& q : o.qps) {
    w.u32(q.qpn);
    w.u32(q.psn);
  }
  copyOut(w, out, kVerbsOfferBytes);
}

Result<VerbsOffer> decodeVerbsOffer(std::span<const std::byte> bytes, bool acceptor) {
  Reader r({});
  ECCL_RETURN_IF_ERROR(openMessage(bytes, kVerbsOfferBytes, kVerbsOfferMagic, "RDMA link offer", &r));
  VerbsOffer o;
  uint32_t count = 0;
  r.u32(&o.refusal);
  r.u16(&o.lid);
  r.u8(&o.mtu);
  r.u8(&o.global);
  r.fixed(&o.gid);
  r.u64(&o.slotAddress);
  r.u32(&o.rkey);
  r.u32(&o.slotBytes);
  r.u32(&o.slotsPerQp);
  r.u32(&count);
  auto bad = [](std::string why) {
    return error(ecclInvalidArgument, fmt::format("RDMA link offer: {}", why));
  };
  if (o.refusal != 0) {
    if (!acceptor || count != 0) return bad("a refusal from the dialler, or one naming queue pairs");
    return o;
  }
  if (count == 0 || count > kMaxStreams) return bad(fmt::format("{} queue pairs", count));
  if (o.mtu < 1 || o.mtu > 5 || o.global > 1) return bad(fmt::format("mtu {} / global {}", o.mtu, o.global));
  for (uint32_t i = 0; i < count; ++i) {
    VerbsQp q;
    r.u32(&q.qpn);
    r.u32(&q.psn);
    if (q.qpn == 0 || q.qpn >= (1u << 24) || q.psn >= (1u << 24)) {
      return bad(fmt::format("queue pair {} / psn {}", q.qpn, q.psn));
    }
    o.qps.push_back(q);
  }
  if (acceptor) {
    if (o.slotBytes < kMinVerbsSlotBytes || o.slotBytes > kMaxVerbsSlotBytes || o.slotsPerQp < 2 ||
        o.slotsPerQp > kMaxVerbsSlotsPerQp || o.slotAddress == 0 || o.rkey == 0) {
      return bad(fmt::format("{} slots of {} bytes at {:#x}", o.slotsPerQp, o.slotBytes, o.slotAddress));
    }
    // The region's end must not wrap the address space.
    const uint64_t span = uint64_t{o.slotBytes} * o.slotsPerQp * count;
    if (o.slotAddress > UINT64_MAX - span) return bad("slots past the end of the address space");
  } else if (o.slotAddress != 0 || o.rkey != 0 || o.slotBytes != 0 || o.slotsPerQp != 0) {
    return bad("receive slots offered by the sending side");
  }
  return o;
}

void encodeDataHeader(const DataHeader& h, std::byte* out) {
  Writer w;
  w.u32(kDataMagic);
  w.u16(kDataVersion);
  w.u8(h.kind);
  w.u8(h.dtype);
  w.u8(h.redop);
  w.u8(h.codec);
  w.u16(h.blockElems);
  w.u32(h.group);
  w.u32(h.tag);
  w.u64(h.epoch);
  w.u64(h.seq);
  w.u64(h.count);
  w.i32(h.root);
  w.u32(h.step);
  w.u32(h.segment);
  w.u32(h.payloadBytes);
  copyOut(w, out, kDataHeaderBytes);
}

Result<DataHeader> decodeDataHeader(std::span<const std::byte> bytes) {
  if (bytes.size() != kDataHeaderBytes) return error(ecclInvalidArgument, "short data header");
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0;
  DataHeader h;
  r.u32(&magic);
  r.u16(&version);
  r.u8(&h.kind);
  r.u8(&h.dtype);
  r.u8(&h.redop);
  r.u8(&h.codec);
  r.u16(&h.blockElems);
  r.u32(&h.group);
  r.u32(&h.tag);
  r.u64(&h.epoch);
  r.u64(&h.seq);
  r.u64(&h.count);
  r.i32(&h.root);
  r.u32(&h.step);
  r.u32(&h.segment);
  r.u32(&h.payloadBytes);
  if (magic != kDataMagic) {
    return error(ecclInvalidArgument, fmt::format("bad data frame magic {:#010x}", magic));
  }
  if (version != kDataVersion) {
    return error(ecclVersionMismatch, fmt::format("data frame version {}", version));
  }
  if ((h.kind < static_cast<uint8_t>(OpKind::kAllReduce) ||
       h.kind > static_cast<uint8_t>(OpKind::kProbe)) ||
      h.dtype >= ecclNumTypes || h.redop >= ecclNumOps || !isValidCodec(h.codec, h.blockElems)) {
    return error(ecclInvalidArgument,
                 fmt::format("data frame with kind {} dtype {} op {} codec {:#x} block {}", h.kind,
                             h.dtype, h.redop, h.codec, h.blockElems));
  }
  if (h.payloadBytes > kMaxSegmentBytes) {
    return error(ecclInvalidArgument,
                 fmt::format("data frame payload of {} bytes exceeds {}", h.payloadBytes,
                             kMaxSegmentBytes));
  }
  return h;
}

void encodeSyncRequest(const SyncRequest& r, std::byte* out) {
  Writer w;
  w.u32(r.tensor);
  w.u32(r.done ? 1u : 0u);
  w.u64(r.offset);
  w.u64(r.length);
  copyOut(w, out, kSyncRequestBytes);
}

Result<SyncRequest> decodeSyncRequest(std::span<const std::byte> bytes) {
  if (bytes.size() != kSyncRequestBytes) {
    return error(ecclInvalidArgument, fmt::format("sync request of {} bytes", bytes.size()));
  }
  Reader r(bytes);
  SyncRequest q;
  uint32_t flags = 0;
  r.u32(&q.tensor);
  r.u32(&flags);
  r.u64(&q.offset);
  r.u64(&q.length);
  if (flags > 1) return error(ecclInvalidArgument, fmt::format("sync request flags {:#x}", flags));
  q.done = flags == 1;
  if (q.length > kMaxSegmentBytes || q.offset > (uint64_t{1} << 56)) {
    return error(ecclInvalidArgument, fmt::format("sync request for {} bytes at {}", q.length,
                                                  q.offset));
  }
  return q;
}

}  // namespace eccl::wire
