// The master's state machine, without sockets.
#include <gtest/gtest.h>

#include "master/membership.h"

#include <fmt/format.h>

#include <thread>

namespace eccl::master {
namespace {

using wire::ControlMessage;

template <typename T>
std::vector<const T*> sentTo(const std::vector<Outgoing>& out, uint64_t peer) {
  std::vector<const T*> v;
  for (const Outgoing& o : out) {
    if (o.peerId == peer) {
      if (const T* m = std::get_if<T>(&o.msg)) v.push_back(m);
    }
  }
  return v;
}

wire::Register reg(uint32_t group = 0, uint32_t opTimeoutMs = 0) {
  return {group, "127.0.0.1", 4000, opTimeoutMs};
}

// The fixture's master: a low op-timeout floor, so deadlines test in ms.
Membership::Options testOptions() {
  Membership::Options o;
  o.minOpTimeout = std::chrono::milliseconds(100);
  return o;
}

// Every message the master emits must decode at the receiver.
void expectAllDecode(const std::vector<Outgoing>& out) {
  for (const Outgoing& o : out) {
    std::vector<std::byte> bytes = wire::encodeControl(o.msg);
    Result<wire::ControlHeader> h =
        wire::decodeControlHeader(std::span(bytes).first(wire::kControlHeaderBytes));
    ASSERT_TRUE(h.hasValue()) << h.status().message();
    ASSERT_TRUE(wire::decodeControl(h->type, std::span(bytes).subspan(wire::kControlHeaderBytes))
                    .hasValue())
        << wire::typeName(h->type);
  }
}

class MembershipTest : public ::testing::Test {
 protected:
  // Registers peers 1..n and admits them all.
  void admit(int n, uint32_t opTimeoutMs = 0) {
    m.onRegister(1, reg(0, opTimeoutMs), "127.0.0.1");
    for (int i = 2; i <= n; ++i) {
      m.onRegister(static_cast<uint64_t>(i), reg(0, opTimeoutMs), "127.0.0.1");
    }
    if (n > 1) m.onMessage(1, wire::Vote{});  // the only member admits the rest
    ASSERT_EQ(m.memberCount(), static_cast<size_t>(n));
  }
  Membership m{testOptions()};
};

TEST_F(MembershipTest, FirstPeerAdmittedOthersPending) {
  auto out = m.onRegister(1, reg(), "127.0.0.1");
  ASSERT_EQ(sentTo<wire::Topology>(out, 1).size(), 1u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 1)[0]->epoch, 1u);
  out = m.onRegister(2, reg(), "127.0.0.1");
  EXPECT_TRUE(sentTo<wire::Topology>(out, 2).empty());
  EXPECT_EQ(m.pendingCount(), 1u);
  out = m.onMessage(1, wire::PendingQuery{});
  EXPECT_EQ(sentTo<wire::PendingReply>(out, 1)[0]->pending, 1u);
  out = m.onMessage(1, wire::Vote{});
  auto t1 = sentTo<wire::Topology>(out, 1), t2 = sentTo<wire::Topology>(out, 2);
  ASSERT_EQ(t1.size(), 1u);
  ASSERT_EQ(t2.size(), 1u);
  EXPECT_EQ(t1[0]->epoch, 2u);
  EXPECT_EQ(t2[0]->rank, 1u);
  EXPECT_EQ(t2[0]->ring.size(), 2u);
  EXPECT_EQ(t2[0]->ring[0].host, "127.0.0.1");
}

TEST_F(MembershipTest, VoteWaitsForEveryMemberAndEpochMovesOnlyOnChange) {
  admit(3);
  const uint64_t e = m.epoch();
  EXPECT_TRUE(sentTo<wire::Topology>(m.onMessage(1, wire::Vote{}), 1).empty());
  EXPECT_TRUE(sentTo<wire::Topology>(m.onMessage(2, wire::Vote{}), 2).empty());
  auto out = m.onMessage(3, wire::Vote{});
  EXPECT_EQ(sentTo<wire::Topology>(out, 1).size(), 1u);
  EXPECT_EQ(m.epoch(), e);  // nothing changed
}

// A member may advertise only the address the master sees it at, unless the
// master trusts advertised addresses (NAT).
TEST_F(MembershipTest, AdvertisedAddressMustBeTheObservedOne) {
  wire::Register elsewhere{0, "198.18.9.9", 4000, 0};
  auto out = m.onRegister(1, elsewhere, "127.0.0.1");
  ASSERT_EQ(out.size(), 1u);
  const auto& rr = std::get<wire::RegisterReply>(out[0].msg);
  EXPECT_EQ(rr.result, static_cast<uint32_t>(ecclInvalidArgument));
  EXPECT_NE(rr.message.find("198.18.9.9"), std::string::npos) << rr.message;
  EXPECT_TRUE(out[0].closeAfter);
  EXPECT_FALSE(m.isRegistered(1));
  // Unset: the observed address is used.
  out = m.onRegister(2, wire::Register{0, "", 4000, 0}, "198.18.0.7");
  ASSERT_EQ(sentTo<wire::Topology>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 2)[0]->ring[0].host, "198.18.0.7");

  Membership::Options o = testOptions();
  o.trustAdvertisedAddresses = true;
  Membership nat(o);
  out = nat.onRegister(1, elsewhere, "127.0.0.1");
  ASSERT_EQ(sentTo<wire::Topology>(out, 1).size(), 1u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 1)[0]->ring[0].host, "198.18.9.9");
}

TEST_F(MembershipTest, SuccessVerdictOnlyWhenAllDone) {
  admit(3);
  const uint64_t e = m.epoch();
  const wire::OpDescriptor d{1, ecclFloat32, ecclSum, 100, 0};
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, wire::OpBegin{e, 0, 0, d});
  EXPECT_TRUE(m.onMessage(1, wire::OpDone{e, 0, 0, ecclSuccess, ""}).empty());
  EXPECT_TRUE(m.onMessage(2, wire::OpDone{e, 0, 0, ecclSuccess, ""}).empty());
  auto out = m.onMessage(3, wire::OpDone{e, 0, 0, ecclSuccess, ""});
  for (uint64_t p = 1; p <= 3; ++p) {
    auto v = sentTo<wire::OpVerdict>(out, p);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclSuccess));
  }
  // A stall report that crossed the verdict does not bring the op back, so a
  // later departure fails nothing that already succeeded.
  m.onMessage(2, wire::Suspect{e, 0, 0, 1, 1000});
  out = m.onDisconnect(3);
  EXPECT_TRUE(sentTo<wire::OpVerdict>(out, 1).empty());
}

