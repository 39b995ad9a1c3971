// The in-process verbs provider (support/fake_verbs.h) against the verbs
// semantics the RDMA transport relies on: queries, the RC state machine,
// writes and sends with their completions, keys, RNR, retry timeouts,
// completion channels, asynchronous events and every injectable fault.
// Every test ends with all objects freed (TearDown checks the live counts).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "support/fake_verbs.h"

namespace eccl::test {
namespace {

using namespace std::chrono_literals;
using Kind = FakeVerbs::Fault::Kind;
using Clock = std::chrono::steady_clock;

constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

// One end of a connection: a PD, one CQ for both queues, an RC QP and a
// registered 64 KiB buffer.
struct Side {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_cq* cq = nullptr;
  ibv_qp* qp = nullptr;
  std::vector<uint8_t> buf = std::vector<uint8_t>(64 << 10);
  ibv_mr* mr = nullptr;
  uint8_t* at(size_t offset) { return buf.data() + offset; }
  uint64_t addr(size_t offset = 0) { return reinterpret_cast<uintptr_t>(at(offset)); }
};

// A send WR; remote defaults to the peer's buffer at remoteOffset.
struct Wr {
  uint64_t id = 1;
  ibv_wr_opcode op = IBV_WR_RDMA_WRITE_WITH_IMM;
  size_t offset = 0;
  uint32_t len = 64;
  size_t remoteOffset = 0;
  uint32_t imm = 0;
  unsigned flags = IBV_SEND_SIGNALED;
  std::optional<uint32_t> lkey = std::nullopt, rkey = std::nullopt;
  std::optional<uint64_t> remoteAddr = std::nullopt;
};

class FakeVerbsTest : public ::testing::Test {
 protected:
  void SetUp() override { restart(FakeVerbs::Options{}); }

  void TearDown() override {
    for (ibv_context* c : contexts_) EXPECT_EQ(v.closeDevice(c), 0);
    const FakeVerbs::Counts c = fake_->counts();
    EXPECT_EQ(c.liveMrs, 0u);
    EXPECT_EQ(c.liveQps, 0u);
    EXPECT_EQ(c.liveCqs, 0u);
    EXPECT_EQ(c.livePds, 0u);
    EXPECT_EQ(c.liveChannels, 0u);
    EXPECT_EQ(c.liveContexts, 0u);
    EXPECT_EQ(c.regMrs, c.deregMrs);
  }

  void restart(FakeVerbs::Options options) {
    fake_.reset();  // one at a time
    fake_ = std::make_unique<FakeVerbs>(std::move(options));
    v = *fake_->api();
  }

  ibv_context* open(int device = 0) {
    int n = 0;
    ibv_device** list = v.getDeviceList(&n);
    EXPECT_LT(device, n);
    ibv_context* ctx = v.openDevice(list[device]);
    v.freeDeviceList(list);
    contexts_.push_back(ctx);
    return ctx;
  }

  Side side(ibv_context* ctx, int cqe = 1024, uint32_t maxSend = 256, uint32_t maxRecv = 256,
            ibv_comp_channel* channel = nullptr) {
    Side s;
    s.ctx = ctx;
    s.pd = v.allocPd(ctx);
    s.cq = v.createCq(ctx, cqe, &s, channel, 0);
    ibv_qp_init_attr attr{};
    attr.send_cq = attr.recv_cq = s.cq;
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = maxSend;
    attr.cap.max_recv_wr = maxRecv;
    attr.cap.max_send_sge = attr.cap.max_recv_sge = 4;
    attr.cap.max_inline_data = 64;
    s.qp = v.createQp(s.pd, &attr);
    s.mr = v.regMr(s.pd, s.buf.data(), s.buf.size(), kAccess);
    EXPECT_TRUE(s.pd && s.cq && s.qp && s.mr);
    return s;
  }

  void destroy(Side& s) {  // a QP destroyed already is left out
    if (s.qp) {
      EXPECT_EQ(v.destroyQp(s.qp), 0);
    }
    EXPECT_EQ(v.deregMr(s.mr), 0);
    EXPECT_EQ(v.destroyCq(s.cq), 0);
    EXPECT_EQ(v.deallocPd(s.pd), 0);
  }

  int init(ibv_qp* qp, uint8_t port = 1, int access = kAccess) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = port;
    a.qp_access_flags = access;
    return v.modifyQp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  }

  ibv_ah_attr addressOf(ibv_context* ctx, uint8_t port = 1) {
    ibv_port_attr pa{};
    EXPECT_EQ(v.queryPort(ctx, port, &pa), 0);
    ibv_ah_attr ah{};
    ah.port_num = port;
    if (pa.link_layer == IBV_LINK_LAYER_ETHERNET) {
      ah.is_global = 1;
      ah.grh.hop_limit = 1;
      EXPECT_EQ(v.queryGid(ctx, port, 0, &ah.grh.dgid), 0);
    } else {
      ah.dlid = pa.lid;
    }
    return ah;
  }

  int rtr(ibv_qp* qp, uint32_t destQpn, uint32_t rqPsn, const ibv_ah_attr& ah,
          ibv_mtu mtu = IBV_MTU_1024, int extraMask = 0) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = mtu;
    a.dest_qp_num = destQpn;
    a.rq_psn = rqPsn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr = ah;
    return v.modifyQp(qp, &a,
                      IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                          IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER | extraMask);
  }

  int rts(ibv_qp* qp, uint32_t sqPsn, uint8_t rnrRetry = 7) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 14;
    a.retry_cnt = 7;
    a.rnr_retry = rnrRetry;
    a.sq_psn = sqPsn;
    a.max_rd_atomic = 1;
    return v.modifyQp(qp, &a,
                      IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                          IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
  }

  int setState(ibv_qp* qp, ibv_qp_state state) {
    ibv_qp_attr a{};
    a.qp_state = state;
    return v.modifyQp(qp, &a, IBV_QP_STATE);
  }

  // a's sq_psn is 100 (b's rq_psn), b's is 200, unless `bRqPsn` says otherwise.
  void connect(Side& a, Side& b, uint8_t rnrRetry = 7, uint32_t bRqPsn = 100) {
    ASSERT_EQ(init(a.qp), 0);
    ASSERT_EQ(init(b.qp), 0);
    ASSERT_EQ(rtr(a.qp, b.qp->qp_num, 200, addressOf(b.ctx)), 0);
    ASSERT_EQ(rtr(b.qp, a.qp->qp_num, bRqPsn, addressOf(a.ctx)), 0);
    ASSERT_EQ(rts(a.qp, 100, rnrRetry), 0);
    ASSERT_EQ(rts(b.qp, 200, rnrRetry), 0);
  }

  int post(Side& from, Side& to, const Wr& w) {
    ibv_sge sge{from.addr(w.offset), w.len, w.lkey.value_or(from.mr->lkey)};
    ibv_send_wr wr{};
    wr.wr_id = w.id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = w.op;
    wr.send_flags = w.flags;
    wr.imm_data = htonl(w.imm);
    wr.wr.rdma.remote_addr = w.remoteAddr.value_or(to.addr(w.remoteOffset));
    wr.wr.rdma.rkey = w.rkey.value_or(to.mr->rkey);
    ibv_send_wr* bad = nullptr;
    const int rc = v.postSend(from.qp, &wr, &bad);
    EXPECT_EQ(bad, rc ? &wr : nullptr);
    return rc;
  }

