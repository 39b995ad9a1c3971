// The RDMA transport over the stand-in provider (tests/support/fake_verbs.h):
// its links frame by frame (credits, chunking, every fault the provider can
// inject) and whole communicators on transport "ibverbs" (faults end the op
// on every member with the input restored; the next epoch works again).
// The same collectives suite as TCP runs over it as ibverbs.<test>
// (tests/CMakeLists.txt). None of this is a real HCA: see docs/ibverbs.md.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "support/fake_verbs.h"
#include "support/peers.h"
#include "transport/ibverbs/transport.h"

namespace eccl::test {
namespace {

using namespace std::chrono_literals;
using transport::Clock;
using transport::CancelFlag;
using transport::Frame;
using transport::FrameKey;
using transport::ibverbs::Device;
using transport::ibverbs::QueuePair;
using transport::ibverbs::Registrations;
using transport::ibverbs::Resources;
using transport::ibverbs::SlotConfig;
using transport::ibverbs::VerbsLink;
using Kind = FakeVerbs::Fault::Kind;

Resources resources() {
  Result<const transport::ibverbs::Api*> api = transport::ibverbs::api();
  Result<std::shared_ptr<Device>> d = Device::open(**api, {});
  EXPECT_TRUE(d.hasValue()) << d.status().message();
  return {*d, std::make_shared<Registrations>(*d, Registrations::Limits{})};
}

struct Pair {
  std::unique_ptr<VerbsLink> sender;
  std::unique_ptr<VerbsLink> receiver;
};

// A link over a socket pair standing in for the authenticated set-up stream.
Pair connectPair(const Resources& r, uint32_t qps, SlotConfig slots, Status* acceptStatus = nullptr,
                 Status* dialStatus = nullptr) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  static const CancelFlag never{0};
  const auto deadline = Clock::now() + 5s;
  auto accepted = std::async(std::launch::async, [&, fd = fds[1]] {
    return VerbsLink::accept(r, 1, slots, transport::tcp::Socket(fd), deadline, never);
  });
  Result<std::unique_ptr<VerbsLink>> d =
      VerbsLink::dial(r, 2, qps, transport::tcp::Socket(fds[0]), deadline, never);
  Result<std::unique_ptr<VerbsLink>> a = accepted.get();
  if (acceptStatus != nullptr) *acceptStatus = a ? Status::ok() : a.status();
  if (dialStatus != nullptr) *dialStatus = d ? Status::ok() : d.status();
  Pair p;
  if (d) p.sender = std::move(*d);
  if (a) p.receiver = std::move(*a);
  return p;
}

wire::DataHeader header(uint32_t tag, uint64_t seq, uint32_t segment, uint32_t bytes) {
  wire::DataHeader h;
  h.kind = 1;
  h.dtype = 0;
  h.tag = tag;
  h.seq = seq;
  h.segment = segment;
  h.count = bytes;
  h.payloadBytes = bytes;
  return h;
}

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

const CancelFlag kGo{0};

// No queue pair, CQ, channel or registration is left; with `device`, no
// PD or open device either (nothing holds a transport's device any more).
void expectVerbsFreed(const FakeVerbs& fake, bool device) {
  const FakeVerbs::Counts c = fake.counts();
  EXPECT_EQ(c.liveQps, 0u);
  EXPECT_EQ(c.liveCqs, 0u);
  EXPECT_EQ(c.liveChannels, 0u);
  EXPECT_EQ(c.liveMrs, 0u);
  if (device) {
    EXPECT_EQ(c.livePds, 0u);
    EXPECT_EQ(c.liveContexts, 0u);
  }
}

Status sendOne(VerbsLink& l, uint32_t tag, uint32_t segment, const std::vector<std::byte>& data,
               const transport::StallWatch* watch = nullptr) {
  return l.send(header(tag, 1, segment, static_cast<uint32_t>(data.size())), data.data(),
                Clock::now() + 10s, kGo, watch);
}

Result<Frame> recvOne(VerbsLink& l, uint32_t tag, uint32_t segment, std::chrono::seconds within = 10s) {
  return l.recv(FrameKey{tag, 1, 0, segment}, Clock::now() + within, kGo);
}

// Every size around the boundaries (copied or registered payloads, one slot
// or many, more slots than credits), from two threads on two tags at once:
// each frame arrives whole, with its header, on whichever queue pair.
TEST(IbverbsLink, FramesOfEverySizeArriveWhole) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  const SlotConfig slots{16 << 10, 4};  // small slots: frames of many chunks
  Pair p = connectPair(r, 2, slots);
  ASSERT_TRUE(p.sender && p.receiver);
  const std::vector<uint32_t> sizes = {0, 1, 100, VerbsLink::kCopyMaxBytes, VerbsLink::kCopyMaxBytes + 1,
                                       slots.slotBytes - 64, slots.slotBytes - 63, slots.slotBytes,
                                       3 * slots.slotBytes + 5, 20 * slots.slotBytes + 77, 1 << 20};
  auto run = [&](uint32_t tag) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> d = pattern(sizes[i], tag * 100 + static_cast<uint32_t>(i));
      ASSERT_TRUE(sendOne(*p.sender, tag, static_cast<uint32_t>(i), d).isOk());
    }
  };
  std::thread a(run, 1), b(run, 2);
  for (uint32_t tag : {1u, 2u}) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      Result<Frame> f = recvOne(*p.receiver, tag, static_cast<uint32_t>(i));
      ASSERT_TRUE(f.hasValue()) << f.status().message();
      EXPECT_EQ(f->header.payloadBytes, sizes[i]);
      const std::vector<std::byte> want = pattern(sizes[i], tag * 100 + static_cast<uint32_t>(i));
      ASSERT_TRUE(std::equal(want.begin(), want.end(), f->bytes().begin(), f->bytes().end()))
          << "tag " << tag << " size " << sizes[i];
    }
  }
  a.join();
  b.join();
  const std::vector<uint64_t> perQp = p.sender->framesPerStream();
  ASSERT_EQ(perQp.size(), 2u);
  EXPECT_GT(perQp[0], 0u);
  EXPECT_GT(perQp[1], 0u);
  EXPECT_EQ(perQp[0] + perQp[1], 2 * sizes.size());
  // One write per chunk: the header and a slot's worth of payload, then a slot each.
  uint64_t chunks = 0;
  for (uint32_t s : sizes) chunks += s + 64 <= slots.slotBytes ? 1 : 1 + (s - (slots.slotBytes - 64) + slots.slotBytes - 1) / slots.slotBytes;
  EXPECT_EQ(fake->counts().writes, 2 * chunks);
}