TEST_F(MembershipTest, MismatchedDescriptorFailsEveryoneAtOnce) {
  admit(3);
  const uint64_t e = m.epoch();
  m.onMessage(1, wire::OpBegin{e, 4, 0, {1, ecclFloat32, ecclSum, 100, 0}});
  auto out = m.onMessage(2, wire::OpBegin{e, 4, 0, {1, ecclFloat32, ecclSum, 101, 0}});
  for (uint64_t p = 1; p <= 3; ++p) {
    auto v = sentTo<wire::OpVerdict>(out, p);
    ASSERT_EQ(v.size(), 1u) << p;
    EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclInvalidUsage));
    EXPECT_NE(v[0]->message.find("count=101"), std::string::npos) << v[0]->message;
  }
  // Later reports of the same op produce no second verdict.
  EXPECT_TRUE(m.onMessage(3, wire::OpBegin{e, 4, 0, {1, ecclFloat32, ecclSum, 100, 0}}).empty());
}

TEST_F(MembershipTest, LocalFailureIsForwardedAndDepartureFailsOps) {
  admit(3);
  const uint64_t e = m.epoch();
  auto out = m.onMessage(2, wire::OpDone{e, 1, 0, ecclTimeout, "slow"});
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 1)[0]->result, static_cast<uint32_t>(ecclTimeout));
  m.onMessage(1, wire::OpBegin{e, 2, 0, {1, ecclFloat32, ecclSum, 1, 0}});
  out = m.onDisconnect(3);
  auto v = sentTo<wire::OpVerdict>(out, 1);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclPeerLost));
  EXPECT_EQ(m.memberCount(), 2u);
  // The departure is a change: the next update starts a new epoch.
  m.onMessage(1, wire::Vote{});
  m.onMessage(2, wire::Vote{});
  EXPECT_EQ(m.epoch(), e + 1);
}

TEST_F(MembershipTest, PendingPeersAreAdmittedWhenTheLastMemberLeaves) {
  admit(1);
  m.onRegister(2, reg(), "127.0.0.1");
  auto out = m.onMessage(1, wire::Leave{});
  EXPECT_EQ(sentTo<wire::Topology>(out, 2).size(), 1u);
  EXPECT_EQ(m.memberCount(), 1u);
}

// Ranks follow admission, not connection order: a peer that connected
// earlier but was admitted later does not take rank 0 from the first member.
TEST_F(MembershipTest, MembersKeepTheirRanksWhenEarlierConnectionsJoin) {
  m.onRegister(5, reg(), "127.0.0.1");  // connection 5 registers first
  m.onRegister(2, reg(), "127.0.0.1");  // connection 2 registers later
  auto out = m.onMessage(5, wire::Vote{});
  auto t5 = sentTo<wire::Topology>(out, 5), t2 = sentTo<wire::Topology>(out, 2);
  ASSERT_EQ(t5.size(), 1u);
  ASSERT_EQ(t2.size(), 1u);
  EXPECT_EQ(t5[0]->rank, 0u);
  EXPECT_EQ(t2[0]->rank, 1u);
  EXPECT_EQ(t5[0]->ring[0].peerId, 5u);
}

TEST_F(MembershipTest, GroupsGetSeparateRings) {
  m.onRegister(1, reg(0), "127.0.0.1");
  m.onRegister(2, reg(1), "127.0.0.1");
  m.onRegister(3, reg(0), "127.0.0.1");
  auto out = m.onMessage(1, wire::Vote{});
  auto t2 = sentTo<wire::Topology>(out, 2), t3 = sentTo<wire::Topology>(out, 3);
  ASSERT_EQ(t2.size(), 1u);
  EXPECT_EQ(t2[0]->ring.size(), 1u);
  EXPECT_EQ(t2[0]->peerGroup, 1u);
  EXPECT_EQ(t3[0]->ring.size(), 2u);
  EXPECT_EQ(t3[0]->rank, 1u);
}

}  // namespace
}  // namespace eccl::master

namespace eccl::master {
namespace {

class FailureDetectorTest : public MembershipTest {
 protected:
  using Clock = Membership::Clock;
  wire::OpBegin begin(uint64_t seq) {
    return {m.epoch(), 0, seq, {static_cast<uint8_t>(wire::OpKind::kAllReduce), ecclFloat32, ecclSum, 8, 0}};
  }
};

TEST_F(FailureDetectorTest, OnlyTheSilentPeerIsKicked) {
  admit(3);
  m.onMessage(1, begin(0));
  m.onMessage(2, begin(0));
  m.onMessage(3, begin(0));
  // Peers 1 and 2 beat 500 ms after peer 3 last spoke: 1.7 s after their
  // beat, only peer 3 is past the 2 s failure timeout, however slowly this runs.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto beat = Clock::now();
  m.onMessage(1, wire::Heartbeat{});
  m.onMessage(2, wire::Heartbeat{});
  auto out = m.tick(beat + std::chrono::milliseconds(1700));
  ASSERT_EQ(sentTo<wire::Kick>(out, 3).size(), 1u);
  EXPECT_NE(sentTo<wire::Kick>(out, 3)[0]->message.find("no heartbeat"), std::string::npos);
  EXPECT_TRUE(sentTo<wire::Kick>(out, 1).empty());
  EXPECT_TRUE(sentTo<wire::Kick>(out, 2).empty());
  // The op in flight fails on the survivors.
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 1)[0]->result, static_cast<uint32_t>(ecclPeerLost));
  // An op begun later in this epoch fails at once.
  out = m.onMessage(1, begin(1));
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 1)[0]->result, static_cast<uint32_t>(ecclPeerLost));
  // The survivors' votes start a new epoch without the dead peer.
  auto first = m.onMessage(1, wire::Vote{});
  EXPECT_TRUE(sentTo<wire::Topology>(first, 1).empty()) << "the vote waits for peer 2";
  out = m.onMessage(2, wire::Vote{});
  ASSERT_EQ(sentTo<wire::Topology>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 2)[0]->ring.size(), 2u);
}