  int postRecv(Side& s, uint64_t id, uint32_t len = 0, size_t offset = 0) {
    ibv_sge sge{s.addr(offset), len, s.mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = id;
    wr.sg_list = len ? &sge : nullptr;
    wr.num_sge = len ? 1 : 0;
    ibv_recv_wr* bad = nullptr;
    return v.postRecv(s.qp, &wr, &bad);
  }

  // Up to n completions, waiting at most `timeout` for them.
  std::vector<ibv_wc> poll(ibv_cq* cq, size_t n, std::chrono::milliseconds timeout = 2s) {
    std::vector<ibv_wc> out;
    const auto deadline = Clock::now() + timeout;
    while (out.size() < n) {
      ibv_wc wc[16];
      const int k = v.pollCq(cq, static_cast<int>(std::min<size_t>(16, n - out.size())), wc);
      EXPECT_GE(k, 0);
      out.insert(out.end(), wc, wc + std::max(k, 0));
      if (k > 0) continue;
      if (Clock::now() >= deadline) break;
      std::this_thread::sleep_for(1ms);
    }
    return out;
  }
  std::vector<ibv_wc> drain(ibv_cq* cq) { return poll(cq, 1 << 20, 0ms); }

  static bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }

  // The next asynchronous event of `ctx`, which must have one queued (if
  // not: a failure, and an event of no known type rather than a hang).
  ibv_async_event nextEvent(ibv_context* ctx) {
    ibv_async_event e{};
    e.event_type = static_cast<ibv_event_type>(99);
    if (!readable(ctx->async_fd)) {
      ADD_FAILURE() << "no asynchronous event queued";
      return e;
    }
    EXPECT_EQ(v.getAsyncEvent(ctx, &e), 0);
    return e;
  }

  std::unique_ptr<FakeVerbs> fake_;
  transport::ibverbs::Api v{};
  std::vector<ibv_context*> contexts_;
};

// ---- devices and ports ------------------------------------------------------------

TEST_F(FakeVerbsTest, DefaultDeviceAndItsPort) {
  int n = -1;
  ibv_device** list = v.getDeviceList(&n);
  ASSERT_EQ(n, 1);
  EXPECT_EQ(list[1], nullptr);
  EXPECT_STREQ(v.getDeviceName(list[0]), "fake_rdma0");
  EXPECT_STREQ(list[0]->name, "fake_rdma0");
  v.freeDeviceList(list);

  ibv_context* ctx = open();
  EXPECT_EQ(ctx->num_comp_vectors, 1);
  ibv_device_attr da{};
  ASSERT_EQ(v.queryDevice(ctx, &da), 0);
  EXPECT_EQ(da.phys_port_cnt, 1);
  EXPECT_EQ(da.max_qp_wr, 16384);
  EXPECT_EQ(da.max_sge, 30);
  EXPECT_EQ(da.max_qp_rd_atom, 16);
  EXPECT_EQ(da.max_mr_size, 1ULL << 40);

  ibv_port_attr pa{};
  ASSERT_EQ(v.queryPort(ctx, 1, &pa), 0);
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(pa.active_mtu, IBV_MTU_4096);
  EXPECT_EQ(pa.link_layer, IBV_LINK_LAYER_INFINIBAND);
  EXPECT_NE(pa.lid, 0);
  EXPECT_EQ(pa.gid_tbl_len, 4);
  EXPECT_EQ(v.queryPort(ctx, 0, &pa), EINVAL);
  EXPECT_EQ(v.queryPort(ctx, 2, &pa), EINVAL);

  ibv_gid gid{};
  ASSERT_EQ(v.queryGid(ctx, 1, 3, &gid), 0);
  EXPECT_EQ(gid.raw[0], 0xfe);
  EXPECT_EQ(v.queryGid(ctx, 1, 4, &gid), EINVAL);
  EXPECT_EQ(v.queryGid(ctx, 1, -1, &gid), EINVAL);
  EXPECT_EQ(v.queryGid(ctx, 2, 0, &gid), EINVAL);
  EXPECT_EQ(v.forkInit(), 0);
  EXPECT_EQ(fake_->counts().forkInits, 1u);
  EXPECT_STREQ(v.wcStatusStr(IBV_WC_RETRY_EXC_ERR), "transport retry counter exceeded");
  EXPECT_STREQ(v.wcStatusStr(IBV_WC_WR_FLUSH_ERR), "Work Request Flushed Error");
}

TEST_F(FakeVerbsTest, ConfiguredDevicesHaveUniqueAddresses) {
  FakeVerbs::Options o;
  o.devices = {{.name = "ib0", .ports = 2},
               {.name = "roce0", .linkLayer = IBV_LINK_LAYER_ETHERNET, .mtu = IBV_MTU_1024}};
  restart(o);
  int n = 0;
  ibv_device** list = v.getDeviceList(&n);
  ASSERT_EQ(n, 2);
  EXPECT_STREQ(v.getDeviceName(list[1]), "roce0");
  v.freeDeviceList(list);
  ibv_context* ib = open(0);
  ibv_context* roce = open(1);
  ibv_port_attr p1{}, p2{}, pr{};
  ASSERT_EQ(v.queryPort(ib, 1, &p1), 0);
  ASSERT_EQ(v.queryPort(ib, 2, &p2), 0);
  ASSERT_EQ(v.queryPort(roce, 1, &pr), 0);
  EXPECT_NE(p1.lid, 0);
  EXPECT_NE(p2.lid, 0);
  EXPECT_NE(p1.lid, p2.lid);
  EXPECT_EQ(pr.lid, 0);
  EXPECT_EQ(pr.link_layer, IBV_LINK_LAYER_ETHERNET);
  EXPECT_EQ(pr.active_mtu, IBV_MTU_1024);
  ibv_gid g1{}, g2{}, gr{};
  ASSERT_EQ(v.queryGid(ib, 1, 0, &g1), 0);
  ASSERT_EQ(v.queryGid(ib, 2, 0, &g2), 0);
  ASSERT_EQ(v.queryGid(roce, 1, 0, &gr), 0);
  EXPECT_NE(std::memcmp(g1.raw, g2.raw, 16), 0);
  EXPECT_NE(std::memcmp(g1.raw, gr.raw, 16), 0);
}

TEST_F(FakeVerbsTest, NoDevices) {
  FakeVerbs::Options o;
  o.devices.clear();
  restart(o);
  int n = -1;
  ibv_device** list = v.getDeviceList(&n);
  EXPECT_EQ(n, 0);
  EXPECT_EQ(list[0], nullptr);
  v.freeDeviceList(list);
}

// ---- objects ---------------------------------------------------------------------------

