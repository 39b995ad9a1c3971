// The RDMA transport's pieces over the stand-in provider
// (tests/support/fake_verbs.h): device selection, the queue pair state
// machine and the registrations. The links themselves run in
// tests/integration/ibverbs_test.cc.
#include <gtest/gtest.h>
#include <poll.h>

#include <vector>

#include "support/fake_verbs.h"
#include "transport/ibverbs/queue_pair.h"
#include "transport/ibverbs/registration.h"
#include "transport/transport.h"

namespace eccl::transport::ibverbs {
namespace {

using test::FakeVerbs;
using test::ScopedFakeVerbs;

const Api& verbs() {
  Result<const Api*> a = api();
  return **a;
}

RdmaOptions pick(const char* device, int gidIndex = -1) {
  RdmaOptions o;
  o.device = device;
  o.gidIndex = gidIndex;
  return o;
}

std::shared_ptr<Device> openDevice(const RdmaOptions& s = {}) {
  Result<const Api*> a = api();
  EXPECT_TRUE(a.hasValue());
  Result<std::shared_ptr<Device>> d = Device::open(**a, s);
  EXPECT_TRUE(d.hasValue()) << d.status().message();
  return d ? *d : nullptr;
}

TEST(Ibverbs, NoDeviceIsUnsupportedWithTheReason) {
  FakeVerbs::Options none;
  none.devices.clear();
  ScopedFakeVerbs fake(none);
  Result<std::shared_ptr<Device>> d = Device::open(verbs(), {});
  ASSERT_FALSE(d.hasValue());
  EXPECT_EQ(d.status().code(), ecclUnsupported);
  EXPECT_NE(d.status().message().find("no RDMA device found"), std::string::npos) << d.status().message();
}

TEST(Ibverbs, SelectsTheDeviceAndPortAskedFor) {
  FakeVerbs::Options o;
  o.devices.resize(2);
  o.devices[0].name = "mlx5_0";
  o.devices[0].state = IBV_PORT_DOWN;
  o.devices[1].name = "mlx5_1";
  o.devices[1].ports = 2;
  o.devices[1].linkLayer = IBV_LINK_LAYER_ETHERNET;
  ScopedFakeVerbs fake(o);
  // The first active port: mlx5_0's is down.
  std::shared_ptr<Device> d = openDevice();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->name(), "mlx5_1");
  EXPECT_EQ(d->port(), 1);
  EXPECT_TRUE(d->global()) << "RoCE is addressed by GID";
  EXPECT_EQ(d->gidIndex(), 0);
  d = openDevice(pick("mlx5_1:2", 1));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port(), 2);
  EXPECT_EQ(d->gidIndex(), 1);
  d.reset();
  for (const char* bad : {"mlx5_0", "mlx5_9", "mlx5_1:3"}) {
    Result<std::shared_ptr<Device>> r = Device::open(verbs(), pick(bad));
    ASSERT_FALSE(r.hasValue()) << bad;
    EXPECT_EQ(r.status().code(), ecclUnsupported);
    EXPECT_NE(r.status().message().find("mlx5_1"), std::string::npos)
        << "names the devices found: " << r.status().message();
  }
  Result<std::shared_ptr<Device>> r = Device::open(verbs(), pick("mlx5_1:x"));
  EXPECT_EQ(r.status().code(), ecclInvalidArgument);
  r = Device::open(verbs(), pick("mlx5_1", 99));
  EXPECT_EQ(r.status().code(), ecclUnsupported) << "no GID at that index";
  EXPECT_EQ(fake->counts().liveContexts, 0u);
  EXPECT_EQ(fake->counts().livePds, 0u);
}