TEST_F(FailureDetectorTest, SilenceWhileAllAreInTheOpKicksTheSuspect) {
  admit(3);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  // Peer 2 hears nothing from 1 (its left neighbour) for a second; peers 3
  // and 1 starve later, downstream: everyone is stuck.
  m.onMessage(2, wire::Suspect{m.epoch(), 0, 0, 1, 1000});
  m.onMessage(3, wire::Suspect{m.epoch(), 0, 0, 2, 400});
  m.onMessage(1, wire::Suspect{m.epoch(), 0, 0, 3, 200});
  // Decided after half the failure timeout plus a heartbeat (1.5 s), before
  // anyone's heartbeat is overdue (2 s).
  EXPECT_TRUE(m.tick(Clock::now() + std::chrono::milliseconds(1000)).empty());
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(1600));
  ASSERT_EQ(sentTo<wire::Kick>(out, 1).size(), 1u);
  EXPECT_TRUE(sentTo<wire::Kick>(out, 2).empty());
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 3).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 3)[0]->result, static_cast<uint32_t>(ecclPeerLost));
  EXPECT_EQ(m.memberCount(), 2u);
}

TEST_F(FailureDetectorTest, ASlowPeerIsNoFault) {
  admit(3);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  // Peers 2 and 3 wait on peer 1, which reports nothing: it is working.
  m.onMessage(2, wire::Suspect{m.epoch(), 0, 0, 1, 1000});
  m.onMessage(3, wire::Suspect{m.epoch(), 0, 0, 2, 800});
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(1600));
  EXPECT_TRUE(sentTo<wire::Kick>(out, 1).empty());
  EXPECT_EQ(m.memberCount(), 3u);
}

// A member that finished its part of the ring is stuck too (waiting for the
// verdict), not working: if the others starve, the data path is broken.
TEST_F(FailureDetectorTest, StarvingAfterAMemberFinishedIsABreak) {
  admit(3);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  m.onMessage(1, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  m.onMessage(2, wire::Suspect{m.epoch(), 0, 0, 1, 1000});
  m.onMessage(3, wire::Suspect{m.epoch(), 0, 0, 2, 800});
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(1600));
  EXPECT_EQ(sentTo<wire::Kick>(out, 1).size(), 1u);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 2)[0]->result, static_cast<uint32_t>(ecclPeerLost));
}

TEST_F(FailureDetectorTest, SilenceCausedByALatePeerIsNoFault) {
  admit(3);
  m.onMessage(1, begin(0));
  m.onMessage(2, begin(0));  // peer 3 has not reached the op
  m.onMessage(2, wire::Suspect{m.epoch(), 0, 0, 1, 1000});
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(1600));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(m.memberCount(), 3u);
  // When it arrives the op completes normally.
  m.onMessage(3, begin(0));
  for (uint64_t p = 1; p <= 3; ++p) out = m.onMessage(p, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 1)[0]->result, static_cast<uint32_t>(ecclSuccess));
}

// Once a member finished an op, the others get the op timeout to finish it
// too; then the op fails on every member, so none times out alone while the
// others succeed.
// (Op timeout 500 ms, failure timeout 2 s: every tick below is at least
// 500 ms short of a heartbeat death, however slowly this runs.)
TEST_F(FailureDetectorTest, OpDeadlineFailsTheOpOnEveryMember) {
  admit(3, /*opTimeoutMs=*/500);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  // Nobody finished: a long op is no fault, however long it runs.
  const auto began = Clock::now();
  EXPECT_TRUE(m.tick(began + std::chrono::milliseconds(1500)).empty());
  const auto done = Clock::now();
  m.onMessage(1, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  EXPECT_TRUE(m.tick(done + std::chrono::milliseconds(450)).empty());
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(501));
  for (uint64_t p = 1; p <= 3; ++p) {
    auto v = sentTo<wire::OpVerdict>(out, p);
    ASSERT_EQ(v.size(), 1u) << p;
    EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclTimeout));
    EXPECT_NE(v[0]->message.find("peer 2 (still in it), peer 3 (still in it)"), std::string::npos)
        << v[0]->message;
  }
  // A straggler finishing afterwards gets no second verdict.
  out = m.onMessage(2, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  EXPECT_TRUE(sentTo<wire::OpVerdict>(out, 2).empty());
  // The next update opens fresh links.
  const uint64_t e = m.epoch();
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, wire::Vote{});
  EXPECT_EQ(m.epoch(), e + 1);
}

// A member that never reaches the op (its application is stuck elsewhere)
// cannot hold the others' finished op forever; its own op fails when it comes.
TEST_F(FailureDetectorTest, OpDeadlineNamesAMemberThatNeverBegan) {
  admit(3, /*opTimeoutMs=*/500);
  m.onMessage(1, begin(0));
  m.onMessage(2, begin(0));
  m.onMessage(1, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  m.onMessage(2, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(501));
  auto v = sentTo<wire::OpVerdict>(out, 3);  // kept by peer 3 until it issues the op
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclTimeout));
  EXPECT_NE(v[0]->message.find("peer 3 (never began it)"), std::string::npos) << v[0]->message;
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
}

// The smallest op timeout of the group applies, counted from the latest finish.
TEST_F(FailureDetectorTest, OpDeadlineUsesTheSmallestTimeoutFromTheLatestFinish) {
  m.onRegister(1, reg(0, 5000), "127.0.0.1");
  m.onRegister(2, reg(0, 500), "127.0.0.1");
  m.onRegister(3, reg(0, 0), "127.0.0.1");  // 0: no limit of its own
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 3u);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  m.onMessage(1, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto second = Clock::now();
  m.onMessage(2, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  // 600 ms after the first finish but only 450 after the second: no verdict.
  EXPECT_TRUE(m.tick(second + std::chrono::milliseconds(450)).empty());
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(501));
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 3).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 3)[0]->result, static_cast<uint32_t>(ecclTimeout));
}

// An update completed by other members' votes (another group, or votes left
// from a timed-out update) ends the epoch under an op still running: its
// members must get a verdict, not wait for one forever.
TEST_F(FailureDetectorTest, ANewEpochFailsOpsThatHadNoVerdict) {
  admit(2);
  const uint64_t e = m.epoch();
  m.onMessage(1, begin(0));
  m.onMessage(2, begin(0));
  m.onMessage(1, wire::OpDone{e, 0, 0, ecclSuccess, ""});  // peer 1 waits for the verdict
  m.onRegister(3, reg(), "127.0.0.1");
  m.onMessage(1, wire::Vote{});
  auto out = m.onMessage(2, wire::Vote{});
  ASSERT_EQ(m.epoch(), e + 1);
  for (uint64_t p = 1; p <= 2; ++p) {
    auto v = sentTo<wire::OpVerdict>(out, p);
    ASSERT_EQ(v.size(), 1u) << p;
    EXPECT_EQ(v[0]->epoch, e);
    EXPECT_EQ(v[0]->result, static_cast<uint32_t>(ecclPeerLost));
  }
  EXPECT_TRUE(sentTo<wire::OpVerdict>(out, 3).empty()) << "the newcomer never saw the op";
}

