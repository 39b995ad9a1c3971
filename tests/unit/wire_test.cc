// Framing: every message round-trips, and malformed input is rejected.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "wire/codec.h"
#include "wire/control.h"
#include "wire/data.h"

namespace eccl::wire {
namespace {

ControlMessage roundTrip(const ControlMessage& m) {
  std::vector<std::byte> bytes = encodeControl(m);
  Result<ControlHeader> h = decodeControlHeader(std::span(bytes).first(kControlHeaderBytes));
  EXPECT_TRUE(h.hasValue());
  EXPECT_EQ(h->payloadBytes, bytes.size() - kControlHeaderBytes);
  Result<ControlMessage> d = decodeControl(h->type, std::span(bytes).subspan(kControlHeaderBytes));
  EXPECT_TRUE(d.hasValue()) << d.status().message();
  return *d;
}

TEST(Wire, ControlMessagesRoundTrip) {
  Topology t{0, 7, 2, 1, {{1, "127.0.0.1", 5000}, {9, "::1", 6000}}, "hi"};
  auto back = std::get<Topology>(roundTrip(t));
  EXPECT_EQ(back.epoch, 7u);
  EXPECT_EQ(back.rank, 1u);
  EXPECT_EQ(back.ring, t.ring);
  EXPECT_EQ(back.message, "hi");
  auto reg = std::get<Register>(roundTrip(Register{3, "10.0.0.1", 42, 60000}));
  EXPECT_EQ(reg.dataHost, "10.0.0.1");
  EXPECT_EQ(reg.segmentBytes, kDefaultSegmentBytes);
  Topology seg = t;
  seg.segmentBytes = 8192;
  EXPECT_EQ(std::get<Topology>(roundTrip(seg)).segmentBytes, 8192u);
  for (uint32_t bad : {kMinSegmentBytes - 1, kMaxSegmentBytes + 1}) {
    std::vector<std::byte> r = encodeControl(Register{0, "h", 1, 0, bad});
    EXPECT_FALSE(decodeControl(MsgType::kRegister, std::span(r).subspan(kControlHeaderBytes)).hasValue());
  }
  EXPECT_EQ(reg.peerGroup, 3u);
  EXPECT_EQ(reg.dataPort, 42);
  EXPECT_EQ(reg.opTimeoutMs, 60000u);
  auto begin = std::get<OpBegin>(roundTrip(OpBegin{5, 6, 7, {2, ecclFloat16, 0, 1ull << 40, -1}}));
  EXPECT_EQ(begin.desc, (OpDescriptor{2, ecclFloat16, 0, 1ull << 40, -1}));
  auto verdict = std::get<OpVerdict>(roundTrip(OpVerdict{1, 2, 3, ecclPeerLost, "gone"}));
  EXPECT_EQ(verdict.result, static_cast<uint32_t>(ecclPeerLost));
  EXPECT_EQ(verdict.message, "gone");
  EXPECT_TRUE(std::holds_alternative<Heartbeat>(roundTrip(Heartbeat{})));
  EXPECT_TRUE(std::holds_alternative<Leave>(roundTrip(Leave{})));
  EXPECT_EQ(std::get<PendingReply>(roundTrip(PendingReply{4})).pending, 4u);
  EXPECT_EQ(std::get<Kick>(roundTrip(Kick{"silent for 2000 ms"})).message, "silent for 2000 ms");
  auto sus = std::get<Suspect>(roundTrip(Suspect{3, 4, 5, 6, 1000, true}));
  EXPECT_TRUE(sus.sending);
  EXPECT_EQ(sus.epoch, 3u);
  EXPECT_EQ(sus.tag, 4u);
  EXPECT_EQ(sus.seq, 5u);
  EXPECT_EQ(sus.suspect, 6u);
  EXPECT_EQ(sus.silentMs, 1000u);
  auto lost = std::get<MemberLost>(roundTrip(MemberLost{9, 12}));
  EXPECT_EQ(lost.epoch, 9u);
  EXPECT_EQ(lost.peerId, 12u);
  AuthChallenge ch;
  ch.serverNonce[0] = std::byte{7};
  ch.serverProof[31] = std::byte{9};
  auto chBack = std::get<AuthChallenge>(roundTrip(ch));
  EXPECT_EQ(chBack.serverNonce, ch.serverNonce);
  EXPECT_EQ(chBack.serverProof, ch.serverProof);
  AuthHello hello;
  hello.clientNonce[3] = std::byte{1};
  EXPECT_EQ(std::get<AuthHello>(roundTrip(hello)).clientNonce, hello.clientNonce);
  AuthProof proof;
  proof.clientProof[0] = std::byte{0xff};
  EXPECT_EQ(std::get<AuthProof>(roundTrip(proof)).clientProof, proof.clientProof);
}

// Whatever the master encodes decodes at the peer: long texts are clipped and
// marked, and the largest Topology fits the peer's frame limit.
TEST(Wire, EncodersStayWithinTheDecodersLimits) {
  const std::string longText(3 * kMaxStringBytes, 'x');
  auto v = std::get<OpVerdict>(roundTrip(OpVerdict{1, 2, 3, ecclPeerLost, "peer 7: " + longText}));
  EXPECT_EQ(v.message.size(), kMaxStringBytes);
  EXPECT_EQ(v.message.substr(0, 8), "peer 7: ");
  EXPECT_NE(v.message.find("[truncated]"), std::string::npos);
  EXPECT_EQ(std::get<Kick>(roundTrip(Kick{longText})).message.size(), kMaxStringBytes);
  EXPECT_EQ(std::get<RegisterReply>(roundTrip(RegisterReply{ecclAuthFailed, 0, longText}))
                .message.size(),
            kMaxStringBytes);
  Topology big{0, 1, 0, 0, {}, longText};
  for (uint64_t i = 0; i < kMaxRingPeers; ++i) {
    big.ring.push_back({i + 1, std::string(kMaxHostBytes, 'h'), 65535});
  }
  std::vector<std::byte> bytes = encodeControl(big);
  EXPECT_LE(bytes.size() - kControlHeaderBytes, kMaxControlPayload);
  EXPECT_EQ(std::get<Topology>(roundTrip(big)).ring.size(), kMaxRingPeers);
  // A host longer than any DNS name is refused.
  std::vector<std::byte> reg = encodeControl(Register{0, std::string(kMaxHostBytes + 1, 'h'), 1, 0});
  EXPECT_FALSE(decodeControl(MsgType::kRegister, std::span(reg).subspan(kControlHeaderBytes)).hasValue());
}

TEST(Wire, RejectsBadHeaders) {
  std::vector<std::byte> bytes = encodeControl(Heartbeat{});
  EXPECT_FALSE(decodeControlHeader(std::span(bytes).first(5)).hasValue());
  auto bad = bytes;
  bad[0] = std::byte{'X'};
  EXPECT_EQ(decodeControlHeader(bad).status().code(), ecclInvalidArgument);
  bad = bytes;
  bad[6] = std::byte{200};  // type
  EXPECT_NE(decodeControlHeader(bad).status().message().find("unknown"), std::string::npos);
  bad = bytes;
  bad[11] = std::byte{0x7f};  // 2 GiB payload
  EXPECT_FALSE(decodeControlHeader(bad).hasValue());
  // Another version is reported as such, before its type or size is judged.
  bad = bytes;
  bad[4] = std::byte{kProtocolVersion - 1};
  bad[6] = std::byte{200};
  Result<ControlHeader> old = decodeControlHeader(bad);
  EXPECT_EQ(old.status().code(), ecclVersionMismatch);
  EXPECT_NE(old.status().message().find(fmt::format("protocol version {} (this build speaks {})",
                                                    kProtocolVersion - 1, kProtocolVersion)),
            std::string::npos) << old.status().message();
}

TEST(Wire, ProbeMessagesRoundTripAndRejectMalformed) {
  EXPECT_TRUE(std::get<Vote>(roundTrip(Vote{4, true})).optimize);
  EXPECT_FALSE(std::get<Vote>(roundTrip(Vote{4, false})).optimize);
  ProbePlan plan{3, 9, 250, {{2, "10.0.0.2", 7000}, {0, "", 0}, {5, "h5", 1}}};
  auto back = std::get<ProbePlan>(roundTrip(plan));
  EXPECT_EQ(back.epoch, 3u);
  EXPECT_EQ(back.session, 9u);
  EXPECT_EQ(back.probeMs, 250u);
  EXPECT_EQ(back.rounds, plan.rounds);
  ProbeReport rep{3, 9, ecclSuccess, {{2, 123456789}, {5, 0}}};
  auto rback = std::get<ProbeReport>(roundTrip(rep));
  EXPECT_EQ(rback.rates, rep.rates);
  EXPECT_EQ(rback.session, 9u);
  const auto payloadOf = [](const ControlMessage& m) {
    std::vector<std::byte> b = encodeControl(m);
    return std::vector<std::byte>(b.begin() + kControlHeaderBytes, b.end());
  };
  // A vote flag other than 0 or 1.
  std::vector<std::byte> v = payloadOf(Vote{1, true});
  v.back() = std::byte{2};
  EXPECT_FALSE(decodeControl(MsgType::kVote, v).hasValue());
  // Probe times of 0 or beyond the limit.
  EXPECT_FALSE(decodeControl(MsgType::kProbePlan, payloadOf(ProbePlan{1, 1, 0, {}})).hasValue());
  EXPECT_FALSE(
      decodeControl(MsgType::kProbePlan, payloadOf(ProbePlan{1, 1, kMaxProbeMs + 1, {}})).hasValue());
  // More rounds than any group may have, or than the input holds.
  Writer w;
  w.u64(1); w.u64(1); w.u32(100); w.u32(kMaxProbeMembers + 1);
  EXPECT_FALSE(decodeControl(MsgType::kProbePlan, w.bytes()).hasValue());
  Writer r;
  r.u64(1); r.u64(1); r.u32(0); r.u32(1000);
  EXPECT_FALSE(decodeControl(MsgType::kProbeReport, r.bytes()).hasValue());
  // A result code out of range; truncation anywhere.
  EXPECT_FALSE(decodeControl(MsgType::kProbeReport, payloadOf(ProbeReport{1, 1, 999, {}})).hasValue());
  const std::vector<std::byte> full = payloadOf(rep);
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(decodeControl(MsgType::kProbeReport, std::span(full).first(n)).hasValue()) << n;
  }
  // Probe channels never collide with sync channels or the ring link.
  EXPECT_NE(probeChannel(1, 0), 0u);
  EXPECT_EQ(probeChannel(7, 3) & 3, 3u);
  EXPECT_NE(probeChannel(7, 3), probeChannel(7, 4));
  EXPECT_NE(probeChannel(7, 3), probeChannel(8, 3));
}

TEST(Wire, RejectsMalformedPayloads) {
  std::vector<std::byte> reg = encodeControl(Register{0, "h", 1, 0});
  std::span<const std::byte> payload = std::span(reg).subspan(kControlHeaderBytes);
  // Truncated at every length.
  for (size_t n = 0; n < payload.size(); ++n) {
    EXPECT_FALSE(decodeControl(MsgType::kRegister, payload.first(n)).hasValue()) << n;
  }
  // Trailing bytes.
  std::vector<std::byte> longer(payload.begin(), payload.end());
  longer.push_back(std::byte{0});
  EXPECT_NE(decodeControl(MsgType::kRegister, longer).status().message().find("trailing"),
            std::string::npos);
  // A string length larger than the input.
  Writer w;
  w.u32(1u << 30);
  EXPECT_FALSE(decodeControl(MsgType::kRegister, w.bytes()).hasValue());
  // A ring count that the input cannot hold.
  Writer t;
  t.u32(0); t.u64(1); t.u32(0); t.u32(0); t.u32(1000000);
  EXPECT_FALSE(decodeControl(MsgType::kTopology, t.bytes()).hasValue());
  // Rank outside the ring.
  std::vector<std::byte> topo = encodeControl(Topology{0, 1, 0, 5, {{1, "h", 1}}, ""});
  EXPECT_FALSE(decodeControl(MsgType::kTopology, std::span(topo).subspan(kControlHeaderBytes)).hasValue());
  // Result codes out of range.
  std::vector<std::byte> v = encodeControl(OpVerdict{1, 2, 3, 999, ""});
  EXPECT_FALSE(decodeControl(MsgType::kOpVerdict, std::span(v).subspan(kControlHeaderBytes)).hasValue());
  // Invalid op kind / dtype.
  std::vector<std::byte> b = encodeControl(OpBegin{1, 1, 1, {7, 0, 0, 1, 0}});
  EXPECT_FALSE(decodeControl(MsgType::kOpBegin, std::span(b).subspan(kControlHeaderBytes)).hasValue());
}

TEST(Wire, DataHeaderAndHello) {
  DataHeader h;
  h.kind = 1; h.dtype = ecclBfloat16; h.redop = ecclMax; h.group = 3; h.tag = 9; h.epoch = 11;
  h.seq = 1ull << 33; h.count = 12345; h.root = 2; h.step = 5; h.segment = 77; h.payloadBytes = 4096;
  std::byte buf[kDataHeaderBytes];
  encodeDataHeader(h, buf);
  Result<DataHeader> d = decodeDataHeader(buf);
  ASSERT_TRUE(d.hasValue());
  EXPECT_EQ(d->descriptor(), h.descriptor());
  EXPECT_EQ(d->seq, h.seq);
  EXPECT_EQ(d->segment, 77u);
  EXPECT_EQ(d->payloadBytes, 4096u);
  buf[0] = std::byte{0};
  EXPECT_FALSE(decodeDataHeader(buf).hasValue());
  encodeDataHeader(h, buf);
  buf[4] = std::byte{9};  // version
  EXPECT_EQ(decodeDataHeader(buf).status().code(), ecclVersionMismatch);
  h.payloadBytes = kMaxSegmentBytes + 1;
  encodeDataHeader(h, buf);
  EXPECT_FALSE(decodeDataHeader(buf).hasValue());
  h.payloadBytes = 1; h.dtype = 200;
  encodeDataHeader(h, buf);
  EXPECT_FALSE(decodeDataHeader(buf).hasValue());

  std::byte hb[kHelloBytes];
  LinkHello hello{5, 6, 11, 1, 4, 0, {}};
  hello.nonce[0] = std::byte{42};
  encodeHello(hello, hb);
  Result<LinkHello> lh = decodeHello(hb);
  ASSERT_TRUE(lh.hasValue());
  EXPECT_EQ(lh->fromPeer, 5u);
  EXPECT_EQ(lh->toPeer, 6u);
  EXPECT_EQ(lh->epoch, 11u);
  EXPECT_EQ(lh->streamCount, 4u);
  EXPECT_EQ(lh->nonce, hello.nonce);
  EXPECT_EQ(linkContext(*lh), linkContext(hello));
  encodeHello({5, 6, 1, 4, 4, {}}, hb);  // a stream added to a 4-stream link
  EXPECT_TRUE(decodeHello(hb).hasValue());
  encodeHello({5, 6, 1, kMaxStreams, 4, {}}, hb);  // index out of range
  EXPECT_FALSE(decodeHello(hb).hasValue());
  encodeHello({5, 6, 1, 0, 1000, {}}, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  encodeHello({5, 5, 1, 0, 1, {}}, hb);  // to itself
  EXPECT_FALSE(decodeHello(hb).hasValue());
  encodeHello(hello, hb);
  hb[4] = std::byte{1};  // a version-1 peer
  EXPECT_EQ(decodeHello(hb).status().code(), ecclVersionMismatch);
  EXPECT_EQ(checkHandshakePrefix(std::span(hb).first(kHandshakePrefixBytes), kHelloMagic, "hello")
                .code(),
            ecclVersionMismatch);
  // The shared-memory flag: only on stream 0, no unknown bits.
  LinkHello offers = hello;
  offers.streamIndex = 0;
  offers.flags = kHelloOffersShm;
  encodeHello(offers, hb);
  ASSERT_TRUE(decodeHello(hb).hasValue());
  EXPECT_EQ(decodeHello(hb)->flags, kHelloOffersShm);
  offers.streamIndex = 1;
  encodeHello(offers, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  offers.streamIndex = 0;
  offers.flags = 4;
  encodeHello(offers, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  // The RDMA flag: a link of one stream, never with a shared-memory offer.
  offers.flags = kHelloRdma;
  offers.streamCount = 1;
  encodeHello(offers, hb);
  ASSERT_TRUE(decodeHello(hb).hasValue());
  EXPECT_EQ(decodeHello(hb)->flags, kHelloRdma);
  offers.flags = kHelloRdma | kHelloOffersShm;
  encodeHello(offers, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  offers.flags = kHelloRdma;
  offers.streamCount = 2;
  encodeHello(offers, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  // Every field but the nonce changes the context the proofs are bound to.
  for (int field = 0; field < 7; ++field) {
    LinkHello other = hello;
    switch (field) {
      case 0: other.fromPeer++; break;
      case 1: other.toPeer++; break;
      case 2: other.epoch++; break;
      case 3: other.streamIndex++; break;
      case 4: other.streamCount++; break;
      case 5: other.channel++; break;
      case 6: other.flags ^= kHelloOffersShm; break;
    }
    EXPECT_NE(linkContext(other), linkContext(hello)) << field;
  }

  LinkChallenge c;
  c.nonce[1] = std::byte{3};
  c.proof[2] = std::byte{4};
  std::byte cb[kChallengeBytes];
  encodeChallenge(c, cb);
  Result<LinkChallenge> cback = decodeChallenge(cb);
  ASSERT_TRUE(cback.hasValue());
  EXPECT_EQ(cback->nonce, c.nonce);
  EXPECT_EQ(cback->proof, c.proof);
  EXPECT_FALSE(decodeHello(std::span(cb).first(kHelloBytes)).hasValue());  // wrong magic
  LinkProof pr;
  pr.proof[5] = std::byte{6};
  std::byte pb[kProofBytes];
  encodeProof(pr, pb);
  Result<LinkProof> pback = decodeProof(pb);
  ASSERT_TRUE(pback.hasValue());
  EXPECT_EQ(pback->proof, pr.proof);
  EXPECT_FALSE(decodeProof(std::span(pb).first(kProofBytes - 1)).hasValue());
}

TEST(Wire, VerbsOfferRoundTripsAndRejectsBadOffers) {
  VerbsOffer o;
  o.lid = 17;
  o.mtu = 5;
  o.global = 1;
  o.gid[15] = std::byte{3};
  o.qps = {{0x123, 0xabcdef}, {0xfffffe, 0}};
  std::byte b[kVerbsOfferBytes];
  encodeVerbsOffer(o, b);
  Result<VerbsOffer> d = decodeVerbsOffer(b, /*acceptor=*/false);
  ASSERT_TRUE(d.hasValue()) << d.status().message();
  EXPECT_EQ(d->lid, 17);
  EXPECT_EQ(d->gid, o.gid);
  ASSERT_EQ(d->qps.size(), 2u);
  EXPECT_EQ(d->qps[1].qpn, 0xfffffeu);
  EXPECT_EQ(d->qps[0].psn, 0xabcdefu);
  // The dialler's offer names no slots; the acceptor's answer must.
  EXPECT_FALSE(decodeVerbsOffer(b, /*acceptor=*/true).hasValue());
  VerbsOffer a = o;
  a.slotAddress = 0x7f0000000000;
  a.rkey = 99;
  a.slotBytes = 256 << 10;
  a.slotsPerQp = 8;
  encodeVerbsOffer(a, b);
  d = decodeVerbsOffer(b, /*acceptor=*/true);
  ASSERT_TRUE(d.hasValue()) << d.status().message();
  EXPECT_EQ(d->slotAddress, a.slotAddress);
  EXPECT_EQ(d->slotsPerQp, 8u);
  EXPECT_FALSE(decodeVerbsOffer(b, /*acceptor=*/false).hasValue());
  auto rejects = [&](VerbsOffer x, bool acceptor, const char* what) {
    encodeVerbsOffer(x, b);
    EXPECT_FALSE(decodeVerbsOffer(b, acceptor).hasValue()) << what;
  };
  VerbsOffer x = o;
  x.qps.clear();
  rejects(x, false, "no queue pairs");
  x.qps.assign(kMaxStreams, {1, 1});
  encodeVerbsOffer(x, b);
  EXPECT_TRUE(decodeVerbsOffer(b, false).hasValue()) << "the most queue pairs";
  x = o;
  x.qps[0].qpn = 1u << 24;
  rejects(x, false, "a 25-bit queue pair number");
  x = o;
  x.qps[0].psn = 1u << 24;
  rejects(x, false, "a 25-bit psn");
  x = o;
  x.mtu = 6;
  rejects(x, false, "mtu 6");
  x = a;
  x.slotBytes = kMaxVerbsSlotBytes * 2;
  rejects(x, true, "huge slots");
  x = a;
  x.slotsPerQp = kMaxVerbsSlotsPerQp + 1;
  rejects(x, true, "too many slots");
  x = a;
  x.slotAddress = UINT64_MAX - 4096;
  rejects(x, true, "slots wrapping the address space");
  x = VerbsOffer{};
  x.refusal = ecclUnsupported;
  encodeVerbsOffer(x, b);
  d = decodeVerbsOffer(b, true);
  ASSERT_TRUE(d.hasValue());
  EXPECT_EQ(d->refusal, static_cast<uint32_t>(ecclUnsupported));
  rejects(x, false, "a refusal from the dialler");
  encodeVerbsOffer(o, b);
  EXPECT_FALSE(decodeVerbsOffer(std::span(b).first(kVerbsOfferBytes - 1), false).hasValue());
  b[4] = std::byte{7};  // a version-7 peer
  EXPECT_EQ(decodeVerbsOffer(b, false).status().code(), ecclVersionMismatch);
}

TEST(Wire, ShmOfferRoundTripsAndRejectsBadRings) {
  ShmOffer o;
  o.host.bootId[3] = std::byte{7};
  o.host.netNamespace = 4026531833;
  o.host.pidNamespace = 4026531836;
  o.host.uid = 1000;
  o.pid = 4242;
  o.fd = 17;
  o.ringBytes = 4 << 20;
  o.nonce[5] = std::byte{9};
  std::byte b[kShmOfferBytes];
  encodeShmOffer(o, b);
  Result<ShmOffer> d = decodeShmOffer(b);
  ASSERT_TRUE(d.hasValue()) << d.status().message();
  EXPECT_EQ(d->host, o.host);
  EXPECT_EQ(d->pid, 4242u);
  EXPECT_EQ(d->fd, 17u);
  EXPECT_EQ(d->ringBytes, o.ringBytes);
  EXPECT_EQ(d->nonce, o.nonce);
  EXPECT_FALSE(decodeShmOffer(std::span(b).first(kShmOfferBytes - 1)).hasValue());
  for (uint64_t bad : {uint64_t{0}, kMinShmRingBytes / 2, kMaxShmRingBytes * 2, (uint64_t{4} << 20) + 4096}) {
    ShmOffer x = o;
    x.ringBytes = bad;
    encodeShmOffer(x, b);
    EXPECT_FALSE(decodeShmOffer(b).hasValue()) << bad;
  }
  ShmOffer x = o;
  x.pid = 0;
  encodeShmOffer(x, b);
  EXPECT_FALSE(decodeShmOffer(b).hasValue());
  x = o;
  x.fd = 0x80000000u;
  encodeShmOffer(x, b);
  EXPECT_FALSE(decodeShmOffer(b).hasValue());
  encodeShmOffer(o, b);
  b[4] = std::byte{6};  // a version-6 peer
  EXPECT_EQ(decodeShmOffer(b).status().code(), ecclVersionMismatch);
}

}  // namespace
}  // namespace eccl::wire