// Credits: with two slots per queue pair a megabyte frame is 16 times what
// the receiver can hold; the data arrives intact only if the sender never
// writes a slot the receiver has not copied out.
TEST(IbverbsLink, CreditsKeepTheSenderBehindTheReceiver) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 1, {32 << 10, 2});
  ASSERT_TRUE(p.sender && p.receiver);
  for (uint32_t i = 0; i < 8; ++i) {
    std::vector<std::byte> d = pattern(1 << 20, i);
    ASSERT_TRUE(sendOne(*p.sender, 1, i, d).isOk());
    Result<Frame> f = recvOne(*p.receiver, 1, i);
    ASSERT_TRUE(f.hasValue()) << f.status().message();
    ASSERT_TRUE(std::equal(d.begin(), d.end(), f->bytes().begin(), f->bytes().end())) << i;
  }
  // A receiver with more slots than the sender keeps in flight returns
  // credits by what the sender holds, not by its own slot count.
  Pair wide = connectPair(r, 1, {4096, 300});
  ASSERT_TRUE(wide.sender && wide.receiver);
  std::vector<std::byte> big = pattern(2 << 20, 99);
  ASSERT_TRUE(sendOne(*wide.sender, 1, 0, big).isOk());
  Result<Frame> f = recvOne(*wide.receiver, 1, 0);
  ASSERT_TRUE(f.hasValue()) << f.status().message();
  EXPECT_TRUE(std::equal(big.begin(), big.end(), f->bytes().begin(), f->bytes().end()));
  // Large payloads went out registered where they lay, each registration
  // gone with its send.
  EXPECT_GT(r.registrations->stats().made, 0u);
  EXPECT_EQ(r.registrations->stats().entries, 0u);
  EXPECT_EQ(fake->counts().liveMrs, 4u) << "the links' own buffers only (two per link)";
}