TEST_F(FailureDetectorTest, HeartbeatsAreEchoed) {
  admit(1);
  auto out = m.onMessage(1, wire::Heartbeat{});
  EXPECT_EQ(sentTo<wire::Heartbeat>(out, 1).size(), 1u);
}

}  // namespace
}  // namespace eccl::master

namespace eccl::master {
namespace {

using Clock = Membership::Clock;

// A ring op by default (4 MiB); a small op (collectives/small.h) with a small count.
wire::OpBegin beginOp(uint64_t epoch, uint64_t seq, uint64_t count = 1 << 20) {
  return {epoch, 0, seq, {static_cast<uint8_t>(wire::OpKind::kAllReduce), ecclFloat32, ecclSum, count, 0}};
}

// A tiny announced op timeout cannot make the group's ops fail at once: it
// is raised to the floor.
TEST(MembershipSecurity, TinyOpTimeoutIsRaisedToTheFloor) {
  Membership::Options o;
  o.minOpTimeout = std::chrono::milliseconds(1000);
  Membership m(o);
  for (uint64_t p = 1; p <= 3; ++p) m.onRegister(p, reg(0, /*opTimeoutMs=*/1), "127.0.0.1");
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 3u);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, beginOp(m.epoch(), 0));
  const auto done = Clock::now();
  m.onMessage(1, wire::OpDone{m.epoch(), 0, 0, ecclSuccess, ""});
  EXPECT_TRUE(sentTo<wire::OpVerdict>(m.tick(done + std::chrono::milliseconds(500)), 2).empty());
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(1001));
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 2)[0]->result, static_cast<uint32_t>(ecclTimeout));
  EXPECT_NE(sentTo<wire::OpVerdict>(out, 2)[0]->message.find("(1000 ms)"), std::string::npos);
}

// Suspect reports count only from a member about its own ring neighbour: two
// members of group 1 cannot get a member of group 0 removed, and a report
// about the wrong side of the ring is ignored.
TEST(MembershipSecurity, SuspectOnlyAboutOwnRingNeighbour) {
  Membership::Options o;
  o.heartbeatInterval = std::chrono::milliseconds(50);
  o.failureTimeout = std::chrono::milliseconds(10000);  // no heartbeat deaths in this test
  Membership m(o);
  m.onRegister(1, reg(0), "127.0.0.1");
  m.onRegister(2, reg(0), "127.0.0.1");
  m.onRegister(3, reg(0), "127.0.0.1");
  m.onRegister(4, reg(1), "127.0.0.1");
  m.onRegister(5, reg(1), "127.0.0.1");
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 5u);
  const uint64_t e = m.epoch();
  // Group 1 runs an op and both members "report" peer 1 of group 0.
  m.onMessage(4, beginOp(e, 0));
  m.onMessage(5, beginOp(e, 0));
  m.onMessage(4, wire::Suspect{e, 0, 0, 1, 5000, false});
  m.onMessage(5, wire::Suspect{e, 0, 0, 1, 5000, true});
  // Group 0: peer 2's left neighbour is 1, its right one 3; a report naming
  // 3 as the one it receives nothing from is not about its left neighbour.
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, beginOp(e, 0));
  m.onMessage(2, wire::Suspect{e, 0, 0, 3, 5000, false});
  m.onMessage(1, wire::Suspect{e, 0, 0, 2, 5000, false});  // 1's left is 3: ignored too
  m.onMessage(3, wire::Suspect{e, 0, 0, 1, 5000, false});  // 3's left is 2: ignored too
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(6000));
  for (uint64_t p = 1; p <= 5; ++p) {
    EXPECT_TRUE(sentTo<wire::Kick>(out, p).empty()) << "peer " << p << " was kicked";
  }
  EXPECT_EQ(m.memberCount(), 5u);
  // The same reports about the right neighbours are evidence: with every
  // member of group 0 stuck, the oldest stall's suspect goes.
  m.onMessage(1, wire::Suspect{e, 0, 0, 3, 5000, false});
  m.onMessage(2, wire::Suspect{e, 0, 0, 1, 4000, false});
  m.onMessage(3, wire::Suspect{e, 0, 0, 2, 3000, false});
  out = m.tick(Clock::now() + std::chrono::milliseconds(6000));
  EXPECT_EQ(sentTo<wire::Kick>(out, 3).size(), 1u);
  EXPECT_EQ(m.memberCount(), 4u);
}

// Small ops run on links to the members 2^k places on and back too: a stall
// on such a link is evidence in a small op, and ignored in a ring op, where
// there is no such link.
TEST(MembershipSecurity, SmallOpsCountStallsOnTheirFarLinks) {
  for (const bool small : {true, false}) {
    Membership::Options o;
    o.heartbeatInterval = std::chrono::milliseconds(50);
    o.failureTimeout = std::chrono::milliseconds(10000);  // no heartbeat deaths in this test
    Membership m(o);
    for (uint64_t p = 1; p <= 4; ++p) m.onRegister(p, reg(0), "127.0.0.1");
    m.onMessage(1, wire::Vote{});
    ASSERT_EQ(m.memberCount(), 4u);
    const uint64_t e = m.epoch();
    for (uint64_t p = 1; p <= 4; ++p) m.onMessage(p, beginOp(e, 0, small ? 8 : 1 << 20));
    // Ring 1 2 3 4: peer 1 cannot send to 3 (two places on: a far link of a
    // small op), and the others starve downstream of it.
    m.onMessage(1, wire::Suspect{e, 0, 0, 3, 5000, true});
    m.onMessage(2, wire::Suspect{e, 0, 0, 1, 3000, false});
    m.onMessage(3, wire::Suspect{e, 0, 0, 2, 2000, false});
    m.onMessage(4, wire::Suspect{e, 0, 0, 3, 1000, false});
    auto out = m.tick(Clock::now() + std::chrono::milliseconds(6000));
    if (small) {
      EXPECT_EQ(sentTo<wire::Kick>(out, 3).size(), 1u) << "the oldest stall's suspect goes";
      EXPECT_EQ(m.memberCount(), 3u);
    } else {
      for (uint64_t p = 1; p <= 4; ++p) {
        EXPECT_TRUE(sentTo<wire::Kick>(out, p).empty()) << "peer " << p << " was kicked";
      }
      EXPECT_EQ(m.memberCount(), 4u);
    }
  }
}