TEST_F(FakeVerbsTest, RegistrationChecksAndBusyParents) {
  FakeVerbs::Options o;
  o.maxRegisteredBytes = 8192;
  restart(o);
  ibv_context* ctx = open();
  ibv_pd* pd = v.allocPd(ctx);
  std::vector<uint8_t> mem(16384);
  errno = 0;
  EXPECT_EQ(v.regMr(pd, mem.data(), 0, kAccess), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(v.regMr(pd, nullptr, 64, kAccess), nullptr);
  EXPECT_EQ(v.regMr(pd, mem.data(), 64, IBV_ACCESS_REMOTE_WRITE), nullptr);  // needs LOCAL_WRITE
  EXPECT_EQ(v.regMr(pd, mem.data(), 16384, kAccess), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  ibv_mr* a = v.regMr(pd, mem.data(), 4096, kAccess);
  ibv_mr* b = v.regMr(pd, mem.data() + 4096, 4096, kAccess);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(v.regMr(pd, mem.data(), 1, kAccess), nullptr);  // the limit is reached
  EXPECT_EQ(a->addr, mem.data());
  EXPECT_EQ(a->length, 4096u);
  EXPECT_EQ(a->pd, pd);
  EXPECT_NE(a->lkey, 0u);
  EXPECT_NE(a->lkey, a->rkey);
  EXPECT_NE(a->lkey, b->lkey);
  EXPECT_NE(a->rkey, b->rkey);
  EXPECT_EQ(v.deallocPd(pd), EBUSY);     // MRs on it
  EXPECT_EQ(v.closeDevice(ctx), EBUSY);  // a PD on it
  EXPECT_EQ(v.deregMr(a), 0);
  EXPECT_EQ(v.deregMr(b), 0);

  ibv_comp_channel* ch = v.createCompChannel(ctx);
  ASSERT_NE(ch, nullptr);
  EXPECT_GE(ch->fd, 0);
  ibv_cq* cq = v.createCq(ctx, 16, nullptr, ch, 0);
  EXPECT_EQ(v.destroyCompChannel(ch), EBUSY);
  ibv_qp_init_attr attr{};
  attr.send_cq = attr.recv_cq = cq;
  attr.qp_type = IBV_QPT_UD;
  attr.cap = {.max_send_wr = 8,
              .max_recv_wr = 8,
              .max_send_sge = 1,
              .max_recv_sge = 1,
              .max_inline_data = 0};
  errno = 0;
  EXPECT_EQ(v.createQp(pd, &attr), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  attr.qp_type = IBV_QPT_RC;
  attr.cap.max_send_sge = 31;
  EXPECT_EQ(v.createQp(pd, &attr), nullptr);
  EXPECT_EQ(errno, EINVAL);
  attr.cap.max_send_sge = 1;
  attr.cap.max_inline_data = 257;
  EXPECT_EQ(v.createQp(pd, &attr), nullptr);
  attr.cap.max_inline_data = 0;
  ibv_qp* qp = v.createQp(pd, &attr);
  ASSERT_NE(qp, nullptr);
  EXPECT_EQ(v.deallocPd(pd), EBUSY);  // a QP on it
  EXPECT_EQ(v.destroyCq(cq), EBUSY);
  EXPECT_EQ(v.destroyQp(qp), 0);
  EXPECT_EQ(v.destroyCq(cq), 0);
  EXPECT_EQ(v.destroyCompChannel(ch), 0);
  EXPECT_EQ(v.deallocPd(pd), 0);
}

// Misuse a real provider would punish with a crash ends the process with a message.
TEST_F(FakeVerbsTest, MisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the timer thread is running
  EXPECT_DEATH({ FakeVerbs second; }, "a second FakeVerbs");
  ibv_context* ctx = open();
  Side a = side(ctx);
  ibv_qp* gone = a.qp;
  ASSERT_EQ(v.destroyQp(gone), 0);
  a.qp = nullptr;
  ibv_recv_wr wr{};
  ibv_recv_wr* bad = nullptr;
  EXPECT_DEATH(v.postRecv(gone, &wr, &bad), "postRecv: unknown or destroyed handle");
  destroy(a);
}

// ---- the RC state machine ------------------------------------------------------------

TEST_F(FakeVerbsTest, QpStateMachine) {
  FakeVerbs::Options o;
  o.devices[0].mtu = IBV_MTU_2048;
  restart(o);
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  EXPECT_EQ(a.qp->state, IBV_QPS_RESET);
  EXPECT_EQ(a.qp->qp_type, IBV_QPT_RC);
  EXPECT_NE(a.qp->qp_num, 0u);
  EXPECT_NE(a.qp->qp_num, b.qp->qp_num);
  EXPECT_LT(a.qp->qp_num, 1u << 24);
  EXPECT_EQ(postRecv(a, 1), EINVAL);  // RESET
  const ibv_ah_attr ah = addressOf(ctx);
  EXPECT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah), EINVAL);  // RESET -> RTR skips INIT
  EXPECT_EQ(setState(a.qp, IBV_QPS_INIT), EINVAL);    // masks missing
  EXPECT_EQ(init(a.qp, 2), EINVAL);                   // no port 2
  EXPECT_EQ(a.qp->state, IBV_QPS_RESET);
  ASSERT_EQ(init(a.qp), 0);
  EXPECT_EQ(a.qp->state, IBV_QPS_INIT);
  EXPECT_EQ(post(a, b, {}), EINVAL);  // INIT cannot send
  EXPECT_EQ(rts(a.qp, 0), EINVAL);    // INIT -> RTS skips RTR
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_RTR;
  attr.ah_attr = ah;
  attr.path_mtu = IBV_MTU_1024;
  EXPECT_EQ(v.modifyQp(a.qp, &attr, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU), EINVAL);
  EXPECT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah, IBV_MTU_1024, IBV_QP_SQ_PSN), EINVAL);  // not allowed
  EXPECT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah, IBV_MTU_4096), EINVAL);  // above the port's MTU
  EXPECT_EQ(a.qp->state, IBV_QPS_INIT);
  ASSERT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah, IBV_MTU_2048), 0);
  EXPECT_EQ(a.qp->state, IBV_QPS_RTR);
  EXPECT_EQ(post(a, b, {}), EINVAL);  // RTR cannot send either
  EXPECT_EQ(postRecv(a, 1), 0);       // but may receive
  attr = {};
  attr.qp_state = IBV_QPS_RTS;
  attr.sq_psn = 1;
  EXPECT_EQ(v.modifyQp(a.qp, &attr, IBV_QP_STATE | IBV_QP_SQ_PSN), EINVAL);
  ASSERT_EQ(rts(a.qp, 0), 0);
  EXPECT_EQ(a.qp->state, IBV_QPS_RTS);
  EXPECT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah), EINVAL);  // no way back but RESET/ERR
  ASSERT_EQ(setState(a.qp, IBV_QPS_ERR), 0);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  std::vector<ibv_wc> wc = drain(a.cq);  // the receive posted at RTR is flushed
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(rts(a.qp, 0), EINVAL);
  EXPECT_EQ(init(a.qp), EINVAL);
  ASSERT_EQ(setState(a.qp, IBV_QPS_RESET), 0);
  EXPECT_EQ(a.qp->state, IBV_QPS_RESET);
  EXPECT_EQ(init(a.qp), 0);  // usable again
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, RoceNeedsAGlobalAddress) {
  FakeVerbs::Options o;
  o.devices[0].linkLayer = IBV_LINK_LAYER_ETHERNET;
  restart(o);
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  ASSERT_EQ(init(a.qp), 0);
  ibv_ah_attr ah = addressOf(ctx);
  ah.is_global = 0;
  EXPECT_EQ(rtr(a.qp, b.qp->qp_num, 0, ah), EINVAL);
  ASSERT_EQ(setState(a.qp, IBV_QPS_RESET), 0);
  connect(a, b);
  ASSERT_EQ(postRecv(b, 5), 0);
  a.buf[0] = 42;
  ASSERT_EQ(post(a, b, {.len = 1}), 0);
  EXPECT_EQ(b.buf[0], 42);
  std::vector<ibv_wc> wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
  drain(a.cq);
  destroy(a);
  destroy(b);
}

// ---- data path ------------------------------------------------------------------------