// Two queue pairs through INIT, RTR and RTS towards each other, and the
// order the state machine insists on.
TEST(Ibverbs, QueuePairsConnectThroughTheStateMachine) {
  ScopedFakeVerbs fake;
  std::shared_ptr<Device> d = openDevice();
  ASSERT_TRUE(d);
  Result<CompletionQueue> cq = CompletionQueue::create(d, 64);
  ASSERT_TRUE(cq.hasValue());
  Result<QueuePair> a = QueuePair::create(d, cq->cq(), {});
  Result<QueuePair> b = QueuePair::create(d, cq->cq(), {});
  ASSERT_TRUE(a.hasValue() && b.hasValue());
  EXPECT_LT(a->psn(), 1u << 24);
  wire::VerbsOffer addr;
  addr.lid = d->lid();
  addr.mtu = static_cast<uint8_t>(d->mtu());
  // Out of order: RTR before INIT, RTS before RTR.
  EXPECT_EQ(a->readyToReceive(addr, b->local()).code(), ecclInternalError);
  ASSERT_TRUE(a->init(false).isOk());
  EXPECT_EQ(a->readyToSend().code(), ecclInternalError);
  ASSERT_TRUE(b->init(true).isOk());
  // Addressed by GID where the port is addressed by LID: refused, readably.
  wire::VerbsOffer global = addr;
  global.global = 1;
  Status st = a->readyToReceive(global, b->local());
  EXPECT_EQ(st.code(), ecclInvalidUsage);
  EXPECT_NE(st.message().find("link layer"), std::string::npos) << st.message();
  ASSERT_TRUE(a->readyToReceive(addr, b->local()).isOk());
  ASSERT_TRUE(b->readyToReceive(addr, a->local()).isOk());
  ASSERT_TRUE(a->readyToSend().isOk());
  ASSERT_TRUE(b->readyToSend().isOk());
  EXPECT_EQ(a->state(), QueuePair::State::kReadyToSend);

  // A write-with-immediate from a lands in b's registered buffer.
  std::vector<char> src(100, 'x'), dst(100, 0);
  ibv_mr* smr = d->api().regMr(d->pd(), src.data(), src.size(), IBV_ACCESS_LOCAL_WRITE);
  ibv_mr* dmr = d->api().regMr(d->pd(), dst.data(), dst.size(),
                               IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ibv_recv_wr rwr{};
  rwr.wr_id = 7;
  ASSERT_TRUE(b->postRecv(&rwr).isOk());
  ibv_sge sge{reinterpret_cast<uintptr_t>(src.data()), 100, smr->lkey};
  ibv_send_wr wr{};
  wr.wr_id = 9;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = 42;
  wr.wr.rdma.remote_addr = reinterpret_cast<uintptr_t>(dst.data());
  wr.wr.rdma.rkey = dmr->rkey;
  ASSERT_TRUE(a->postSend(&wr).isOk());
  ibv_wc wc[4];
  ASSERT_EQ(cq->poll(4, wc), 2);
  EXPECT_EQ(dst, src);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(wc[i].status, IBV_WC_SUCCESS);
  // ERROR flushes what is outstanding.
  ASSERT_TRUE(b->postRecv(&rwr).isOk());
  b->fail();
  EXPECT_EQ(b->state(), QueuePair::State::kError);
  ASSERT_EQ(cq->poll(4, wc), 1);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  d->api().deregMr(smr);
  d->api().deregMr(dmr);
}

TEST(Ibverbs, CompletionChannelAnnouncesCompletionsAfterArming) {
  ScopedFakeVerbs fake;
  std::shared_ptr<Device> d = openDevice();
  Result<CompletionQueue> cq = CompletionQueue::create(d, 16);
  ASSERT_TRUE(cq.hasValue());
  Result<QueuePair> a = QueuePair::create(d, cq->cq(), {});
  ASSERT_TRUE(a.hasValue());
  ASSERT_TRUE(a->init(false).isOk());
  ASSERT_TRUE(cq->arm().isOk());
  ibv_recv_wr rwr{};
  ASSERT_TRUE(a->postRecv(&rwr).isOk());
  a->fail();  // one flushed completion
  pollfd p{cq->fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 1000), 1);
  cq->consumeEvent();
  ibv_wc wc;
  EXPECT_EQ(cq->poll(1, &wc), 1);
}

