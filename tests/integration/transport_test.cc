// The TCP transport on its own: links, and a neighbour that goes away.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "transport/tcp/socket.h"
#include "transport/transport.h"

namespace eccl::transport {
namespace {

const CancelFlag kNever{0};

Deadline soon() { return Clock::now() + std::chrono::seconds(5); }

struct Pair {
  std::unique_ptr<Transport> a, b;
  std::unique_ptr<Link> aToB, bFromA;
};

Pair connectPair(TransportOptions o) {
  Pair p;
  o.bindAddress = "127.0.0.1";
  p.a = createTransport("tcp", o).value();
  p.b = createTransport("tcp", o).value();
  auto dial = std::async(std::launch::async, [&] {
    return p.a->connect({2, "127.0.0.1", p.b->port()}, /*selfId=*/1, /*epoch=*/7, soon(), kNever);
  });
  Result<std::unique_ptr<Link>> in = p.b->accept(/*selfId=*/2, /*from=*/1, /*epoch=*/7, soon(), kNever);
  Result<std::unique_ptr<Link>> out = dial.get();
  EXPECT_TRUE(in.hasValue() && out.hasValue());
  if (in) p.bFromA = std::move(*in);
  if (out) p.aToB = std::move(*out);
  return p;
}

Pair connectPair(uint32_t streams) {
  TransportOptions o;
  o.streams = streams;
  return connectPair(o);
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

// A frame larger than the group's segment size breaks the link: a neighbour
// cannot make this peer hold frames of any size it likes.
TEST(TcpTransport, FrameOverTheSegmentSizeBreaksTheLink) {
  Pair p = connectPair(1);
  ASSERT_TRUE(p.aToB && p.bFromA);
  p.bFromA->setMaxFrameBytes(4096);
  CancelFlag go{0};
  std::vector<uint8_t> fits(4096), over(4097);
  ASSERT_TRUE(p.aToB->send(header(0, 4096), fits.data(), soon(), go, nullptr).isOk());
  ASSERT_TRUE(p.bFromA->recv({5, 0, 0, 0}, soon(), go).hasValue());
  ASSERT_TRUE(p.aToB->send(header(1, 4097), over.data(), soon(), go, nullptr).isOk());
  Result<Frame> f = p.bFromA->recv({5, 0, 0, 1}, soon(), go);
  EXPECT_EQ(f.status().code(), ecclPeerLost);
  EXPECT_NE(f.status().message().find("segment size of 4096"), std::string::npos) << f.status().message();
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
  Result<std::unique_ptr<Link>> in = t->accept(1, 42, 1, Clock::now() + std::chrono::milliseconds(100), kNever);
  EXPECT_EQ(in.status().code(), ecclTimeout);
  EXPECT_NE(in.status().message().find("42"), std::string::npos);
}

// A raw TCP connection: `sender` is a data Socket with small buffers, `peer`
// the accepted plain fd, which reads only when the test says so.
struct RawPair {
  tcp::Socket sender;
  int peer = -1;
  ~RawPair() {
    if (peer >= 0) close(peer);
  }
};

void makeRawPair(RawPair* p) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int small = 64 << 10;
  // Set before listen: the accepted socket inherits it.
  setsockopt(listener, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  Result<tcp::Socket> s = tcp::Socket::connect("127.0.0.1", ntohs(addr.sin_port), soon(), kNever);
  ASSERT_TRUE(s.hasValue()) << s.status().message();
  p->sender = std::move(*s);
  p->sender.configureForData();
  setsockopt(p->sender.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  p->peer = accept(listener, nullptr, nullptr);
  close(listener);
  ASSERT_GE(p->peer, 0);
}

// Reads until EOF, `limit` bytes, or 3 s without data; the bytes read.
std::vector<uint8_t> readAll(int fd, size_t limit) {
  std::vector<uint8_t> got;
  std::vector<uint8_t> buf(1 << 16);
  while (got.size() < limit) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 3000) != 1) break;
    const ssize_t n = read(fd, buf.data(), std::min(buf.size(), limit - got.size()));
    if (n <= 0) break;
    got.insert(got.end(), buf.begin(), buf.begin() + n);
  }
  return got;
}

// An op aborted in the middle of a frame (here by a descriptor mismatch, after
// which the links are kept) finishes that frame before it returns, so the
// stream stays aligned and the next frame arrives whole.
TEST(TcpSocket, AbortMidFrameFinishesTheFrame) {
  RawPair p;
  ASSERT_NO_FATAL_FAILURE(makeRawPair(&p));
  // One default segment: far more than the two socket buffers hold, and read
  // well within Socket::kFinishFrameWithin even under a sanitizer.
  std::vector<uint8_t> frame(1 << 20);
  for (size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<uint8_t>(i * 7);
  CancelFlag cancel{0};
  auto writer = std::async(std::launch::async, [&] {
    iovec iov{frame.data(), frame.size()};
    return p.sender.writeAll(&iov, 1, soon(), cancel);
  });
  // The peer reads nothing yet: the write stalls part way, then is aborted.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  cancel.store(ecclInvalidUsage);
  std::vector<uint8_t> got = readAll(p.peer, frame.size());  // the peer catches up
  const Status st = writer.get();
  EXPECT_EQ(st.code(), ecclInvalidUsage) << "the abort is still reported";
  ASSERT_EQ(got.size(), frame.size());
  EXPECT_EQ(got, frame);
  // The stream is still usable: the next frame follows the first one exactly.
  cancel.store(0);
  uint8_t next[5] = {1, 2, 3, 4, 5};
  iovec iov{next, sizeof(next)};
  ASSERT_TRUE(p.sender.writeAll(&iov, 1, soon(), cancel).isOk());
  EXPECT_EQ(readAll(p.peer, sizeof(next)), std::vector<uint8_t>(next, next + sizeof(next)));
}

// When the other side takes nothing at all, the aborted write gives up after
// Socket::kFinishFrameWithin and closes the stream (ecclPeerLost): the peer
// sees the frame cut short by EOF, never a stream that continues mid-frame.
// An abort that replaces the links anyway (ecclPeerLost) closes at once.
class TcpSocketAbortToAStuckPeer : public ::testing::TestWithParam<ecclResult_t> {};

TEST_P(TcpSocketAbortToAStuckPeer, ClosesTheStream) {
  RawPair p;
  ASSERT_NO_FATAL_FAILURE(makeRawPair(&p));
  std::vector<uint8_t> frame(4 << 20, 0xab);
  CancelFlag cancel{0};
  auto writer = std::async(std::launch::async, [&] {
    iovec iov{frame.data(), frame.size()};
    return p.sender.writeAll(&iov, 1, soon(), cancel);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto aborted = Clock::now();
  cancel.store(GetParam());
  const Status st = writer.get();
  const auto took = Clock::now() - aborted;
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find("closed mid-frame"), std::string::npos) << st.message();
  if (GetParam() == ecclPeerLost) {
    EXPECT_LT(took, tcp::Socket::kFinishFrameWithin);
  } else {
    EXPECT_GE(took, tcp::Socket::kFinishFrameWithin);
    EXPECT_LT(took, std::chrono::seconds(3));
  }
  const std::vector<uint8_t> got = readAll(p.peer, frame.size());
  EXPECT_GT(got.size(), 0u) << "the write had started";
  EXPECT_LT(got.size(), frame.size()) << "EOF cut the frame";
  // Later writes on the closed stream fail at once.
  uint8_t byte = 1;
  iovec iov{&byte, 1};
  cancel.store(0);
  EXPECT_FALSE(p.sender.writeAll(&iov, 1, soon(), cancel).isOk());
}

INSTANTIATE_TEST_SUITE_P(Aborts, TcpSocketAbortToAStuckPeer,
                         ::testing::Values(ecclInvalidUsage, ecclPeerLost));

}  // namespace
}  // namespace eccl::transport

namespace eccl::transport {
namespace {

// Shared-state transfer channels: opened between any two members of the
// epoch (not only ring neighbours), in either order of dial and accept, next
// to the ring link, and dropped when a later sync's channel is claimed.
TEST(TcpTransport, SyncChannelsBetweenAnyMembers) {
  Pair p = connectPair(2);  // ring: 1 -> 2 in epoch 7
  ASSERT_TRUE(p.aToB && p.bFromA);
  TransportOptions o;
  o.bindAddress = "127.0.0.1";
  o.streams = 2;
  auto c = createTransport("tcp", o).value();  // peer 3: not 2's left neighbour
  const uint64_t data1 = wire::syncChannel(1, wire::SyncDirection::kData);
  // Ring rules still hold: peer 3 cannot open 2's ring link of epoch 7.
  EXPECT_FALSE(c->connect({2, "127.0.0.1", p.b->port()}, 3, 7,
                          Clock::now() + std::chrono::milliseconds(300), kNever)
                   .hasValue());
  // A channel from peer 3, dialled before 2 asks for it (parked, then claimed).
  Result<std::unique_ptr<Link>> out = c->connectChannel({2, "127.0.0.1", p.b->port()}, 3, 7, data1,
                                                        soon(), kNever);
  ASSERT_TRUE(out.hasValue()) << out.status().message();
  Result<std::unique_ptr<Link>> in = p.b->acceptChannel(2, 3, 7, data1, soon(), kNever);
  ASSERT_TRUE(in.hasValue()) << in.status().message();
  std::vector<uint8_t> bytes(5000, 9);
  ASSERT_TRUE((*out)->send(header(0, 5000), bytes.data(), soon(), kNever, nullptr).isOk());
  Result<Frame> f = (*in)->recv({5, 0, 0, 0}, soon(), kNever);
  ASSERT_TRUE(f.hasValue()) << f.status().message();
  EXPECT_EQ(f->bytes().size(), 5000u);
  // The ring link still works beside it.
  ASSERT_TRUE(p.aToB->send(header(1, 10), bytes.data(), soon(), kNever, nullptr).isOk());
  EXPECT_TRUE(p.bFromA->recv({5, 0, 0, 1}, soon(), kNever).hasValue());

  // A channel of sync 2 parked and never claimed is dropped when sync 3's is
  // claimed: waiting for it then times out instead of finding it.
  const uint64_t data2 = wire::syncChannel(2, wire::SyncDirection::kData);
  const uint64_t data3 = wire::syncChannel(3, wire::SyncDirection::kData);
  ASSERT_TRUE(c->connectChannel({2, "127.0.0.1", p.b->port()}, 3, 7, data2, soon(), kNever).hasValue());
  auto later = std::async(std::launch::async, [&] {
    return c->connectChannel({2, "127.0.0.1", p.b->port()}, 3, 7, data3, soon(), kNever);
  });
  EXPECT_TRUE(p.b->acceptChannel(2, 3, 7, data3, soon(), kNever).hasValue());
  EXPECT_TRUE(later.get().hasValue());
  const Result<std::unique_ptr<Link>> gone =
      p.b->acceptChannel(2, 3, 7, data2, Clock::now() + std::chrono::milliseconds(200), kNever);
  EXPECT_EQ(gone.status().code(), ecclTimeout);
  // Channel 0 is the ring link, never a channel.
  EXPECT_EQ(p.b->acceptChannel(2, 3, 7, 0, soon(), kNever).status().code(), ecclInternalError);
}

// Adaptive striping: with stream 0 paced to 256 KiB/s (a capped or lossy flow),
// frames go to the streams that drain; every frame still arrives whole, and
// the receiver takes them in arrival order. The sender keeps at most 16
// frames ahead of the receiver, as a ring step does.
TEST(TcpTransport, ASlowStreamCarriesFewerFrames) {
  TransportOptions o;
  o.streams = 4;
  o.paceFirstStream = 256 << 10;
  Pair p = connectPair(o);
  ASSERT_TRUE(p.aToB && p.bFromA);
  constexpr uint32_t kFrames = 128, kBytes = 64 << 10, kAhead = 16;
  std::atomic<uint32_t> taken{0};
  auto receiver = std::async(std::launch::async, [&]() -> std::string {
    std::vector<uint8_t> pending(kFrames, 1);
    for (uint32_t n = 0; n < kFrames; ++n) {
      Result<Frame> f = p.bFromA->recvAny({5, 0, 0, 0}, pending, soon(), kNever);
      if (!f) return f.status().message();
      const uint32_t seg = f->header.segment;
      if (seg >= kFrames || pending[seg] == 0) return fmt::format("segment {} again", seg);
      pending[seg] = 0;
      if (f->bytes().size() != kBytes) return fmt::format("segment {}: {} bytes", seg, f->bytes().size());
      for (size_t i = 0; i < kBytes; i += 4096) {
        if (static_cast<uint8_t>(f->bytes()[i]) != static_cast<uint8_t>(seg + i / 4096)) {
          return fmt::format("segment {}: wrong byte at {}", seg, i);
        }
      }
      taken.store(n + 1);
    }
    return "";
  });
  std::vector<uint8_t> data(kBytes);
  for (uint32_t seg = 0; seg < kFrames; ++seg) {
    const Deadline giveUp = soon();
    while (seg >= taken.load() + kAhead && Clock::now() < giveUp) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    for (size_t i = 0; i < data.size(); i += 4096) data[i] = static_cast<uint8_t>(seg + i / 4096);
    ASSERT_TRUE(p.aToB->send(header(seg, kBytes), data.data(), soon(), kNever, nullptr).isOk());
  }
  EXPECT_EQ(receiver.get(), "");
  const std::vector<uint64_t> frames = p.aToB->framesPerStream();
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_EQ(frames[0] + frames[1] + frames[2] + frames[3], kFrames);
  // Round-robin would give each stream 32; the slow one gets a few (before
  // its pace is measured, or when the others are backed up further).
  EXPECT_LT(frames[0], 8u) << frames[0] << " " << frames[1] << " " << frames[2] << " " << frames[3];
}

// The stream controller on a path that caps every flow (each stream paced to
// 4 MiB/s): an adaptive link opened with 1 stream adds streams up to its cap,
// the acceptor hands them to the live receiving link, and they carry frames.
TEST(TcpTransport, AdaptiveLinkGrowsWhereEachFlowIsCapped) {
  TransportOptions o;
  o.streams = 0;
  o.adaptiveStart = 1;
  o.adaptiveCap = 4;
  o.paceEveryStream = 4 << 20;
  Pair p = connectPair(o);
  ASSERT_TRUE(p.aToB && p.bFromA);
  EXPECT_EQ(p.aToB->streamCount(), 1u);
  constexpr uint32_t kBytes = 64 << 10;
  std::atomic<uint32_t> sent{0};
  std::atomic<bool> done{false};
  auto receiver = std::async(std::launch::async, [&] {
    for (uint32_t seg = 0;; ++seg) {
      while (seg >= sent.load() && !done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (seg >= sent.load()) return seg;
      Result<Frame> f = p.bFromA->recv({5, 0, 0, seg}, soon(), kNever);
      if (!f || f->bytes().size() != kBytes || static_cast<uint8_t>(f->bytes()[100]) != (seg & 0xff)) {
        return seg;  // a frame missing or wrong: fewer than sent
      }
    }
  });
  std::vector<uint8_t> data(kBytes);
  const Deadline giveUp = Clock::now() + std::chrono::seconds(20);
  uint32_t after = 0;  // frames sent once all 4 streams were open
  for (uint32_t seg = 0; after < 64 && Clock::now() < giveUp; ++seg) {
    data[100] = static_cast<uint8_t>(seg);
    ASSERT_TRUE(p.aToB->send(header(seg, kBytes), data.data(), soon(), kNever, nullptr).isOk());
    sent.store(seg + 1);
    if (p.aToB->streamCount() == 4) ++after;
  }
  done.store(true);
  EXPECT_EQ(receiver.get(), sent.load());
  EXPECT_EQ(p.aToB->streamCount(), 4u);
  const std::vector<uint64_t> frames = p.aToB->framesPerStream();
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_GT(frames[2] + frames[3], 0u);  // the added streams carried frames that arrived
}

}  // namespace
}  // namespace eccl::transport