// A receiver that returns no credits (its credit messages are held back)
// leaves the sender waiting, and the wait is reported as a stall like a TCP
// send the peer takes no bytes of.
TEST(IbverbsLink, WithheldCreditsAreReportedAsAStall) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 1, {16 << 10, 2});
  ASSERT_TRUE(p.sender && p.receiver);
  FakeVerbs::Fault slow;
  slow.kind = Kind::kSlowCompletion;
  slow.opcode = IBV_WR_SEND_WITH_IMM;  // the receiver's credit message
  slow.delay = 1500ms;
  fake->inject(slow);
  int stalls = 0;
  transport::StallWatch watch{200ms, [&](std::chrono::milliseconds) { ++stalls; }};
  const auto t0 = Clock::now();
  std::vector<std::byte> d = pattern(256 << 10, 3);
  ASSERT_TRUE(sendOne(*p.sender, 1, 0, d, &watch).isOk());
  EXPECT_GE(Clock::now() - t0, 1400ms);
  EXPECT_GE(stalls, 3);
  EXPECT_EQ(fake->fired(Kind::kSlowCompletion), 1u);
  Result<Frame> f = recvOne(*p.receiver, 1, 0);
  ASSERT_TRUE(f.hasValue());
  EXPECT_TRUE(std::equal(d.begin(), d.end(), f->bytes().begin(), f->bytes().end()));
}

// Each fault the provider can inject ends the link on both sides with
// ecclPeerLost and the reason, within the bound the link promises.
struct FaultCase {
  const char* name;
  FakeVerbs::Fault fault;
  const char* says;
  std::chrono::milliseconds within;
};

void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class IbverbsFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(IbverbsFault, BreaksTheLinkOnBothSides) {
  const FaultCase& c = GetParam();
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 2, {32 << 10, 4});
  ASSERT_TRUE(p.sender && p.receiver);
  std::vector<std::byte> d = pattern(200 << 10, 1);
  ASSERT_TRUE(sendOne(*p.sender, 1, 0, d).isOk());
  ASSERT_TRUE(recvOne(*p.receiver, 1, 0).hasValue());
  fake->inject(c.fault);
  const auto t0 = Clock::now();
  Status st = sendOne(*p.sender, 1, 1, d);
  const auto took = Clock::now() - t0;
  EXPECT_EQ(fake->fired(c.fault.kind), 1u) << "the fault never fired";
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find(c.says), std::string::npos) << st.message();
  EXPECT_LT(took, c.within) << st.message();
  // The receiver learns too (the set-up stream closes), and the link stays broken.
  Result<Frame> f = recvOne(*p.receiver, 1, 1, 5s);
  EXPECT_EQ(f.status().code(), ecclPeerLost) << f.status().message();
  EXPECT_EQ(sendOne(*p.sender, 1, 2, d).code(), ecclPeerLost);
}

FakeVerbs::Fault fault(Kind kind, ibv_wc_status status = IBV_WC_RETRY_EXC_ERR) {
  FakeVerbs::Fault f;
  f.kind = kind;
  f.status = status;
  f.afterPosts = 2;  // mid-frame
  return f;
}

INSTANTIATE_TEST_SUITE_P(
    Faults, IbverbsFault,
    ::testing::Values(
        FaultCase{"RetryExceeded", fault(Kind::kErrorCompletion), "stopped answering", 1s},
        FaultCase{"RemoteAccess", fault(Kind::kErrorCompletion, IBV_WC_REM_ACCESS_ERR), "completion error", 1s},
        FaultCase{"QpToError", fault(Kind::kQpError), "error state", 1s},
        FaultCase{"LostCompletion", fault(Kind::kLostCompletion), "no completion within",
                  QueuePair::completionDeadline(14) + 1500ms}),
    [](const auto& info) { return std::string(info.param.name); });

// A slow completion is not a fault: the frame arrives, later.
TEST(IbverbsLink, SlowCompletionIsOnlySlow) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 1, {32 << 10, 4});
  ASSERT_TRUE(p.sender && p.receiver);
  FakeVerbs::Fault slow;
  slow.kind = Kind::kSlowCompletion;
  slow.delay = 300ms;
  fake->inject(slow);
  std::vector<std::byte> d = pattern(100 << 10, 9);
  const auto t0 = Clock::now();
  ASSERT_TRUE(sendOne(*p.sender, 1, 0, d).isOk());
  EXPECT_GE(Clock::now() - t0, 280ms);
  EXPECT_EQ(fake->fired(Kind::kSlowCompletion), 1u);
  Result<Frame> f = recvOne(*p.receiver, 1, 0);
  ASSERT_TRUE(f.hasValue());
  EXPECT_TRUE(std::equal(d.begin(), d.end(), f->bytes().begin(), f->bytes().end()));
}

