// Framing: every message round-trips, and malformed input is rejected.
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
  auto reg = std::get<Register>(roundTrip(Register{"tok", 3, "10.0.0.1", 42, 60000}));
  EXPECT_EQ(reg.authToken, "tok");
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
}

TEST(Wire, RejectsMalformedPayloads) {
  std::vector<std::byte> reg = encodeControl(Register{"t", 0, "h", 1});
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
  encodeHello({5, 6, 1, 4, tokenHash("x")}, hb);
  Result<LinkHello> lh = decodeHello(hb);
  ASSERT_TRUE(lh.hasValue());
  EXPECT_EQ(lh->fromPeer, 5u);
  EXPECT_EQ(lh->streamCount, 4u);
  encodeHello({5, 6, 4, 4, 0}, hb);  // index out of range
  EXPECT_FALSE(decodeHello(hb).hasValue());
  encodeHello({5, 6, 0, 1000, 0}, hb);
  EXPECT_FALSE(decodeHello(hb).hasValue());
  EXPECT_EQ(tokenHash(""), 0u);
  EXPECT_NE(tokenHash("a"), tokenHash("b"));
}

}  // namespace
}  // namespace eccl::wire
