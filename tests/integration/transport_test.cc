// The TCP transport on its own: links, and a neighbour that goes away.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <vector>

#include "transport/transport.h"

namespace eccl::transport {
namespace {

const CancelFlag kNever{0};

Deadline soon() { return Clock::now() + std::chrono::seconds(5); }

struct Pair {
  std::unique_ptr<Transport> a, b;
  std::unique_ptr<Link> aToB, bFromA;
};

Pair connectPair(uint32_t streams) {
  Pair p;
  TransportOptions o;
  o.bindAddress = "127.0.0.1";
  o.streams = streams;
  p.a = createTransport("tcp", o).value();
  p.b = createTransport("tcp", o).value();
  auto dial = std::async(std::launch::async, [&] {
    return p.a->connect({2, "127.0.0.1", p.b->port()}, /*selfId=*/1, /*epoch=*/7, soon(), kNever);
  });
  Result<std::unique_ptr<Link>> in = p.b->accept(1, 7, soon(), kNever);
  Result<std::unique_ptr<Link>> out = dial.get();
  EXPECT_TRUE(in.hasValue() && out.hasValue());
  if (in) p.bFromA = std::move(*in);
  if (out) p.aToB = std::move(*out);
  return p;
}

wire::DataHeader header(uint32_t segment, uint32_t bytes) {
  wire::DataHeader h;
  h.kind = 1;
  h.dtype = ecclUint8;
  h.tag = 5;
  h.epoch = 7;
  h.count = bytes;
  h.segment = segment;
  h.payloadBytes = bytes;
  return h;
}

TEST(TcpTransport, FramesArriveByKeyAcrossStreams) {
  Pair p = connectPair(4);
  ASSERT_TRUE(p.aToB && p.bFromA);
  EXPECT_EQ(p.aToB->streamCount(), 4u);
  CancelFlag go{0};
  std::vector<uint8_t> data(100000);
  for (uint32_t seg = 0; seg < 16; ++seg) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i + seg);
    ASSERT_TRUE(p.aToB->send(header(seg, static_cast<uint32_t>(data.size())), data.data(), soon(), go, nullptr).isOk());
  }
  for (uint32_t seg = 16; seg-- > 0;) {  // ask in reverse order
    Result<Frame> f = p.bFromA->recv({5, 0, 0, seg}, soon(), go);
    ASSERT_TRUE(f.hasValue()) << f.status().message();
    ASSERT_EQ(f->bytes().size(), data.size());
    EXPECT_EQ(static_cast<uint8_t>(f->bytes()[1000]), static_cast<uint8_t>(1000 + seg));
  }
}

// Writing to a neighbour that closed its end must fail with ecclPeerLost, not
// raise SIGPIPE (which would end this test binary).
TEST(TcpTransport, SendToAClosedPeerFailsWithoutSigpipe) {
  Pair p = connectPair(2);
  ASSERT_TRUE(p.aToB && p.bFromA);
  p.bFromA.reset();
  p.b.reset();
  CancelFlag go{0};
  std::vector<uint8_t> data(1 << 20);
  Status st;
  for (uint32_t seg = 0; seg < 200 && st.isOk(); ++seg) {
    st = p.aToB->send(header(seg, static_cast<uint32_t>(data.size())), data.data(), soon(), go, nullptr);
  }
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find("peer 2"), std::string::npos) << st.message();
}

TEST(TcpTransport, AcceptTimesOutNamingThePeer) {
  TransportOptions o;
  o.bindAddress = "127.0.0.1";
  auto t = createTransport("tcp", o).value();
  Result<std::unique_ptr<Link>> in = t->accept(42, 1, Clock::now() + std::chrono::milliseconds(100), kNever);
  EXPECT_EQ(in.status().code(), ecclTimeout);
  EXPECT_NE(in.status().message().find("42"), std::string::npos);
}

}  // namespace
}  // namespace eccl::transport