TEST_F(FakeVerbsTest, WriteWithImmLandsAndCompletesOnBothSides) {
  ibv_context* ca = open();
  ibv_context* cb = open();
  Side a = side(ca), b = side(cb);
  connect(a, b);
  for (size_t i = 0; i < 4096; ++i) a.buf[i] = static_cast<uint8_t>(i * 7);
  ASSERT_EQ(postRecv(b, 77), 0);
  ASSERT_EQ(post(a, b, {.id = 5, .len = 4096, .remoteOffset = 8192, .imm = 0xabcd, .flags = 0}), 0);
  EXPECT_EQ(std::memcmp(a.at(0), b.at(8192), 4096), 0);
  std::vector<ibv_wc> wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc[0].opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_TRUE(wc[0].wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(ntohl(wc[0].imm_data), 0xabcdu);
  EXPECT_EQ(wc[0].byte_len, 4096u);
  EXPECT_EQ(wc[0].wr_id, 77u);
  EXPECT_EQ(wc[0].qp_num, b.qp->qp_num);
  EXPECT_EQ(wc[0].src_qp, a.qp->qp_num);
  EXPECT_TRUE(drain(a.cq).empty());  // unsignaled

  ASSERT_EQ(post(a, b, {.id = 6, .op = IBV_WR_RDMA_WRITE, .len = 16}), 0);  // signaled, no imm
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc[0].opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(wc[0].wr_id, 6u);
  EXPECT_EQ(wc[0].qp_num, a.qp->qp_num);
  EXPECT_TRUE(drain(b.cq).empty());  // a plain write consumes nothing
  const FakeVerbs::Counts c = fake_->counts();
  EXPECT_EQ(c.writes, 2u);
  EXPECT_EQ(c.bytesWritten, 4096u + 16u);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, SendsScatterIntoTheReceive) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  // SEND_WITH_IMM of nothing, into a receive with no buffer.
  ASSERT_EQ(postRecv(b, 1), 0);
  ibv_send_wr wr{};
  wr.wr_id = 9;
  wr.opcode = IBV_WR_SEND_WITH_IMM;
  wr.imm_data = htonl(3);
  wr.send_flags = IBV_SEND_SIGNALED;
  ibv_send_wr* bad = nullptr;
  ASSERT_EQ(v.postSend(a.qp, &wr, &bad), 0);
  std::vector<ibv_wc> wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].opcode, IBV_WC_RECV);
  EXPECT_TRUE(wc[0].wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(ntohl(wc[0].imm_data), 3u);
  EXPECT_EQ(wc[0].byte_len, 0u);
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].opcode, IBV_WC_SEND);
  EXPECT_EQ(wc[0].wr_id, 9u);

  // A SEND inline from a buffer reused at once, into a receive of two sges.
  uint8_t scratch[32];
  for (int i = 0; i < 32; ++i) scratch[i] = static_cast<uint8_t>(100 + i);
  ibv_sge rsge[2] = {{b.addr(0), 10, b.mr->lkey}, {b.addr(1000), 100, b.mr->lkey}};
  ibv_recv_wr rwr{};
  rwr.wr_id = 2;
  rwr.sg_list = rsge;
  rwr.num_sge = 2;
  ibv_recv_wr* rbad = nullptr;
  ASSERT_EQ(v.postRecv(b.qp, &rwr, &rbad), 0);
  ibv_sge sge{reinterpret_cast<uintptr_t>(scratch), 32, 0 /* inline: lkey unused */};
  wr = {};
  wr.opcode = IBV_WR_SEND;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_INLINE;
  ASSERT_EQ(v.postSend(a.qp, &wr, &bad), 0);
  std::memset(scratch, 0, sizeof scratch);
  EXPECT_EQ(b.buf[0], 100);
  EXPECT_EQ(b.buf[9], 109);
  EXPECT_EQ(b.buf[1000], 110);
  EXPECT_EQ(b.buf[1021], 131);
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].byte_len, 32u);
  EXPECT_EQ(wc[0].wc_flags, 0u);
  // Inline above the QP's max_inline_data (64) is refused at post time.
  sge.length = 65;
  EXPECT_EQ(v.postSend(a.qp, &wr, &bad), EINVAL);
  EXPECT_EQ(bad, &wr);

  // A receive too small: LOC_LEN_ERR there, REM_INV_REQ_ERR here, both ERR.
  ASSERT_EQ(postRecv(b, 3, 8), 0);
  ASSERT_EQ(postRecv(b, 4, 8), 0);
  ASSERT_EQ(post(a, b, {.id = 10, .op = IBV_WR_SEND, .len = 16}), 0);
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 2u);
  EXPECT_EQ(wc[0].status, IBV_WC_LOC_LEN_ERR);
  EXPECT_EQ(wc[0].wr_id, 3u);
  EXPECT_EQ(wc[1].status, IBV_WC_WR_FLUSH_ERR);
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_REM_INV_REQ_ERR);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_ERR);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, ManyWrsDeliverAndCompleteInPostOrder) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  constexpr int kN = 200;
  for (int i = 0; i < kN; ++i) ASSERT_EQ(postRecv(b, 1000 + i), 0);
  // One list of kN WRs, each writing its index to the same word.
  std::vector<ibv_sge> sges(kN);
  std::vector<ibv_send_wr> wrs(kN);
  for (int i = 0; i < kN; ++i) {
    std::memcpy(a.at(4 * i), &i, 4);
    sges[i] = {a.addr(4 * i), 4, a.mr->lkey};
    wrs[i].wr_id = i;
    wrs[i].sg_list = &sges[i];
    wrs[i].num_sge = 1;
    wrs[i].opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wrs[i].imm_data = htonl(i);
    wrs[i].send_flags = i % 3 == 0 ? IBV_SEND_SIGNALED : 0;
    wrs[i].wr.rdma.remote_addr = b.addr(0);
    wrs[i].wr.rdma.rkey = b.mr->rkey;
    wrs[i].next = i + 1 < kN ? &wrs[i + 1] : nullptr;
  }
  ibv_send_wr* bad = nullptr;
  ASSERT_EQ(v.postSend(a.qp, wrs.data(), &bad), 0);
  int last;
  std::memcpy(&last, b.at(0), 4);
  EXPECT_EQ(last, kN - 1);
  std::vector<ibv_wc> wc = drain(b.cq);
  ASSERT_EQ(wc.size(), size_t{kN});
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(ntohl(wc[i].imm_data), static_cast<uint32_t>(i));
    EXPECT_EQ(wc[i].wr_id, 1000u + i);
  }
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), size_t{(kN + 2) / 3});
  for (size_t i = 0; i < wc.size(); ++i) EXPECT_EQ(wc[i].wr_id, 3 * i);
  destroy(a);
  destroy(b);
}