// A member that never votes cannot hold every group's update: once the
// vote timeout has passed since the first vote, it is removed and the
// update completes for the others (and admits the newcomer).
TEST(MembershipSecurity, MemberThatNeverVotesIsRemovedAfterTheVoteTimeout) {
  Membership::Options o;
  o.voteTimeout = std::chrono::milliseconds(200);
  o.failureTimeout = std::chrono::milliseconds(10000);
  Membership m(o);
  m.onRegister(1, reg(0), "127.0.0.1");
  m.onRegister(2, reg(0), "127.0.0.1");
  m.onRegister(3, reg(1), "127.0.0.1");
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 3u);
  const uint64_t e = m.epoch();
  m.onRegister(4, reg(1), "127.0.0.1");  // a newcomer waits for the update
  m.onMessage(1, wire::Vote{});
  m.onMessage(3, wire::Vote{});  // peer 2 never votes
  EXPECT_TRUE(m.tick(Clock::now() + std::chrono::milliseconds(100)).empty());
  auto out = m.tick(Clock::now() + std::chrono::milliseconds(250));
  ASSERT_EQ(sentTo<wire::Kick>(out, 2).size(), 1u);
  EXPECT_NE(sentTo<wire::Kick>(out, 2)[0]->message.find("ecclCommUpdateTopology"), std::string::npos);
  for (uint64_t p : {1u, 3u, 4u}) EXPECT_EQ(sentTo<wire::Topology>(out, p).size(), 1u) << p;
  EXPECT_EQ(m.epoch(), e + 1);
  EXPECT_EQ(m.memberCount(), 3u);
}

// The group's segment size is the smallest its members announce.
TEST(MembershipSecurity, SegmentSizeIsTheGroupsSmallest) {
  Membership m(testOptions());
  m.onRegister(1, wire::Register{0, "", 4000, 0, 1u << 20}, "127.0.0.1");
  m.onRegister(2, wire::Register{0, "", 4000, 0, 8192}, "127.0.0.1");
  m.onRegister(3, wire::Register{1, "", 4000, 0, 65536}, "127.0.0.1");
  auto out = m.onMessage(1, wire::Vote{});
  for (uint64_t p : {1u, 2u}) EXPECT_EQ(sentTo<wire::Topology>(out, p)[0]->segmentBytes, 8192u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 3)[0]->segmentBytes, 65536u);  // its own group
}

// 1024 members of one group (the most there may be): every Topology, and verdicts that would name
// most of them or quote a 4 KiB error, still decode at the peers.
TEST(MembershipSecurity, ThousandsOfMembersGetMessagesThatDecode) {
  Membership::Options o;
  o.minOpTimeout = std::chrono::milliseconds(100);
  o.failureTimeout = std::chrono::milliseconds(60000);
  Membership m(o);
  constexpr uint64_t kPeers = wire::kMaxRingPeers;
  for (uint64_t p = 1; p <= kPeers; ++p) {
    m.onRegister(p, wire::Register{0, "", 4000, 100}, fmt::format("198.18.{}.{}", p / 250, p % 250));
  }
  auto out = m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), kPeers);
  EXPECT_EQ(sentTo<wire::Topology>(out, kPeers).size(), 1u);
  expectAllDecode(out);
  const uint64_t e = m.epoch();
  // Op 0: one member finishes, the deadline names a few of the 1199 others.
  m.onMessage(1, beginOp(e, 0));
  m.onMessage(1, wire::OpDone{e, 0, 0, ecclSuccess, ""});
  out = m.tick(Clock::now() + std::chrono::milliseconds(200));
  auto v = sentTo<wire::OpVerdict>(out, 7);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0]->message.find("and 1015 more"), std::string::npos) << v[0]->message;
  expectAllDecode(out);
  // Op 1: a member fails it with a 4 KiB message; the verdict quotes it.
  out = m.onMessage(9, wire::OpDone{e, 0, 1, ecclInternalError, std::string(wire::kMaxStringBytes, 'e')});
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
  EXPECT_GT(sentTo<wire::OpVerdict>(out, 1)[0]->message.size(), wire::kMaxStringBytes);
  expectAllDecode(out);
  // The group is full: one more is refused, with a message that decodes.
  out = m.onRegister(kPeers + 1, wire::Register{0, "", 4000, 100}, "198.18.9.9");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(std::get<wire::RegisterReply>(out[0].msg).result, static_cast<uint32_t>(ecclInvalidUsage));
  expectAllDecode(out);
}

// An insider that opens ops nobody else runs until the cap is hit is the one
// removed, not the honest member whose op comes next.
TEST(MembershipSecurity, OpFloodRemovesTheFlooder) {
  Membership m(testOptions());
  for (uint64_t p = 1; p <= 3; ++p) m.onRegister(p, reg(0), "127.0.0.1");
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 3u);
  const uint64_t e = m.epoch();
  for (uint64_t s = 0; s < kMaxOpenOpsPerGroup; ++s) {
    m.onMessage(3, wire::OpBegin{e, 99, s, {1, ecclFloat32, ecclSum, 8, 0}});
  }
  auto out = m.onMessage(1, beginOp(e, 0));  // an honest op, one past the cap
  EXPECT_EQ(sentTo<wire::Kick>(out, 3).size(), 1u);
  EXPECT_TRUE(sentTo<wire::Kick>(out, 1).empty());
  EXPECT_TRUE(m.isRegistered(1));
  EXPECT_FALSE(m.isRegistered(3));
}

}  // namespace
}  // namespace eccl::master

