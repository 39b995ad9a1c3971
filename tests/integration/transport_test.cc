// The TCP transport on its own: links, and a neighbour that goes away; and
// its shared-memory links between peers of one host (ShmLink.*).
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
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "codec/codec.h"
#include "collectives/ring.h"
#include "transport/shm/link.h"
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

// A TCP link of `streams` streams (shared memory off: these are in one process).
Pair connectPair(uint32_t streams) {
  TransportOptions o;
  o.streams = streams;
  o.sharedMemory = false;
  return connectPair(o);
}

// Whatever link two transports of this host make by default: shared memory.
Pair connectShmPair() {
  TransportOptions o;
  o.streams = 4;
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
  o.sharedMemory = false;  // a TCP matter
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
  o.sharedMemory = false;  // a TCP matter
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


// Two transports of one process are on one host: their link runs through a
// shared ring (whatever stream count was asked for), frames of any size up to
// the segment arrive by key, many times the ring's size in all.
TEST(ShmLink, SameHostLinksRunThroughSharedMemory) {
  Pair p = connectShmPair();
  ASSERT_TRUE(p.aToB && p.bFromA);
  EXPECT_TRUE(p.aToB->sharedMemory());
  EXPECT_TRUE(p.bFromA->sharedMemory());
  EXPECT_EQ(p.aToB->streamCount(), 1u);
  CancelFlag go{0};
  constexpr uint32_t kFrames = 48;  // 48 MiB through a 4 MiB ring
  std::vector<uint8_t> data(1 << 20);
  auto sender = std::async(std::launch::async, [&] {
    std::vector<uint8_t> d(data.size());
    for (uint32_t seg = 0; seg < kFrames; ++seg) {
      for (size_t i = 0; i < d.size(); i += 4096) d[i] = static_cast<uint8_t>(i / 4096 + seg);
      Status st = p.aToB->send(header(seg, static_cast<uint32_t>(d.size() - seg)), d.data(), soon(), go,
                               nullptr);
      if (!st.isOk()) return st;
    }
    return Status::ok();
  });
  for (uint32_t seg = 0; seg < kFrames; ++seg) {
    // Every other frame is asked for out of order (the one after it first).
    const uint32_t want = seg % 2 == 0 && seg + 1 < kFrames ? seg + 1 : seg % 2 == 1 ? seg - 1 : seg;
    Result<Frame> f = p.bFromA->recv({5, 0, 0, want}, soon(), go);
    ASSERT_TRUE(f.hasValue()) << f.status().message();
    ASSERT_EQ(f->bytes().size(), data.size() - want);
    EXPECT_EQ(static_cast<uint8_t>(f->bytes()[4096 * 7]), static_cast<uint8_t>(7 + want));
  }
  ASSERT_TRUE(sender.get().isOk());
  EXPECT_EQ(p.aToB->framesPerStream(), std::vector<uint64_t>{kFrames});
}

// The acceptor decides: with shared memory off on its side the link is TCP,
// with the streams asked for.
TEST(ShmLink, AnAcceptorWithoutSharedMemoryKeepsTcp) {
  TransportOptions o;
  o.bindAddress = "127.0.0.1";
  o.streams = 3;
  auto a = createTransport("tcp", o).value();
  o.sharedMemory = false;
  auto b = createTransport("tcp", o).value();
  auto dial = std::async(std::launch::async,
                         [&] { return a->connect({2, "127.0.0.1", b->port()}, 1, 7, soon(), kNever); });
  Result<std::unique_ptr<Link>> in = b->accept(2, 1, 7, soon(), kNever);
  Result<std::unique_ptr<Link>> out = dial.get();
  ASSERT_TRUE(in.hasValue() && out.hasValue());
  EXPECT_FALSE((*out)->sharedMemory());
  EXPECT_FALSE((*in)->sharedMemory());
  EXPECT_EQ((*out)->streamCount(), 3u);
  std::vector<uint8_t> bytes(5000, 9);
  ASSERT_TRUE((*out)->send(header(0, 5000), bytes.data(), soon(), kNever, nullptr).isOk());
  EXPECT_TRUE((*in)->recv({5, 0, 0, 0}, soon(), kNever).hasValue());
}

TEST(ShmLink, FrameOverTheSegmentSizeBreaksTheLink) {
  Pair p = connectShmPair();
  ASSERT_TRUE(p.aToB && p.bFromA && p.aToB->sharedMemory());
  p.bFromA->setMaxFrameBytes(4096);
  std::vector<uint8_t> fits(4096), over(4097);
  ASSERT_TRUE(p.aToB->send(header(0, 4096), fits.data(), soon(), kNever, nullptr).isOk());
  ASSERT_TRUE(p.bFromA->recv({5, 0, 0, 0}, soon(), kNever).hasValue());
  ASSERT_TRUE(p.aToB->send(header(1, 4097), over.data(), soon(), kNever, nullptr).isOk());
  Result<Frame> f = p.bFromA->recv({5, 0, 0, 1}, soon(), kNever);
  EXPECT_EQ(f.status().code(), ecclPeerLost);
  EXPECT_NE(f.status().message().find("segment size of 4096"), std::string::npos) << f.status().message();
}

// A receiver that goes away (its process ends: its socket closes): the
// sender, once the ring is full, fails with ecclPeerLost instead of waiting
// for ever, and every later send fails fast.
TEST(ShmLink, SendToAPeerThatWentAwayFails) {
  Pair p = connectShmPair();
  ASSERT_TRUE(p.aToB && p.bFromA && p.aToB->sharedMemory());
  p.bFromA.reset();
  p.b.reset();
  std::vector<uint8_t> data(1 << 20);
  Status st;
  const auto start = Clock::now();
  for (uint32_t seg = 0; seg < 200 && st.isOk(); ++seg) {
    st = p.aToB->send(header(seg, static_cast<uint32_t>(data.size())), data.data(), soon(), kNever, nullptr);
  }
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find("peer 2"), std::string::npos) << st.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(p.aToB->send(header(0, 10), data.data(), soon(), kNever, nullptr).code(), ecclPeerLost);
}