// A WR holds its send-queue slot until a completion of it or of a later WR
// is polled: a sender that never signals runs out of slots.
TEST_F(FakeVerbsTest, UnsignaledWrsFillTheSendQueue) {
  ibv_context* ctx = open();
  Side a = side(ctx, 64, 4, 4), b = side(ctx, 64, 4, 4);
  connect(a, b);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE, .flags = 0}), 0);
  EXPECT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE, .flags = 0}), ENOMEM);
  // Receives likewise: four outstanding, the fifth is refused.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(postRecv(b, i), 0);
  ibv_recv_wr rwr{};
  ibv_recv_wr* rbad = nullptr;
  EXPECT_EQ(v.postRecv(b.qp, &rwr, &rbad), ENOMEM);
  EXPECT_EQ(rbad, &rwr);

  ASSERT_EQ(setState(a.qp, IBV_QPS_RESET), 0);  // slots back; reconnect
  ASSERT_EQ(init(a.qp), 0);
  ASSERT_EQ(rtr(a.qp, b.qp->qp_num, 200, addressOf(ctx)), 0);
  ASSERT_EQ(rts(a.qp, 100), 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE, .flags = 0}), 0);
  ASSERT_EQ(post(a, b, {.id = 9, .op = IBV_WR_RDMA_WRITE}), 0);
  EXPECT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE}), ENOMEM);
  ASSERT_EQ(poll(a.cq, 1).size(), 1u);  // frees all four
  for (int i = 0; i < 4; ++i) EXPECT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE, .flags = 0}), 0);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, CqOverrunMovesItsQpsToError) {
  ibv_context* ctx = open();
  Side a = side(ctx, 4), b = side(ctx);
  connect(a, b);
  EXPECT_FALSE(readable(ctx->async_fd));
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(post(a, b, {.id = uint64_t(i), .op = IBV_WR_RDMA_WRITE}), 0);
  EXPECT_EQ(fake_->counts().cqOverruns, 1u);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(drain(a.cq).size(), 4u);  // what fit; later completions are lost

  // The overrun raises IBV_EVENT_CQ_ERR on the CQ's context, once.
  ibv_async_event e = nextEvent(ctx);
  EXPECT_EQ(e.event_type, IBV_EVENT_CQ_ERR);
  EXPECT_EQ(e.element.cq, a.cq);
  EXPECT_FALSE(readable(ctx->async_fd));
  ASSERT_EQ(v.destroyQp(a.qp), 0);
  a.qp = nullptr;
  v.ackAsyncEvent(&e);  // else destroyCq would wait for it (see AsyncEventMisuseAborts)

  // Injected: b's CQ overruns as if one completion too many arrived.
  ASSERT_EQ(postRecv(b, 1), 0);
  fake_->injectAsyncEvent(IBV_EVENT_CQ_ERR, b.qp->qp_num);
  EXPECT_EQ(b.qp->state, IBV_QPS_ERR);
  EXPECT_TRUE(drain(b.cq).empty());  // the flush was lost with the CQ
  EXPECT_TRUE(readable(ctx->async_fd));
  const FakeVerbs::Counts c = fake_->counts();
  EXPECT_EQ(c.cqOverruns, 2u);
  EXPECT_EQ(c.asyncEvents, 2u);
  EXPECT_EQ(c.asyncEventsRead, 1u);
  EXPECT_EQ(c.asyncAcks, 1u);
  destroy(a);
  destroy(b);  // its CQ_ERR, never read, is discarded with the CQ
  EXPECT_FALSE(readable(ctx->async_fd));
}

// ---- completion channels ------------------------------------------------------------