namespace eccl::master {
namespace {

// Shared-state syncs through the master: manifests in, plans out, verdicts
// per member, a lost source not failing the others, revisions remembered.
class SyncMembershipTest : public MembershipTest {
 protected:
  wire::OpBegin begin(uint64_t seq) {
    wire::OpBegin b;
    b.epoch = m.epoch();
    b.tag = wire::kSyncTag;
    b.seq = seq;
    b.desc.kind = static_cast<uint8_t>(wire::OpKind::kSync);
    b.desc.dtype = ecclUint8;
    return b;
  }
  std::vector<Outgoing> manifest(uint64_t peer, uint64_t seq, uint64_t revision, uint64_t hash,
                                 ecclSyncStrategy_t strategy = ecclSyncEnforcePopular) {
    std::vector<Outgoing> all;
    for (const auto& part : wire::splitManifest(m.epoch(), seq, revision, strategy,
                                                {{"w", ecclFloat32, 100, hash, false}})) {
      auto out = m.onMessage(peer, part);
      all.insert(all.end(), out.begin(), out.end());
    }
    return all;
  }
  std::vector<Outgoing> done(uint64_t peer, uint64_t seq, ecclResult_t r = ecclSuccess) {
    return m.onMessage(peer, wire::OpDone{m.epoch(), wire::kSyncTag, seq, static_cast<uint32_t>(r), ""});
  }
};

TEST_F(SyncMembershipTest, PlansOnceEveryManifestIsInThenVerdictsPerMember) {
  admit(3);
  for (uint64_t p = 1; p <= 3; ++p) m.onMessage(p, begin(0));
  EXPECT_TRUE(sentTo<wire::SyncPlan>(manifest(1, 0, 7, 1), 1).empty());
  EXPECT_TRUE(sentTo<wire::SyncPlan>(manifest(2, 0, 7, 1), 1).empty());
  auto out = manifest(3, 0, 7, 2);  // the odd one out
  expectAllDecode(out);
  ASSERT_EQ(sentTo<wire::SyncPlan>(out, 3).size(), 1u);
  const wire::SyncPlan& p3 = *sentTo<wire::SyncPlan>(out, 3)[0];
  EXPECT_EQ(p3.result, static_cast<uint32_t>(ecclSuccess));
  EXPECT_EQ(p3.revision, 7u);
  ASSERT_EQ(p3.fetch.size(), 1u);
  EXPECT_EQ(p3.fetch[0].hash, 1u);
  EXPECT_EQ(p3.sources, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(sentTo<wire::SyncPlan>(out, 1)[0]->receivers, std::vector<uint64_t>{3});
  // Source 1 dies mid-transfer: the sync goes on for the others (no verdict yet).
  out = m.onDisconnect(1);
  EXPECT_TRUE(sentTo<wire::OpVerdict>(out, 2).empty());
  EXPECT_TRUE(sentTo<wire::OpVerdict>(done(2, 0), 2).empty());
  out = done(3, 0);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 2).size(), 1u);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 3).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 3)[0]->result, static_cast<uint32_t>(ecclSuccess));
}

// A transfer stalls between a receiver and a source that are not ring
// neighbours (a cut path; both alive): the stall reports count in a sync, the
// source is removed like a collective's suspect, and the sync goes on for the
// others (no failure verdict) while a report about another group is ignored.
TEST_F(SyncMembershipTest, StalledTransferRemovesTheSourceAndTheSyncGoesOn) {
  admit(5);  // ring 1-2-3-4-5: 5's neighbours are 4 and 1
  m.onRegister(9, wire::Register{1, "127.0.0.1", 4000, 0}, "127.0.0.1");
  for (uint64_t p = 1; p <= 5; ++p) m.onMessage(p, wire::Vote{m.epoch()});
  ASSERT_EQ(m.memberCount(), 6u);
  for (uint64_t p = 1; p <= 5; ++p) m.onMessage(p, begin(0));
  for (uint64_t p = 1; p <= 4; ++p) manifest(p, 0, 3, 1);
  auto out = manifest(5, 0, 3, 2);
  ASSERT_EQ(sentTo<wire::SyncPlan>(out, 5).size(), 1u);
  for (uint64_t p : {1, 3, 4}) done(p, 0);
  const auto now = Membership::Clock::now();
  // Nothing from source 2 for a second; 2 cannot hand its data to 5 since later.
  m.onMessage(5, wire::Suspect{m.epoch(), wire::kSyncTag, 0, 2, 1000, false});
  m.onMessage(2, wire::Suspect{m.epoch(), wire::kSyncTag, 0, 5, 400, true});
  m.onMessage(5, wire::Suspect{m.epoch(), wire::kSyncTag, 0, 9, 1000, false});  // another group
  EXPECT_TRUE(m.tick(now + std::chrono::milliseconds(1000)).empty());
  out = m.tick(now + std::chrono::milliseconds(1600));
  expectAllDecode(out);
  ASSERT_EQ(sentTo<wire::Kick>(out, 2).size(), 1u);
  EXPECT_TRUE(sentTo<wire::Kick>(out, 9).empty());
  EXPECT_TRUE(sentTo<wire::OpVerdict>(out, 5).empty());  // the sync goes on
  ASSERT_EQ(sentTo<wire::MemberLost>(out, 5).size(), 1u);  // 5 stops waiting for 2
  out = done(5, 0);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 5).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 5)[0]->result, static_cast<uint32_t>(ecclSuccess));
}

TEST_F(SyncMembershipTest, RevisionIsRememberedAndSkipsAreRefused) {
  admit(2);
  for (uint64_t p = 1; p <= 2; ++p) m.onMessage(p, begin(0));
  manifest(1, 0, 7, 1);
  manifest(2, 0, 7, 1);
  done(1, 0);
  done(2, 0);
  // Next sync: peer 1 advances by one, peer 2 skips one.
  for (uint64_t p = 1; p <= 2; ++p) m.onMessage(p, begin(1));
  manifest(1, 1, 8, 1);
  auto out = manifest(2, 1, 9, 1);
  ASSERT_EQ(sentTo<wire::SyncPlan>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::SyncPlan>(out, 2)[0]->result, static_cast<uint32_t>(ecclStateMismatch));
  EXPECT_NE(sentTo<wire::SyncPlan>(out, 2)[0]->message.find("last sync was at revision 7"),
            std::string::npos) << sentTo<wire::SyncPlan>(out, 2)[0]->message;
  EXPECT_EQ(sentTo<wire::SyncPlan>(out, 1)[0]->result, static_cast<uint32_t>(ecclSuccess));
}

TEST_F(SyncMembershipTest, MalformedManifestsFailTheSync) {
  admit(2);
  for (uint64_t p = 1; p <= 2; ++p) m.onMessage(p, begin(0));
  wire::SyncManifest bad = wire::splitManifest(m.epoch(), 0, 1, 0, {{"w", ecclFloat32, 1, 1, false}})[0];
  bad.part = 0;
  bad.parts = 2;
  bad.totalEntries = 1;
  m.onMessage(1, bad);
  bad.part = 1;
  bad.entries = {{"x", ecclFloat32, 1, 1, false}};  // more than announced
  auto out = m.onMessage(1, bad);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 2).size(), 1u);
  EXPECT_EQ(sentTo<wire::OpVerdict>(out, 2)[0]->result, static_cast<uint32_t>(ecclInvalidUsage));
  // A sync kind on another tag is refused too.
  wire::OpBegin b = begin(0);
  b.tag = 3;
  out = m.onMessage(2, b);
  ASSERT_EQ(sentTo<wire::OpVerdict>(out, 1).size(), 1u);
}

}  // namespace
}  // namespace eccl::master