// A sender that goes away: what it sent before is still received, then the
// link breaks (ecclPeerLost) for whoever waits on it.
TEST(ShmLink, ReceiverDrainsThenSeesTheSenderGo) {
  Pair p = connectShmPair();
  ASSERT_TRUE(p.aToB && p.bFromA && p.aToB->sharedMemory());
  std::vector<uint8_t> data(3000, 4);
  ASSERT_TRUE(p.aToB->send(header(0, 3000), data.data(), soon(), kNever, nullptr).isOk());
  p.aToB.reset();
  p.a.reset();
  Result<Frame> f = p.bFromA->recv({5, 0, 0, 0}, soon(), kNever);
  ASSERT_TRUE(f.hasValue()) << f.status().message();
  EXPECT_EQ(f->bytes().size(), 3000u);
  const auto start = Clock::now();
  Result<Frame> g = p.bFromA->recv({5, 0, 0, 1}, soon(), kNever);
  EXPECT_EQ(g.status().code(), ecclPeerLost);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
}

// A receiver that takes nothing (a stopped process, played here by a ring
// nobody reads and the other end of a socket pair as its watch): a send that
// fills the ring reports the stall, and the op's abort ends it. Aborted
// before its frame started, the link stays usable; aborted mid-frame for a
// peer loss, the link breaks (it would be replaced anyway) and its watch
// socket closes, which is how the receiver would learn it.
struct StuckReceiver {
  std::optional<shm::Ring> reader;
  int watchPeer = -1;
  std::unique_ptr<shm::ShmLink> link;
  // remoteReads: large payloads stay in the sender's memory until read.
  explicit StuckReceiver(bool remoteReads = false) {
    wire::ShmOffer offer;
    Result<shm::Ring> w = shm::Ring::create(shm::kRingBytes, &offer);
    Result<shm::Ring> r = shm::Ring::open(offer, remoteReads);
    int sv[2];
    if (!w || !r || ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return;
    reader = std::move(*r);
    watchPeer = sv[1];
    link = std::make_unique<shm::ShmLink>(2, shm::ShmLink::Role::kSender, std::move(*w), tcp::Socket(sv[0]));
  }
  ~StuckReceiver() {
    link.reset();
    if (watchPeer >= 0) ::close(watchPeer);
  }
  bool watchClosed() const {
    pollfd p{watchPeer, POLLIN, 0};
    return ::poll(&p, 1, 200) == 1;
  }
};

TEST(ShmLink, AFullRingReportsTheStallAndHonoursTheAbort) {
  StuckReceiver r;
  ASSERT_TRUE(r.link);
  std::vector<uint8_t> data(1 << 20);
  std::atomic<int> stalls{0};
  StallWatch watch{std::chrono::milliseconds(50), [&](std::chrono::milliseconds) { ++stalls; }};
  CancelFlag cancel{0};
  // Four 1 MiB frames fill the 4 MiB ring but for their records: the fourth
  // waits mid-frame.
  auto stuck = std::async(std::launch::async, [&] {
    Status st;
    for (uint32_t seg = 0; seg < 5 && st.isOk(); ++seg) {
      st = r.link->send(header(seg, static_cast<uint32_t>(data.size())), data.data(), soon(), cancel, &watch);
    }
    return st;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_GE(stalls.load(), 2);
  cancel.store(ecclPeerLost);
  const auto start = Clock::now();
  const Status st = stuck.get();
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_TRUE(r.watchClosed());
  EXPECT_EQ(r.link->send(header(9, 10), data.data(), soon(), kNever, nullptr).code(), ecclPeerLost);
}

TEST(ShmLink, ATimeoutBeforeAFrameStartsLeavesTheLinkUsable) {
  StuckReceiver r;
  ASSERT_TRUE(r.link);
  std::vector<uint8_t> big(shm::kRingBytes);
  // Record (address, header) and payload exactly fill the ring.
  ASSERT_TRUE(r.link->send(header(0, static_cast<uint32_t>(big.size() - shm::ShmLink::kRecordBytes)),
                           big.data(), soon(), kNever, nullptr).isOk());
  const Status late = r.link->send(header(1, 10), big.data(), Clock::now() + std::chrono::milliseconds(100),
                                   kNever, nullptr);
  EXPECT_EQ(late.code(), ecclTimeout) << late.message();
  CancelFlag aborted{ecclTimeout};
  EXPECT_EQ(r.link->send(header(1, 10), big.data(), soon(), aborted, nullptr).code(), ecclTimeout);
  // The receiver takes the first frame: the next one goes through.
  std::vector<std::byte> sink(big.size());
  size_t got = 0;
  while (got < sink.size()) {
    Result<size_t> k = r.reader->read(sink.data() + got, sink.size() - got);
    ASSERT_TRUE(k.hasValue());
    got += *k;
  }
  EXPECT_TRUE(r.link->send(header(1, 10), big.data(), soon(), kNever, nullptr).isOk());
  EXPECT_FALSE(r.watchClosed());
}

// Large payloads where the receiver may read the sender's memory: the ring
// carries the address, the receiver copies the payload straight out and acks,
// and send() returns only then (the caller may reuse the buffer at once). A
// receiver that never acks is a stall like a full ring: reported, and the
// op's abort ends the send; since the receiver may be reading, the link
// breaks rather than go on.
TEST(ShmLink, LargePayloadsAreReadFromTheSendersMemory) {
  StuckReceiver r(/*remoteReads=*/true);
  ASSERT_TRUE(r.link && r.reader->remoteReads());
  std::vector<uint8_t> data(shm::ShmLink::kRemoteMinBytes + 5);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  auto sent = std::async(std::launch::async, [&] {
    return r.link->send(header(0, static_cast<uint32_t>(data.size())), data.data(), soon(), kNever, nullptr);
  });
  // The receiver's side, by hand: a record (address, header), no payload in the ring.
  std::byte record[shm::ShmLink::kRecordBytes];
  size_t got = 0;
  while (got < sizeof(record)) {
    Result<size_t> k = r.reader->read(record + got, sizeof(record) - got);
    ASSERT_TRUE(k.hasValue());
    got += *k;
    if (*k == 0) r.reader->waitForData(std::chrono::milliseconds(50));
  }
  uint64_t address = 0;
  std::memcpy(&address, record, sizeof(address));
  EXPECT_EQ(address, reinterpret_cast<uintptr_t>(data.data()));
  Result<wire::DataHeader> h = wire::decodeDataHeader(std::span(record).subspan(8));
  ASSERT_TRUE(h.hasValue());
  ASSERT_EQ(h->payloadBytes, data.size());
  EXPECT_EQ(sent.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "send returned before the receiver read the payload";
  std::vector<std::byte> copy(data.size());
  ASSERT_TRUE(r.reader->readRemote(address, copy.data(), copy.size()).isOk());
  EXPECT_EQ(std::memcmp(copy.data(), data.data(), data.size()), 0);
  r.reader->ack();
  EXPECT_TRUE(sent.get().isOk());
  // A small payload still travels in the ring.
  std::vector<uint8_t> small(100, 3);
  ASSERT_TRUE(r.link->send(header(1, 100), small.data(), soon(), kNever, nullptr).isOk());
  std::byte rec2[shm::ShmLink::kRecordBytes + 100];
  got = 0;
  while (got < sizeof(rec2)) {
    Result<size_t> k = r.reader->read(rec2 + got, sizeof(rec2) - got);
    ASSERT_TRUE(k.hasValue());
    got += *k;
  }
  std::memcpy(&address, rec2, sizeof(address));
  EXPECT_EQ(address, 0u);

  // Never acked: the stall is reported, and a timeout ends the send and the link.
  std::atomic<int> stalls{0};
  StallWatch watch{std::chrono::milliseconds(50), [&](std::chrono::milliseconds) { ++stalls; }};
  const auto start = Clock::now();
  const Status st = r.link->send(header(2, static_cast<uint32_t>(data.size())), data.data(),
                                 Clock::now() + std::chrono::milliseconds(300), kNever, &watch);
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find("within the op timeout"), std::string::npos) << st.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_GE(stalls.load(), 2);
  EXPECT_TRUE(r.watchClosed());
}

}  // namespace
}  // namespace eccl::transport

namespace eccl::transport {
namespace {

// The ring all-reduce straight over shared-memory links (members on threads,
// an in-place float32 op; 256 KiB and 1 MiB segments, so payloads are read
// from the sender's memory and the 1 MiB scratch is on huge pages): the
// backup hook (RingContext::beforeOverwrite, which all-or-nothing restores
// from) sees every byte of the buffer exactly once and always before the op
// changed it, although the reduce-scatter's partial sums go to scratch and
// the backup is taken where the bytes are first read; every member ends with
// the same bits, and without a codec with the sum (or mean).
struct BackupCase {
  int world;
  ecclRedOp_t op;
  ecclQuantization_t quant;
  size_t count;
  size_t segmentBytes;
};

class RingBackup : public ::testing::TestWithParam<BackupCase> {};

TEST_P(RingBackup, SeesEveryByteOnceBeforeItChanges) {
  const BackupCase c = GetParam();
  const int world = c.world;
  const size_t bytes = c.count * sizeof(float);
  std::vector<std::unique_ptr<shm::ShmLink>> out(world), in(world);  // out[i]: i -> i+1
  for (int i = 0; i < world; ++i) {
    wire::ShmOffer offer;
    Result<shm::Ring> w = shm::Ring::create(shm::kRingBytes, &offer);
    ASSERT_TRUE(w.hasValue()) << w.status().message();
    Result<shm::Ring> r = shm::Ring::open(offer);
    ASSERT_TRUE(r.hasValue()) << r.status().message();
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const int next = (i + 1) % world;
    out[i] = std::make_unique<shm::ShmLink>(next, shm::ShmLink::Role::kSender, std::move(*w),
                                            tcp::Socket(sv[0]));
    in[next] = std::make_unique<shm::ShmLink>(i, shm::ShmLink::Role::kReceiver, std::move(*r),
                                              tcp::Socket(sv[1]));
  }
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<std::vector<float>> buf(world, std::vector<float>(c.count));
  for (auto& b : buf) {
    for (float& v : b) v = value(rng);
  }
  const std::vector<std::vector<float>> input = buf;
  struct Seen {
    std::vector<uint8_t> times;       // per byte: backed up how often
    std::vector<std::string> errors;  // a backup of bytes that had already changed
  };
  std::vector<Seen> seen(world);
  CancelFlag go{0};
  std::vector<std::future<Status>> members;
  for (int rank = 0; rank < world; ++rank) {
    members.push_back(std::async(std::launch::async, [&, rank] {
      collectives::RingContext ctx;
      ctx.rank = rank;
      ctx.world = world;
      ctx.right = out[rank].get();
      ctx.left = in[rank].get();
      ctx.base.kind = static_cast<uint8_t>(wire::OpKind::kAllReduce);
      ctx.base.dtype = static_cast<uint8_t>(ecclFloat32);
      ctx.base.redop = static_cast<uint8_t>(c.op);
      ctx.base.count = c.count;
      ctx.base.epoch = 1;
      ctx.cancel = &go;
      ctx.segmentBytes = c.segmentBytes;
      ctx.codec = codec::find(c.quant);
      ctx.codecParams = {ecclFloat32, ecclRoundNearest, 0};
      Seen& s = seen[rank];
      s.times.assign(bytes, 0);
      const auto* now = reinterpret_cast<const std::byte*>(buf[rank].data());
      const auto* was = reinterpret_cast<const std::byte*>(input[rank].data());
      ctx.beforeOverwrite = [&s, now, was](size_t offset, size_t len) {
        if (std::memcmp(now + offset, was + offset, len) != 0) {
          s.errors.push_back(fmt::format("[{}, +{}) changed before its backup", offset, len));
        }
        for (size_t i = offset; i < offset + len && i < s.times.size(); ++i) ++s.times[i];
      };
      return collectives::ringAllReduce(ctx, buf[rank].data(), buf[rank].data(), c.count,
                                        ecclFloat32, c.op);
    }));
  }
  for (int rank = 0; rank < world; ++rank) {
    const Status st = members[rank].get();
    EXPECT_TRUE(st.isOk()) << "rank " << rank << ": " << st.message();
  }
  for (int rank = 0; rank < world; ++rank) {
    EXPECT_TRUE(seen[rank].errors.empty()) << "rank " << rank << ": " << seen[rank].errors.front();
    const auto wrong = std::find_if(seen[rank].times.begin(), seen[rank].times.end(),
                                    [](uint8_t t) { return t != 1; });
    EXPECT_EQ(wrong, seen[rank].times.end())
        << "rank " << rank << ": byte " << (wrong - seen[rank].times.begin()) << " backed up "
        << static_cast<int>(*wrong) << " times";
    EXPECT_EQ(std::memcmp(buf[rank].data(), buf[0].data(), bytes), 0) << "rank " << rank;
  }
  const double tolerance = c.quant == ecclQuantNone ? 1e-5 : 0.05;  // bfloat16 on the wire
  for (size_t i = 0; i < c.count; i += 997) {
    double sum = 0;
    for (int rank = 0; rank < world; ++rank) sum += input[rank][i];
    if (c.op == ecclAvg) sum /= world;
    EXPECT_NEAR(buf[0][i], sum, tolerance) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RingBackup,
    ::testing::Values(BackupCase{4, ecclSum, ecclQuantNone, (3 << 18) + 7, 256 << 10},
                      BackupCase{4, ecclSum, ecclQuantNone, (3 << 19) + 7, 1 << 20},
                      BackupCase{2, ecclSum, ecclQuantNone, (1 << 18) + 3, 256 << 10},
                      BackupCase{3, ecclAvg, ecclQuantNone, (1 << 18) + 5, 256 << 10},
                      BackupCase{5, ecclSum, ecclQuantBfloat16, (1 << 18) + 9, 256 << 10},
                      BackupCase{4, ecclSum, ecclQuantNone, 3, 256 << 10}),
    [](const ::testing::TestParamInfo<BackupCase>& info) {
      const BackupCase& c = info.param;
      return fmt::format("world{}_{}{}_count{}_seg{}k", c.world, c.op == ecclAvg ? "avg" : "sum",
                         c.quant == ecclQuantNone ? "" : "_bf16", c.count, c.segmentBytes >> 10);
    });

}  // namespace
}  // namespace eccl::transport