// The peer going away (its process ends: the set-up stream closes, its
// queue pairs vanish) breaks the link here without waiting on it.
TEST(IbverbsLink, PeerThatGoesAwayBreaksTheLink) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 2, {32 << 10, 4});
  ASSERT_TRUE(p.sender && p.receiver);
  p.receiver.reset();
  std::vector<std::byte> d = pattern(100 << 10, 2);
  const auto t0 = Clock::now();
  Status st = sendOne(*p.sender, 1, 0, d);
  // The first send may still find the link whole for an instant; the next cannot.
  if (st.isOk()) st = sendOne(*p.sender, 1, 1, d);
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_LT(Clock::now() - t0, 2s);
  p.sender.reset();
  expectVerbsFreed(*fake, /*device=*/false);
}

// An op that gives up while it waits for credits, before anything of its
// frame went out, leaves the link working: the frames around it arrive.
TEST(IbverbsLink, CancelBeforeTheFirstChunkKeepsTheLink) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 1, {16 << 10, 2});
  ASSERT_TRUE(p.sender && p.receiver);
  FakeVerbs::Fault slow;  // the credits for the first frame come back late
  slow.kind = Kind::kSlowCompletion;
  slow.opcode = IBV_WR_SEND_WITH_IMM;
  slow.delay = 500ms;
  fake->inject(slow);
  std::vector<std::byte> d = pattern(20 << 10, 4);  // two chunks: both credits
  ASSERT_TRUE(sendOne(*p.sender, 1, 0, d).isOk());
  const CancelFlag cancelled{ecclPeerLost};
  EXPECT_EQ(p.sender->send(header(1, 1, 1, 1000), d.data(), Clock::now() + 5s, cancelled, nullptr).code(),
            ecclPeerLost);
  ASSERT_TRUE(sendOne(*p.sender, 1, 2, d).isOk());
  EXPECT_EQ(fake->fired(Kind::kSlowCompletion), 1u);
  EXPECT_TRUE(recvOne(*p.receiver, 1, 0).hasValue());
  EXPECT_TRUE(recvOne(*p.receiver, 1, 2).hasValue());
  EXPECT_EQ(recvOne(*p.receiver, 1, 1, 0s).status().code(), ecclTimeout) << "never sent";
}

// An asynchronous event about a queue pair (the HCA found it broken) ends
// its link at once on both sides, even with nothing in flight to complete.
TEST(IbverbsLink, QueuePairFatalEventBreaksAnIdleLink) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair p = connectPair(r, 2, {32 << 10, 4});
  ASSERT_TRUE(p.sender && p.receiver);
  const auto t0 = Clock::now();
  fake->injectAsyncEvent(IBV_EVENT_QP_FATAL, p.sender->queuePairNumbers()[1]);
  Result<Frame> f = recvOne(*p.receiver, 1, 0, 5s);
  EXPECT_EQ(f.status().code(), ecclPeerLost) << f.status().message();
  EXPECT_LT(Clock::now() - t0, 1s);
  std::vector<std::byte> d = pattern(100, 1);
  Status st = sendOne(*p.sender, 1, 0, d);
  EXPECT_EQ(st.code(), ecclPeerLost);
  // The event thread or the flush of the queue pair's posted receives, whichever is first.
  EXPECT_TRUE(st.message().find("asynchronous event") != std::string::npos ||
              st.message().find("error state") != std::string::npos)
      << st.message();
}

// A port error ends every link on the device (nothing else tells them here:
// the stand-in leaves the queue pairs as they are).
TEST(IbverbsLink, PortErrorBreaksEveryLink) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  Pair a = connectPair(r, 1, {32 << 10, 4});
  Pair b = connectPair(r, 1, {32 << 10, 4});
  ASSERT_TRUE(a.sender && a.receiver && b.sender && b.receiver);
  fake->injectAsyncEvent(IBV_EVENT_PORT_ERR, 0, 1);
  std::vector<std::byte> d = pattern(100, 1);
  // Each end breaks, by the event or by its peer's end closing the link
  // first; nothing but the event started it.
  std::string why;
  for (Pair* p : {&a, &b}) {
    Result<Frame> f = recvOne(*p->receiver, 1, 0, 5s);
    EXPECT_EQ(f.status().code(), ecclPeerLost) << f.status().message();
    Status st = sendOne(*p->sender, 1, 0, d);
    EXPECT_EQ(st.code(), ecclPeerLost);
    why += f.status().message() + "\n" + st.message() + "\n";
  }
  EXPECT_NE(why.find("port error"), std::string::npos) << why;
}