TEST_F(FakeVerbsTest, CompletionEvents) {
  ibv_context* ctx = open();
  ibv_comp_channel* ch = v.createCompChannel(ctx);
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(ch->context, ctx);
  Side a = side(ctx), b = side(ctx, 64, 16, 16, ch);
  EXPECT_EQ(b.cq->channel, ch);
  EXPECT_EQ(b.cq->cq_context, &b);
  connect(a, b);
  auto readable = [&] {
    pollfd p{ch->fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  };
  for (int i = 0; i < 4; ++i) ASSERT_EQ(postRecv(b, i), 0);

  // A completion queued before arming raises nothing: the user polls after arming.
  ASSERT_EQ(post(a, b, {.flags = 0}), 0);
  ASSERT_EQ(v.reqNotifyCq(b.cq, 0), 0);
  EXPECT_FALSE(readable());
  EXPECT_EQ(drain(b.cq).size(), 1u);

  // A new one does, once.
  ASSERT_EQ(post(a, b, {.flags = 0}), 0);
  EXPECT_TRUE(readable());
  ASSERT_EQ(post(a, b, {.flags = 0}), 0);  // not armed any more
  ibv_cq* cq = nullptr;
  void* cqContext = nullptr;
  ASSERT_EQ(v.getCqEvent(ch, &cq, &cqContext), 0);
  EXPECT_EQ(cq, b.cq);
  EXPECT_EQ(cqContext, &b);
  EXPECT_FALSE(readable());
  EXPECT_EQ(drain(b.cq).size(), 2u);
  EXPECT_EQ(v.destroyCq(b.cq), EBUSY);  // qp still there
  // Without O_NONBLOCK getCqEvent waits; with it, EAGAIN.
  const int flags = ::fcntl(ch->fd, F_GETFL);
  ASSERT_EQ(::fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(v.getCqEvent(ch, &cq, &cqContext), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::fcntl(ch->fd, F_SETFL, flags), 0);

  ASSERT_EQ(v.reqNotifyCq(b.cq, 0), 0);
  std::thread waiter([&] {
    ibv_cq* got = nullptr;
    void* gotContext = nullptr;
    EXPECT_EQ(v.getCqEvent(ch, &got, &gotContext), 0);
    EXPECT_EQ(got, b.cq);
  });
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(post(a, b, {.flags = 0}), 0);
  waiter.join();
  EXPECT_EQ(drain(b.cq).size(), 1u);

  destroy(a);
  ASSERT_EQ(v.destroyQp(b.qp), 0);
  EXPECT_EQ(v.destroyCq(b.cq), EBUSY);  // two events read, none acked
  v.ackCqEvents(b.cq, 2);
  ASSERT_EQ(v.deregMr(b.mr), 0);
  ASSERT_EQ(v.destroyCq(b.cq), 0);
  ASSERT_EQ(v.deallocPd(b.pd), 0);
  ASSERT_EQ(v.destroyCompChannel(ch), 0);
}

// A sender thread against an event-driven receiver (arm, poll, then wait),
// with a slow WR in the middle so the timer thread delivers part of it.
TEST_F(FakeVerbsTest, ConcurrentSenderAndEventDrivenReceiver) {
  ibv_context* ctx = open();
  ibv_comp_channel* ch = v.createCompChannel(ctx);
  Side a = side(ctx, 1024, 64, 64), b = side(ctx, 4096, 64, 4096, ch);
  connect(a, b);
  constexpr int kN = 2000;
  fake_->inject({.kind = Kind::kSlowCompletion, .afterPosts = kN / 2, .delay = 10ms});
  for (int i = 0; i < kN; ++i) ASSERT_EQ(postRecv(b, i), 0);
  std::thread sender([&] {
    for (int i = 0; i < kN;) {
      const unsigned flags = i % 16 == 15 ? IBV_SEND_SIGNALED : 0;
      const int rc = post(a, b, {.id = uint64_t(i), .imm = uint32_t(i), .flags = flags});
      if (rc == ENOMEM) {  // every slot taken: reap signaled completions
        for (const ibv_wc& wc : drain(a.cq)) EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
        std::this_thread::yield();
        continue;
      }
      ASSERT_EQ(rc, 0);
      ++i;
    }
  });
  uint32_t next = 0;
  unsigned events = 0;
  while (next < kN) {
    std::vector<ibv_wc> wc = drain(b.cq);
    if (wc.empty()) {
      ASSERT_EQ(v.reqNotifyCq(b.cq, 0), 0);
      wc = drain(b.cq);  // what came before arming raises no event
    }
    if (wc.empty()) {
      pollfd p{ch->fd, POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no event after " << next << " completions";
      ibv_cq* cq = nullptr;
      void* cqContext = nullptr;
      ASSERT_EQ(v.getCqEvent(ch, &cq, &cqContext), 0);
      ++events;
    }
    for (const ibv_wc& w : wc) {
      EXPECT_EQ(w.status, IBV_WC_SUCCESS);
      EXPECT_EQ(ntohl(w.imm_data), next++);
    }
  }
  sender.join();
  EXPECT_EQ(fake_->fired(Kind::kSlowCompletion), 1u);
  EXPECT_GT(events, 0u);
  v.ackCqEvents(b.cq, events);
  drain(a.cq);
  destroy(a);
  destroy(b);  // an event raised but never read is discarded
  ASSERT_EQ(v.destroyCompChannel(ch), 0);
}

// ---- errors ---------------------------------------------------------------------------

TEST_F(FakeVerbsTest, RemoteAccessViolations) {
  ibv_context* ctx = open();
  struct Case {
    const char* what;
    Wr wr;
  };
  Side probe = side(ctx);
  const uint32_t wrongKey = probe.mr->lkey;
  destroy(probe);
  const Case cases[] = {
      {"wrong rkey", {.rkey = wrongKey}},
      {"past the end", {.len = 64, .remoteOffset = (64 << 10) - 63}},
      {"below the start", {.remoteAddr = 0x1000}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Side a = side(ctx), b = side(ctx);
    connect(a, b);
    ASSERT_EQ(postRecv(b, 1), 0);
    ASSERT_EQ(postRecv(b, 2), 0);
    b.buf[0] = 0;
    a.buf[0] = 1;
    ASSERT_EQ(post(a, b, c.wr), 0);
    std::vector<ibv_wc> wc = drain(a.cq);
    ASSERT_EQ(wc.size(), 1u);
    EXPECT_EQ(wc[0].status, IBV_WC_REM_ACCESS_ERR);
    EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
    EXPECT_EQ(b.qp->state, IBV_QPS_ERR);
    wc = drain(b.cq);  // both receives flushed, none consumed
    ASSERT_EQ(wc.size(), 2u);
    EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
    EXPECT_EQ(wc[1].wr_id, 2u);
    EXPECT_EQ(b.buf[0], 0);
    destroy(a);
    destroy(b);
  }
  // An MR without REMOTE_WRITE.
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  std::vector<uint8_t> mem(64);
  ibv_mr* readOnly = v.regMr(b.pd, mem.data(), mem.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_EQ(post(a, b,
                 {.op = IBV_WR_RDMA_WRITE,
                  .len = 8,
                  .rkey = readOnly->rkey,
                  .remoteAddr = reinterpret_cast<uintptr_t>(mem.data())}),
            0);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_REM_ACCESS_ERR);
  ASSERT_EQ(v.deregMr(readOnly), 0);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, LocalProtectionError) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  ASSERT_EQ(postRecv(a, 1), 0);
  ASSERT_EQ(post(a, b, {.id = 4, .lkey = a.mr->rkey}), 0);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 2u);
  EXPECT_EQ(wc[0].status, IBV_WC_LOC_PROT_ERR);
  EXPECT_EQ(wc[0].wr_id, 4u);
  EXPECT_EQ(wc[1].status, IBV_WC_WR_FLUSH_ERR);  // a's own receive
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_RTS);  // nothing reached b
  // In ERR every WR flushes, signaled or not.
  ASSERT_EQ(post(a, b, {.id = 5, .flags = 0}), 0);
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc[0].wr_id, 5u);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, NoReceiveWaitsWithInfiniteRnrRetry) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b, 7);
  ASSERT_EQ(post(a, b, {.id = 1, .imm = 1}), 0);
  ASSERT_EQ(post(a, b, {.id = 2, .op = IBV_WR_RDMA_WRITE}), 0);  // ordered behind it
  std::this_thread::sleep_for(30ms);
  EXPECT_TRUE(drain(a.cq).empty());
  EXPECT_TRUE(drain(b.cq).empty());
  ASSERT_EQ(postRecv(b, 9), 0);
  std::vector<ibv_wc> wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].wr_id, 9u);
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 2u);
  EXPECT_EQ(wc[0].wr_id, 1u);
  EXPECT_EQ(wc[1].wr_id, 2u);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, NoReceiveFailsWithFiniteRnrRetry) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b, 0);
  ASSERT_EQ(post(a, b, {.id = 1, .flags = 0}), 0);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);  // errors complete even unsignaled
  EXPECT_EQ(wc[0].status, IBV_WC_RNR_RETRY_EXC_ERR);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_RTS);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, UnreachablePeerTimesOut) {
  ibv_context* ctx = open();
  {
    SCOPED_TRACE("destroyed peer");
    Side a = side(ctx), b = side(ctx);
    connect(a, b);
    ASSERT_EQ(v.destroyQp(b.qp), 0);
    b.qp = nullptr;
    const auto start = Clock::now();
    ASSERT_EQ(post(a, b, {.id = 3}), 0);
    std::vector<ibv_wc> wc = poll(a.cq, 1);
    ASSERT_EQ(wc.size(), 1u);
    EXPECT_GE(Clock::now() - start, 20ms);
    EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
    EXPECT_EQ(wc[0].wr_id, 3u);
    EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
    destroy(a);
    destroy(b);
  }
  {
    SCOPED_TRACE("PSN mismatch");
    Side a = side(ctx), b = side(ctx);
    connect(a, b, 7, /*bRqPsn=*/101);
    ASSERT_EQ(postRecv(b, 1), 0);
    ASSERT_EQ(post(a, b, {}), 0);
    std::vector<ibv_wc> wc = poll(a.cq, 1);
    ASSERT_EQ(wc.size(), 1u);
    EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
    EXPECT_EQ(b.qp->state, IBV_QPS_RTS);
    EXPECT_TRUE(drain(b.cq).empty());
    destroy(a);
    destroy(b);
  }
  {
    SCOPED_TRACE("wrong dlid");
    Side a = side(ctx), b = side(ctx);
    ASSERT_EQ(init(a.qp), 0);
    ASSERT_EQ(init(b.qp), 0);
    ibv_ah_attr wrong = addressOf(ctx);
    wrong.dlid += 1;
    ASSERT_EQ(rtr(a.qp, b.qp->qp_num, 0, wrong), 0);
    ASSERT_EQ(rtr(b.qp, a.qp->qp_num, 0, addressOf(ctx)), 0);
    ASSERT_EQ(rts(a.qp, 0), 0);
    ASSERT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE}), 0);
    std::vector<ibv_wc> wc = poll(a.cq, 1);
    ASSERT_EQ(wc.size(), 1u);
    EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
    destroy(a);
    destroy(b);
  }
}

// A peer that reaches RTR within the retry window still gets the WR.
TEST_F(FakeVerbsTest, PeerReadyWithinTheRetryWindow) {
  FakeVerbs::Options o;
  o.transportTimeout = 2000ms;
  restart(o);
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  ASSERT_EQ(init(a.qp), 0);
  ASSERT_EQ(init(b.qp), 0);
  ASSERT_EQ(rtr(a.qp, b.qp->qp_num, 0, addressOf(ctx)), 0);
  ASSERT_EQ(rts(a.qp, 5), 0);
  ASSERT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE}), 0);  // b still in INIT
  EXPECT_TRUE(drain(a.cq).empty());
  ASSERT_EQ(rtr(b.qp, a.qp->qp_num, 5, addressOf(ctx)), 0);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
  destroy(a);
  destroy(b);
}

// ---- asynchronous events -------------------------------------------------------------