// ---- ecclCommOptimizeTopology: probe schedule, matrix, ring ---------------------
namespace eccl::master {
namespace {

class ProbeMembershipTest : public ::testing::Test {
 protected:
  // Peers 1..n on hosts 10.0.0.1..n (the master sees them there), all members.
  void admit(int n) {
    for (int i = 1; i <= n; ++i) m.onRegister(i, wire::Register{0, "", 4000, 0}, host(i));
    m.onMessage(1, wire::Vote{});
    ASSERT_EQ(m.memberCount(), static_cast<size_t>(n));
  }
  static std::string host(int i) { return fmt::format("10.0.0.{}", i); }

  // Every member votes to optimize; returns each member's plan.
  std::map<uint64_t, wire::ProbePlan> voteOptimize(const std::vector<uint64_t>& members) {
    std::vector<Outgoing> out;
    for (uint64_t id : members) out = m.onMessage(id, wire::Vote{m.epoch(), true});
    expectAllDecode(out);
    std::map<uint64_t, wire::ProbePlan> plans;
    for (uint64_t id : members) {
      auto p = sentTo<wire::ProbePlan>(out, id);
      EXPECT_EQ(p.size(), 1u) << "peer " << id;
      if (!p.empty()) plans[id] = *p[0];
    }
    return plans;
  }

  // Reports what bw(from, to) says each member received from its partners.
  std::vector<Outgoing> report(const std::map<uint64_t, wire::ProbePlan>& plans,
                               const std::function<uint64_t(uint64_t, uint64_t)>& bw) {
    std::vector<Outgoing> all;
    for (const auto& [id, plan] : plans) {
      wire::ProbeReport r{plan.epoch, plan.session, ecclSuccess, {}};
      for (const wire::RingPeer& p : plan.rounds) {
        if (p.peerId != 0) r.rates.push_back({p.peerId, bw(p.peerId, id)});
      }
      auto out = m.onMessage(id, r);
      all.insert(all.end(), out.begin(), out.end());
    }
    expectAllDecode(all);
    return all;
  }

  Membership m{testOptions()};
};

// Slow (10x) both ways between 1 and 2, and between 3 and 4: neighbours in
// admission order.
uint64_t heterogeneous(uint64_t from, uint64_t to) {
  const auto slow = [](uint64_t a, uint64_t b) {
    return (std::min(a, b) == 1 && std::max(a, b) == 2) || (std::min(a, b) == 3 && std::max(a, b) == 4);
  };
  return slow(from, to) ? 10'000'000 : 100'000'000;
}

TEST_F(ProbeMembershipTest, RoundRobinPlanThenTheFastestRing) {
  admit(4);
  const uint64_t epoch = m.epoch();
  auto plans = voteOptimize({1, 2, 3, 4});
  ASSERT_EQ(plans.size(), 4u);
  // 3 rounds; in each, partners are mutual; over all rounds every pair meets once.
  std::set<std::pair<uint64_t, uint64_t>> pairs;
  for (const auto& [id, plan] : plans) {
    ASSERT_EQ(plan.rounds.size(), 3u);
    EXPECT_EQ(plan.probeMs, 1000u);
    for (size_t r = 0; r < plan.rounds.size(); ++r) {
      const uint64_t other = plan.rounds[r].peerId;
      ASSERT_NE(other, 0u);
      EXPECT_EQ(plans[other].rounds[r].peerId, id) << "round " << r;
      EXPECT_EQ(plan.rounds[r].host, host(static_cast<int>(other)));
      pairs.insert({std::min(id, other), std::max(id, other)});
    }
  }
  EXPECT_EQ(pairs.size(), 6u);
  // A rate about someone who was not its partner is ignored (no such round).
  auto out = report(plans, heterogeneous);
  const auto t = sentTo<wire::Topology>(out, 1);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0]->result, static_cast<uint32_t>(ecclSuccess));
  EXPECT_EQ(t[0]->epoch, epoch + 1);  // a new ring is a new epoch
  std::vector<uint64_t> ring;
  for (const wire::RingPeer& p : t[0]->ring) ring.push_back(p.peerId);
  EXPECT_TRUE(ring == (std::vector<uint64_t>{1, 3, 2, 4}) || ring == (std::vector<uint64_t>{1, 4, 2, 3}))
      << fmt::format("{}", fmt::join(ring, " "));
  // Every member gets the same ring, each its own rank.
  for (uint64_t id = 1; id <= 4; ++id) {
    auto ti = sentTo<wire::Topology>(out, id);
    ASSERT_EQ(ti.size(), 1u);
    EXPECT_EQ(ti[0]->ring, t[0]->ring);
    EXPECT_EQ(ti[0]->ring[ti[0]->rank].peerId, id);
  }
}