// The acceptor that cannot set up its side (here: registering its slots
// fails) refuses, and the dialler says so instead of waiting.
TEST(IbverbsLink, AcceptorThatCannotSetUpRefuses) {
  FakeVerbs::Options o;
  o.maxRegisteredBytes = 1 << 20;
  ScopedFakeVerbs fake(o);
  Resources r = resources();
  Status accepted, dialled;
  Pair p = connectPair(r, 2, {1 << 20, 8}, &accepted, &dialled);
  EXPECT_FALSE(p.receiver);
  EXPECT_FALSE(p.sender);
  EXPECT_EQ(accepted.code(), ecclSystemError) << accepted.message();
  EXPECT_NE(accepted.message().find("register"), std::string::npos) << accepted.message();
  EXPECT_EQ(dialled.code(), ecclSystemError) << "the acceptor's own result: " << dialled.message();
  EXPECT_NE(dialled.message().find("could not set up"), std::string::npos) << dialled.message();
  EXPECT_EQ(fake->counts().liveQps, 0u);
}

// Garbage instead of an offer: a clear error, nothing created or leaked.
TEST(IbverbsLink, MalformedOfferIsRefused) {
  ScopedFakeVerbs fake;
  Resources r = resources();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  std::vector<std::byte> junk = pattern(wire::kVerbsOfferBytes, 7);
  ASSERT_EQ(::write(fds[0], junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  Result<std::unique_ptr<VerbsLink>> a =
      VerbsLink::accept(r, 1, {}, transport::tcp::Socket(fds[1]), Clock::now() + 2s, kGo);
  ::close(fds[0]);
  ASSERT_FALSE(a.hasValue());
  EXPECT_EQ(a.status().code(), ecclInvalidArgument) << a.status().message();
  EXPECT_EQ(fake->counts().liveQps, 0u);
}

// Whole communicators on transport "ibverbs".

PeerOptions verbsPeers() {
  PeerOptions o;
  o.transport = "ibverbs";
  return o;
}

TEST(IbverbsComm, NoDeviceIsUnsupportedWithTheReason) {
  FakeVerbs::Options none;
  none.devices.clear();
  ScopedFakeVerbs fake(none);
  LocalMaster master;
  ecclCommConfig_t cfg = commConfig(master.address(), verbsPeers());
  ecclComm_t comm = nullptr;
  EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclUnsupported);
  EXPECT_NE(std::string(ecclGetLastError(nullptr)).find("no RDMA device"), std::string::npos)
      << ecclGetLastError(nullptr);
}

// This machine's real libibverbs (rdma-core is a build dependency): with no
// RDMA device the transport is refused with the reason, never half-built.
TEST(IbverbsComm, RealLibraryWithoutADeviceIsUnsupported) {
  Status st = transport::checkTransport("ibverbs");
  if (st.isOk()) GTEST_SKIP() << "this machine has an RDMA device: the label ibverbs tests run on it";
  EXPECT_EQ(st.code(), ecclUnsupported);
  EXPECT_TRUE(st.message().find("no RDMA device") != std::string::npos ||
              st.message().find("could not be loaded") != std::string::npos)
      << st.message();
}

TEST(IbverbsComm, TlsIsRefusedReadably) {
  ScopedFakeVerbs fake;
  transport::TransportOptions o;
  o.tls.mode = security::TlsMode::kPsk;
  Result<std::unique_ptr<transport::Transport>> t = transport::createTransport("ibverbs", o);
  ASSERT_FALSE(t.hasValue());
  EXPECT_EQ(t.status().code(), ecclInvalidUsage);
  EXPECT_NE(t.status().message().find("in the clear"), std::string::npos) << t.status().message();
}

// A group whose members disagree on the transport fails to open its links
// (each acceptor refuses the other kind of link and logs why) instead of
// running with garbage on the wire.
TEST(IbverbsComm, MixedTransportsAreRefused) {
  ScopedFakeVerbs fake;
  LocalMaster master;
  // Short timeouts: the links are never opened, which each side learns at its deadline.
  auto shortConfig = [&](const PeerOptions& o) {
    ecclCommConfig_t cfg = commConfig(master.address(), o);
    cfg.opTimeoutMs = 3000;
    cfg.connectTimeoutMs = 3000;
    return cfg;
  };
  PeerOptions tcpPeer;
  tcpPeer.transport = "tcp";
  const ecclCommConfig_t tcpConfig = shortConfig(tcpPeer);
  ecclComm_t tcp = nullptr;
  ASSERT_EQ(ecclCommCreate(&tcpConfig, &tcp), ecclSuccess);
  ASSERT_EQ(ecclCommConnect(tcp), ecclSuccess);
  const auto t0 = Clock::now();
  std::thread joining([&] {
    const ecclCommConfig_t cfg = shortConfig(verbsPeers());
    ecclComm_t verbs = nullptr;
    ASSERT_EQ(ecclCommCreate(&cfg, &verbs), ecclSuccess);
    ecclResult_t r = ecclCommConnect(verbs);
    if (r == ecclSuccess) {
      float x = 1;
      r = ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, verbs, nullptr);
    }
    EXPECT_NE(r, ecclSuccess);
    ecclCommDestroy(verbs);
  });
  int pending = 0;
  for (int i = 0; i < 500 && pending == 0; ++i) {
    ASSERT_EQ(ecclCommArePeersPending(tcp, &pending), ecclSuccess);
    if (pending == 0) std::this_thread::sleep_for(10ms);
  }
  ecclResult_t r = ecclCommUpdateTopology(tcp);
  if (r == ecclSuccess) {
    float x = 1;
    r = ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, tcp, nullptr);
  }
  EXPECT_NE(r, ecclSuccess);
  joining.join();
  EXPECT_LT(Clock::now() - t0, 15s);
  ecclCommDestroy(tcp);
}