TEST_F(FakeVerbsTest, AsyncEventTypeNames) {
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_CQ_ERR), "CQ error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_QP_FATAL), "local work queue catastrophic error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_QP_REQ_ERR), "invalid request local work queue error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_QP_ACCESS_ERR),
               "local access violation work queue error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_DEVICE_FATAL), "local catastrophic error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_PORT_ACTIVE), "port active");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_PORT_ERR), "port error");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_GID_CHANGE), "GID table change");
  EXPECT_STREQ(v.eventTypeStr(IBV_EVENT_WQ_FATAL), "WQ fatal");
  EXPECT_STREQ(v.eventTypeStr(static_cast<ibv_event_type>(99)), "unknown");
}

TEST_F(FakeVerbsTest, AsyncFdReadableOnlyWhileAnEventIsQueued) {
  ibv_context* ctx = open();
  const int fd = ctx->async_fd;
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ctx->cmd_fd, -1);
  EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
  const int flags = ::fcntl(fd, F_GETFL);
  EXPECT_FALSE(flags & O_NONBLOCK);  // blocking, like the real one
  EXPECT_FALSE(readable(fd));

  fake_->injectAsyncEvent(IBV_EVENT_PORT_ERR);
  fake_->injectAsyncEvent(IBV_EVENT_PORT_ACTIVE);
  EXPECT_TRUE(readable(fd));
  ibv_async_event e{};
  ASSERT_EQ(v.getAsyncEvent(ctx, &e), 0);  // the oldest first
  EXPECT_EQ(e.event_type, IBV_EVENT_PORT_ERR);
  EXPECT_EQ(e.element.port_num, 1);
  v.ackAsyncEvent(&e);
  EXPECT_TRUE(readable(fd));  // one left
  ASSERT_EQ(v.getAsyncEvent(ctx, &e), 0);
  EXPECT_EQ(e.event_type, IBV_EVENT_PORT_ACTIVE);
  v.ackAsyncEvent(&e);
  EXPECT_FALSE(readable(fd));

  // With O_NONBLOCK an empty queue gives EAGAIN; without it getAsyncEvent waits.
  ASSERT_EQ(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(v.getAsyncEvent(ctx, &e), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::fcntl(fd, F_SETFL, flags), 0);
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    ibv_async_event w{};
    EXPECT_EQ(v.getAsyncEvent(ctx, &w), 0);
    EXPECT_EQ(w.event_type, IBV_EVENT_LID_CHANGE);
    got = true;
    v.ackAsyncEvent(&w);
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(got.load());
  fake_->injectAsyncEvent(IBV_EVENT_LID_CHANGE);
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_FALSE(readable(fd));
  const FakeVerbs::Counts c = fake_->counts();
  EXPECT_EQ(c.asyncEvents, 3u);
  EXPECT_EQ(c.asyncEventsRead, 3u);
  EXPECT_EQ(c.asyncAcks, 3u);
}

TEST_F(FakeVerbsTest, QpFatalMovesTheQpToErrorAndFlushes) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(postRecv(a, 10 + i), 0);
  fake_->injectAsyncEvent(IBV_EVENT_QP_FATAL, a.qp->qp_num);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_RTS);  // the peer is not told
  std::vector<ibv_wc> wc = drain(a.cq);  // flushed before the event could be read
  ASSERT_EQ(wc.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(wc[i].wr_id, 10 + i);
    EXPECT_EQ(wc[i].status, IBV_WC_WR_FLUSH_ERR);
  }
  ibv_async_event e = nextEvent(ctx);
  EXPECT_EQ(e.event_type, IBV_EVENT_QP_FATAL);
  EXPECT_EQ(e.element.qp, a.qp);
  EXPECT_STREQ(v.eventTypeStr(e.event_type), "local work queue catastrophic error");
  EXPECT_FALSE(readable(ctx->async_fd));
  // As in libibverbs, destroying the QP waits until its event is acked.
  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    EXPECT_EQ(v.destroyQp(a.qp), 0);
    destroyed = true;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(destroyed.load());
  v.ackAsyncEvent(&e);
  destroyer.join();
  EXPECT_TRUE(destroyed.load());
  a.qp = nullptr;

  // A QP event that is no error leaves the state alone.
  fake_->injectAsyncEvent(IBV_EVENT_COMM_EST, b.qp->qp_num);
  EXPECT_EQ(b.qp->state, IBV_QPS_RTS);
  e = nextEvent(ctx);
  EXPECT_EQ(e.event_type, IBV_EVENT_COMM_EST);
  EXPECT_EQ(e.element.qp, b.qp);
  v.ackAsyncEvent(&e);
  // REQ_ERR and ACCESS_ERR move it to ERR too; left unread, they go with the QP.
  ASSERT_EQ(postRecv(b, 20), 0);
  fake_->injectAsyncEvent(IBV_EVENT_QP_REQ_ERR, b.qp->qp_num);
  EXPECT_EQ(b.qp->state, IBV_QPS_ERR);
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].wr_id, 20u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  fake_->injectAsyncEvent(IBV_EVENT_QP_ACCESS_ERR, b.qp->qp_num);
  EXPECT_TRUE(readable(ctx->async_fd));
  destroy(a);
  destroy(b);
  EXPECT_FALSE(readable(ctx->async_fd));
  const FakeVerbs::Counts c = fake_->counts();
  EXPECT_EQ(c.asyncEvents, 4u);
  EXPECT_EQ(c.asyncEventsRead, 2u);
  EXPECT_EQ(c.asyncAcks, 2u);
}

TEST_F(FakeVerbsTest, PortAndDeviceEventsReachOpenContexts) {
  FakeVerbs::Options o;
  o.devices = {{.name = "ib0", .ports = 2}, {.name = "ib1"}};
  restart(o);
  ibv_context* x = open(0);
  ibv_context* y = open(0);
  ibv_context* z = open(1);
  Side a = side(x), b = side(z);
  connect(a, b);
  ASSERT_EQ(postRecv(a, 1), 0);
  ASSERT_EQ(postRecv(b, 2), 0);

  // Port 2: only the contexts of a device that has one.
  fake_->injectAsyncEvent(IBV_EVENT_PORT_ERR, 0, 2);
  EXPECT_TRUE(readable(x->async_fd));
  EXPECT_TRUE(readable(y->async_fd));
  EXPECT_FALSE(readable(z->async_fd));
  EXPECT_EQ(a.qp->state, IBV_QPS_RTS);  // the event only
  ibv_async_event e = nextEvent(y);
  EXPECT_EQ(e.event_type, IBV_EVENT_PORT_ERR);
  EXPECT_EQ(e.element.port_num, 2);
  v.ackAsyncEvent(&e);
  EXPECT_FALSE(readable(y->async_fd));

  // Device fatal: every open context, and every QP goes to ERR first.
  fake_->injectAsyncEvent(IBV_EVENT_DEVICE_FATAL);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_ERR);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].wr_id, 2u);
  e = nextEvent(x);  // its port error came first
  EXPECT_EQ(e.event_type, IBV_EVENT_PORT_ERR);
  v.ackAsyncEvent(&e);
  for (ibv_context* ctx : {x, y, z}) {
    e = nextEvent(ctx);
    EXPECT_EQ(e.event_type, IBV_EVENT_DEVICE_FATAL);
    EXPECT_STREQ(v.eventTypeStr(e.event_type), "local catastrophic error");
    v.ackAsyncEvent(&e);
    EXPECT_FALSE(readable(ctx->async_fd));
  }
  // Port and device events need no ack to close; unread ones go with the context.
  fake_->injectAsyncEvent(IBV_EVENT_PORT_ERR);
  const FakeVerbs::Counts c = fake_->counts();
  EXPECT_EQ(c.asyncEvents, 2u + 3u + 3u);
  EXPECT_EQ(c.asyncEventsRead, 5u);
  EXPECT_EQ(c.asyncAcks, 5u);
  destroy(a);
  destroy(b);
  EXPECT_TRUE(readable(z->async_fd));
}