// Beyond 9 members the master searches (bounded) instead of trying every
// ring: 12 members where one "far" pair per member is slow still get a ring
// of all of them without a slow hop, the same for every member.
TEST_F(ProbeMembershipTest, LargeGroupsAreSearchedAndAvoidSlowHops) {
  admit(12);
  auto plans = voteOptimize({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  ASSERT_EQ(plans.size(), 12u);
  EXPECT_EQ(plans[1].rounds.size(), 11u);
  // Slow between i and i+1 (mod 12): admission order is the worst ring.
  const auto bw = [](uint64_t from, uint64_t to) -> uint64_t {
    const uint64_t d = from > to ? from - to : to - from;
    return d == 1 || d == 11 ? 1'000'000 : 100'000'000;
  };
  auto out = report(plans, bw);
  const auto t = sentTo<wire::Topology>(out, 1);
  ASSERT_EQ(t.size(), 1u);
  ASSERT_EQ(t[0]->ring.size(), 12u);
  std::set<uint64_t> seen;
  for (size_t k = 0; k < 12; ++k) {
    const uint64_t a = t[0]->ring[k].peerId, b = t[0]->ring[(k + 1) % 12].peerId;
    seen.insert(a);
    EXPECT_EQ(bw(a, b), 100'000'000u) << a << " -> " << b;
  }
  EXPECT_EQ(seen.size(), 12u);
  for (uint64_t id = 2; id <= 12; ++id) EXPECT_EQ(sentTo<wire::Topology>(out, id).at(0)->ring, t[0]->ring);
}

TEST_F(ProbeMembershipTest, KnownPairsAreNotProbedAgainAndARejoinReusesItsHostsRows) {
  admit(4);
  report(voteOptimize({1, 2, 3, 4}), heterogeneous);
  const uint64_t epoch = m.epoch();
  // Everything is measured: empty plans, the same ring, no new epoch.
  auto plans = voteOptimize({1, 2, 3, 4});
  for (const auto& [id, plan] : plans) EXPECT_TRUE(plan.rounds.empty());
  auto out = report(plans, heterogeneous);
  ASSERT_EQ(sentTo<wire::Topology>(out, 2).size(), 1u);
  EXPECT_EQ(m.epoch(), epoch);
  // Peer 4 leaves; peer 5 comes from its host and is admitted.
  m.onDisconnect(4);
  m.onRegister(5, wire::Register{0, "", 4000, 0}, host(4));
  for (uint64_t id : {1, 2, 3}) m.onMessage(id, wire::Vote{m.epoch()});
  ASSERT_EQ(m.memberCount(), 4u);
  plans = voteOptimize({1, 2, 3, 5});
  for (const auto& [id, plan] : plans) EXPECT_TRUE(plan.rounds.empty()) << "peer " << id;
  // A newcomer from another host is measured against everyone, only it.
  m.onDisconnect(5);
  m.onRegister(6, wire::Register{0, "", 4000, 0}, "10.0.0.9");
  for (uint64_t id : {1, 2, 3}) m.onMessage(id, wire::Vote{m.epoch()});
  plans = voteOptimize({1, 2, 3, 6});
  size_t probed = 0;
  for (const auto& [id, plan] : plans) {
    for (const wire::RingPeer& p : plan.rounds) {
      if (p.peerId != 0) {
        EXPECT_TRUE(id == 6 || p.peerId == 6) << id << " probes " << p.peerId;
        ++probed;
      }
    }
  }
  EXPECT_EQ(probed, 6u);  // 3 pairs, both ends
}

TEST_F(ProbeMembershipTest, AMemberLostWhileProbingFailsTheCallOnEveryoneAndARetryWorks) {
  admit(4);
  auto plans = voteOptimize({1, 2, 3, 4});
  // Peer 1 reports, then peer 3 dies.
  auto out = m.onMessage(1, wire::ProbeReport{plans[1].epoch, plans[1].session, ecclSuccess,
                                              {{plans[1].rounds[0].peerId, 5}}});
  EXPECT_TRUE(out.empty());
  out = m.onDisconnect(3);
  expectAllDecode(out);
  for (uint64_t id : {1, 2, 4}) {
    auto t = sentTo<wire::Topology>(out, id);
    ASSERT_EQ(t.size(), 1u) << id;
    EXPECT_EQ(t[0]->result, static_cast<uint32_t>(ecclPeerLost));
    EXPECT_NE(t[0]->message.find("probing"), std::string::npos) << t[0]->message;
  }
  // A late report of the failed probe changes nothing.
  EXPECT_TRUE(m.onMessage(2, wire::ProbeReport{plans[2].epoch, plans[2].session, ecclSuccess, {}})
                  .empty());
  // The retry probes the three that are left (a new session) and succeeds.
  auto retry = voteOptimize({1, 2, 4});
  ASSERT_EQ(retry.size(), 3u);
  EXPECT_NE(retry[1].session, plans[1].session);
  out = report(retry, heterogeneous);
  auto t = sentTo<wire::Topology>(out, 4);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0]->result, static_cast<uint32_t>(ecclSuccess));
  EXPECT_EQ(t[0]->ring.size(), 3u);
}

TEST_F(ProbeMembershipTest, AMemberThatNeverReportsIsRemovedAtTheProbeDeadline) {
  Membership::Options o = testOptions();
  o.failureTimeout = std::chrono::seconds(60);  // heartbeats stay out of it
  m = Membership(o);
  admit(3);
  auto plans = voteOptimize({1, 2, 3});
  m.onMessage(1, wire::ProbeReport{plans[1].epoch, plans[1].session, ecclSuccess, {}});
  m.onMessage(2, wire::ProbeReport{plans[2].epoch, plans[2].session, ecclSuccess, {}});
  // 3 rounds (3 members: one sits out each) of 1 s plus 3 s slack, plus 5 s.
  auto out = m.tick(Membership::Clock::now() + std::chrono::seconds(12));
  EXPECT_TRUE(sentTo<wire::Kick>(out, 3).empty());
  out = m.tick(Membership::Clock::now() + std::chrono::seconds(18));
  ASSERT_EQ(sentTo<wire::Kick>(out, 3).size(), 1u);
  auto t = sentTo<wire::Topology>(out, 1);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0]->result, static_cast<uint32_t>(ecclPeerLost));
}

TEST_F(ProbeMembershipTest, APlainVoteJoinsTheOptimizingUpdateAndGroupsProbeApart) {
  m.onRegister(1, wire::Register{0, "", 4000, 0}, host(1));
  m.onRegister(2, wire::Register{1, "", 4000, 0}, host(2));
  m.onRegister(3, wire::Register{0, "", 4000, 0}, host(3));
  m.onRegister(4, wire::Register{1, "", 4000, 0}, host(4));
  m.onMessage(1, wire::Vote{});
  ASSERT_EQ(m.memberCount(), 4u);
  std::vector<Outgoing> out;
  out = m.onMessage(1, wire::Vote{m.epoch(), true});
  out = m.onMessage(2, wire::Vote{m.epoch(), false});
  out = m.onMessage(3, wire::Vote{m.epoch(), false});
  EXPECT_TRUE(out.empty());
  out = m.onMessage(4, wire::Vote{m.epoch(), false});
  std::map<uint64_t, wire::ProbePlan> plans;
  for (uint64_t id = 1; id <= 4; ++id) {
    auto p = sentTo<wire::ProbePlan>(out, id);
    ASSERT_EQ(p.size(), 1u) << id;
    plans[id] = *p[0];
  }
  // Partners only within the group.
  EXPECT_EQ(plans[1].rounds.at(0).peerId, 3u);
  EXPECT_EQ(plans[2].rounds.at(0).peerId, 4u);
  out = report(plans, heterogeneous);
  EXPECT_EQ(sentTo<wire::Topology>(out, 2).at(0)->ring.size(), 2u);
  EXPECT_EQ(sentTo<wire::Topology>(out, 3).at(0)->ring.size(), 2u);
}

}  // namespace
}  // namespace eccl::master