// Sends in flight over the same pages share a registration; it is gone
// with the last of them (nothing is kept that could go stale).
TEST(Ibverbs, RegistrationsLiveAsLongAsTheirSends) {
  ScopedFakeVerbs fake;
  std::shared_ptr<Device> d = openDevice();
  Registrations regs(d, {});
  std::vector<std::byte> buf(1 << 20);
  {
    Result<Registrations::Pin> a = regs.pin(buf.data(), buf.size());
    ASSERT_TRUE(a.hasValue()) << a.status().message();
    Result<Registrations::Pin> b = regs.pin(buf.data() + 4096, 1000);
    ASSERT_TRUE(b.hasValue());
    EXPECT_EQ(a->lkey(), b->lkey()) << "inside the first: shared";
    EXPECT_EQ(regs.stats().entries, 1u);
    // A range reaching past it gets its own.
    Result<Registrations::Pin> c = regs.pin(buf.data() + 4096, buf.size());
    ASSERT_TRUE(c.hasValue());
    EXPECT_NE(a->lkey(), c->lkey());
    EXPECT_EQ(regs.stats().entries, 2u);
    const uintptr_t misalign = reinterpret_cast<uintptr_t>(buf.data()) % 4096;
    EXPECT_GE(regs.stats().bytes, 2 * buf.size() + (misalign != 0 ? 4096 : 0) - 4096);
  }
  Registrations::Stats s = regs.stats();
  EXPECT_EQ(s.shared, 1u);
  EXPECT_EQ(s.made, 2u);
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(fake->counts().liveMrs, 0u);
  // Moving a pin moves the hold.
  Result<Registrations::Pin> a = regs.pin(buf.data(), 10);
  Registrations::Pin moved = std::move(*a);
  EXPECT_EQ(regs.stats().entries, 1u);
  moved = Registrations::Pin();
  EXPECT_EQ(regs.stats().entries, 0u);
}

TEST(Ibverbs, RegistrationsAreBounded) {
  ScopedFakeVerbs fake;
  std::shared_ptr<Device> d = openDevice();
  Registrations regs(d, {/*maxEntries=*/3, /*maxBytes=*/uint64_t{1} << 30});
  std::vector<std::vector<std::byte>> bufs(4, std::vector<std::byte>(64 << 10));
  std::vector<Registrations::Pin> held;
  for (int i = 0; i < 3; ++i) {
    Result<Registrations::Pin> p = regs.pin(bufs[i].data(), bufs[i].size());
    ASSERT_TRUE(p.hasValue());
    held.push_back(std::move(*p));
  }
  Result<Registrations::Pin> more = regs.pin(bufs[3].data() + 8192, 100);  // clear of its neighbours
  ASSERT_FALSE(more.hasValue());
  EXPECT_NE(more.status().message().find("in use at once"), std::string::npos);
  held.clear();
  EXPECT_TRUE(regs.pin(bufs[3].data() + 8192, 100).hasValue());
  // One frame larger than the byte bound still goes, alone.
  Registrations small(d, {8, 4096});
  std::vector<std::byte> big(1 << 20);
  EXPECT_TRUE(small.pin(big.data(), big.size()).hasValue());
  EXPECT_EQ(fake->counts().liveMrs, 0u);
}

TEST(Ibverbs, RegistrationTheDeviceRefusesIsAReadableError) {
  FakeVerbs::Options o;
  o.maxRegisteredBytes = 1 << 20;
  ScopedFakeVerbs fake(o);
  std::shared_ptr<Device> d = openDevice();
  Registrations regs(d, {});
  std::vector<std::byte> big(4 << 20);
  Result<Registrations::Pin> p = regs.pin(big.data(), big.size());
  ASSERT_FALSE(p.hasValue());
  EXPECT_EQ(p.status().code(), ecclSystemError);
  EXPECT_NE(p.status().message().find("locked-memory"), std::string::npos) << p.status().message();
  EXPECT_EQ(regs.stats().entries, 0u);
}

}  // namespace
}  // namespace eccl::transport::ibverbs