TEST_F(FakeVerbsTest, AsyncEventMisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the timer thread is running
  FakeVerbs::Options o;
  o.asyncAckTimeout = 50ms;
  restart(o);
  ibv_context* ctx = open();
  Side a = side(ctx);
  EXPECT_DEATH(fake_->injectAsyncEvent(IBV_EVENT_QP_FATAL, 0), "no QP number 0");
  EXPECT_DEATH(fake_->injectAsyncEvent(IBV_EVENT_PORT_ERR, 0, 2), "no device has port 2");
  EXPECT_DEATH(fake_->injectAsyncEvent(IBV_EVENT_SRQ_ERR), "no SRQs");
  // An event read and never acked: the destroy gives up instead of hanging.
  fake_->injectAsyncEvent(IBV_EVENT_SQ_DRAINED, a.qp->qp_num);
  ibv_async_event e = nextEvent(ctx);
  EXPECT_DEATH(v.destroyQp(a.qp), "destroyQp: an asynchronous event read from it was not acked");
  v.ackAsyncEvent(&e);
  EXPECT_DEATH(v.ackAsyncEvent(&e), "has no event read and not acked");
  fake_->injectAsyncEvent(IBV_EVENT_CQ_ERR, a.qp->qp_num);
  ibv_async_event c = nextEvent(ctx);
  EXPECT_EQ(c.element.cq, a.cq);
  ASSERT_EQ(v.destroyQp(a.qp), 0);
  a.qp = nullptr;
  EXPECT_DEATH(v.destroyCq(a.cq), "destroyCq: an asynchronous event read from it was not acked");
  v.ackAsyncEvent(&c);
  destroy(a);
}

// ---- injected faults -----------------------------------------------------------------

TEST_F(FakeVerbsTest, FaultQpError) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  fake_->inject({.kind = Kind::kQpError, .afterPosts = 2});
  ASSERT_EQ(postRecv(a, 50), 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(postRecv(b, 60 + i), 0);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_EQ(post(a, b, {.id = i, .flags = 0}), 0);
  EXPECT_EQ(fake_->fired(Kind::kQpError), 1u);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  std::vector<ibv_wc> wc = drain(a.cq);  // a's receive, then WRs 1 and 2
  ASSERT_EQ(wc.size(), 3u);
  EXPECT_EQ(wc[0].wr_id, 50u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc[1].wr_id, 1u);
  EXPECT_EQ(wc[1].status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc[2].wr_id, 2u);
  EXPECT_EQ(drain(b.cq).size(), 1u);  // WR 0 got through
  EXPECT_EQ(b.qp->state, IBV_QPS_RTS);
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, FaultErrorCompletion) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  // A SEND fault does not fire on writes; this one fires on a's first write.
  fake_->inject({.kind = Kind::kErrorCompletion, .opcode = IBV_WR_SEND});
  fake_->inject({.kind = Kind::kErrorCompletion,
                 .status = IBV_WC_REM_ACCESS_ERR,
                 .qpNum = a.qp->qp_num,
                 .anyOpcode = true});
  ASSERT_EQ(postRecv(b, 7), 0);
  ASSERT_EQ(post(b, a, {.op = IBV_WR_RDMA_WRITE, .flags = 0}), 0);  // other QP: no fire
  b.buf[0] = 0;
  a.buf[0] = 1;
  ASSERT_EQ(post(a, b, {.id = 8, .flags = 0}), 0);
  EXPECT_EQ(fake_->fired(Kind::kErrorCompletion), 1u);
  EXPECT_EQ(b.buf[0], 0);  // not delivered
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_REM_ACCESS_ERR);
  EXPECT_EQ(wc[0].wr_id, 8u);
  EXPECT_EQ(a.qp->state, IBV_QPS_ERR);
  EXPECT_EQ(b.qp->state, IBV_QPS_ERR);  // a remote error takes the peer down too
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].wr_id, 7u);
  EXPECT_EQ(wc[0].status, IBV_WC_WR_FLUSH_ERR);
  fake_->clearFaults();
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, FaultLostCompletion) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  fake_->inject({.kind = Kind::kLostCompletion, .afterPosts = 2});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(postRecv(b, i), 0);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_EQ(post(a, b, {.id = i}), 0);
  EXPECT_EQ(fake_->fired(Kind::kLostCompletion), 1u);
  std::this_thread::sleep_for(30ms);
  std::vector<ibv_wc> wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 1u);  // only WR 0
  EXPECT_EQ(wc[0].wr_id, 0u);
  EXPECT_EQ(drain(b.cq).size(), 1u);
  EXPECT_EQ(a.qp->state, IBV_QPS_RTS);  // a black hole, not an error
  // Giving up on it (ERR) flushes what vanished, so it can be accounted for.
  ASSERT_EQ(setState(a.qp, IBV_QPS_ERR), 0);
  wc = drain(a.cq);
  ASSERT_EQ(wc.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(wc[i].wr_id, i + 1);
    EXPECT_EQ(wc[i].status, IBV_WC_WR_FLUSH_ERR);
  }
  destroy(a);
  destroy(b);
}

TEST_F(FakeVerbsTest, FaultSlowCompletionKeepsOrder) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  // Long enough that the checks before it runs cannot lose the race on a loaded machine.
  fake_->inject({.kind = Kind::kSlowCompletion, .afterPosts = 2, .delay = 200ms});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(postRecv(b, i), 0);
  const auto start = Clock::now();
  for (uint64_t i = 0; i < 4; ++i) {
    a.buf[i] = static_cast<uint8_t>(10 + i);
    ASSERT_EQ(post(a, b, {.id = i, .offset = i, .len = 1, .remoteOffset = i, .imm = uint32_t(i)}),
              0);
  }
  EXPECT_EQ(fake_->fired(Kind::kSlowCompletion), 1u);
  EXPECT_EQ(b.buf[0], 10);
  EXPECT_EQ(b.buf[1], 0);  // the slow one
  EXPECT_EQ(b.buf[2], 0);  // behind it
  EXPECT_EQ(drain(a.cq).size(), 1u);
  std::vector<ibv_wc> wc = poll(a.cq, 3);
  EXPECT_GE(Clock::now() - start, 200ms);
  ASSERT_EQ(wc.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(wc[i].wr_id, i + 1);
  wc = drain(b.cq);
  ASSERT_EQ(wc.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ntohl(wc[i].imm_data), i);
  EXPECT_EQ(b.buf[3], 13);
  destroy(a);
  destroy(b);
}

// Destroying a QP with delayed work pending drops it: its timer finds nothing.
TEST_F(FakeVerbsTest, DestroyWithPendingTimers) {
  ibv_context* ctx = open();
  Side a = side(ctx), b = side(ctx);
  connect(a, b);
  fake_->inject({.kind = Kind::kSlowCompletion, .delay = 100ms, .anyOpcode = true});
  ASSERT_EQ(post(a, b, {.op = IBV_WR_RDMA_WRITE}), 0);
  EXPECT_EQ(fake_->fired(Kind::kSlowCompletion), 1u);
  destroy(a);
  std::this_thread::sleep_for(150ms);  // past the timer
  EXPECT_EQ(fake_->counts().writes, 0u);
  destroy(b);
}

}  // namespace
}  // namespace eccl::test