// A fault in the middle of an all-reduce: every member fails with
// ecclPeerLost and its input in place, the master moves the group to a new
// epoch, and its fresh links work. Then every verbs resource is gone.
struct CommFault {
  const char* name;
  Kind kind;
  ibv_wc_status status;
  std::chrono::milliseconds within;  // from the call to every member's failure
};

void PrintTo(const CommFault& c, std::ostream* os) { *os << c.name; }

class IbverbsCommFault : public ::testing::TestWithParam<CommFault> {};

TEST_P(IbverbsCommFault, FailsTheOpEverywhereAndTheNextEpochWorks) {
  ScopedFakeVerbs fake;
  constexpr int kPeers = 3;
  constexpr size_t kCount = 1 << 20;  // 4 MiB: many frames on every link
  std::atomic<int> armed{0};
  spawnPeers(kPeers, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> input(kCount);
    for (size_t i = 0; i < kCount; ++i) input[i] = static_cast<float>((rank + 1) * (i % 1000));
    // Warm: the links exist and work.
    std::vector<float> v = input;
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), kCount, ecclFloat32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess);
    ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess);  // a barrier: all are past the first op
    if (rank == 0 && armed.fetch_add(1) == 0) {
      FakeVerbs::Fault f;
      f.kind = GetParam().kind;
      f.status = GetParam().status;
      f.afterPosts = 5;
      fake->inject(f);
    }
    ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess);
    v = input;
    const auto t0 = Clock::now();
    ecclResult_t r = ecclAllReduce(v.data(), v.data(), kCount, ecclFloat32, ecclSum, nullptr, comm, nullptr);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    EXPECT_EQ(r, ecclPeerLost) << ecclGetLastError(comm);
    EXPECT_LT(took, GetParam().within);
    std::printf("fault %s: rank %d failed after %lld ms: %s\n", GetParam().name, rank,
                static_cast<long long>(took.count()), ecclGetLastError(comm));
    EXPECT_EQ(v, input) << "the input is restored";
    // The next epoch opens fresh links; the op works again.
    ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    v = input;
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), kCount, ecclFloat32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    for (size_t i = 0; i < kCount; i += 4099) {
      ASSERT_EQ(v[i], static_cast<float>(6 * (i % 1000))) << i;
    }
  }, verbsPeers());
  EXPECT_EQ(fake->fired(GetParam().kind), 1u) << "the fault never fired";
  expectVerbsFreed(*fake, /*device=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, IbverbsCommFault,
    ::testing::Values(CommFault{"RetryExceeded", Kind::kErrorCompletion, IBV_WC_RETRY_EXC_ERR, 2s},
                      CommFault{"QpToError", Kind::kQpError, IBV_WC_SUCCESS, 2s},
                      CommFault{"LostCompletion", Kind::kLostCompletion, IBV_WC_SUCCESS,
                                QueuePair::completionDeadline(14) + 3s}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace eccl::test
