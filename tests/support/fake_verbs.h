// An in-process RDMA verbs provider: every call of transport::ibverbs::Api
// over process memory, so ECCL's real RDMA transport runs in CI without an
// HCA. It is a provider, not a mock: RC queue pairs have the real state
// machine and attribute masks, keys and ranges are checked, work requests
// complete in post order with the statuses a real HCA gives, and faults can
// be injected on chosen work requests.
//
// What it models (RC only):
//  - Devices and ports from Options; every device is on one fabric. A QP
//    reaches its peer by QP number when the RTR address (IB: dlid, RoCE:
//    dgid) names the peer's port, the peer names this QP back and the PSNs
//    agree (this sq_psn == peer rq_psn). Otherwise, or when the peer is gone
//    or not in RTR/RTS, the request is retried for Options::transportTimeout
//    and then completes IBV_WC_RETRY_EXC_ERR.
//  - RDMA_WRITE, RDMA_WRITE_WITH_IMM, SEND, SEND_WITH_IMM. Payloads are read
//    when delivered (IBV_SEND_INLINE: when posted). A request that needs a
//    receive waits for one when rnr_retry is 7, else fails RNR_RETRY_EXC_ERR.
//  - Send-queue slots: a WR holds its slot until a completion of it or of a
//    later WR of the same QP is polled, so posting only unsignaled WRs fills
//    the queue (postSend returns ENOMEM), as on real hardware.
//  - CQs hold exactly `cqe` entries; one more overruns the CQ: it drops
//    further completions, every QP using it goes to ERR, and it raises
//    IBV_EVENT_CQ_ERR.
//  - ERR flushes every outstanding WR (FLUSH_ERR, signaled or not). RESET
//    and destroyQp drop the QP's work without completions and also remove
//    its completions still queued in its CQs (as mlx5 does): to account for
//    every WR, move the QP to ERR and poll the flushes before destroying it.
//  - Completion channels: an armed CQ raises one event for its next
//    completion (never for ones already queued when it was armed).
//    channel->fd is readable while an event is queued; getCqEvent blocks
//    unless the caller made that fd O_NONBLOCK (then -1 with EAGAIN).
//  - Asynchronous events: every context has its own queue, and
//    context->async_fd (an eventfd, blocking) is readable exactly while it
//    holds an event. getAsyncEvent takes the oldest (blocking, or -1 with
//    EAGAIN when the caller made async_fd O_NONBLOCK); eventTypeStr gives
//    libibverbs' text. Events come from injectAsyncEvent() and from a CQ
//    overrun (IBV_EVENT_CQ_ERR naming that CQ, on its context). Events of a
//    QP or CQ still queued when it is destroyed are discarded (as the kernel
//    does); the rest go with closeDevice.
//
// Where it differs from libibverbs (callers must not rely on these):
//  - destroyCq with completion events read but not acked returns EBUSY
//    (libibverbs blocks); closeDevice with PDs, CQs or channels still open
//    returns EBUSY (the kernel would tear them down). Asynchronous events are
//    as in libibverbs: destroyQp / destroyCq wait while an event of that QP
//    / CQ is read and not acked (another thread may be handling it), but
//    abort after Options::asyncAckTimeout instead of hanging; port and
//    device events need no ack before closeDevice (ackAsyncEvent only counts
//    them). Acking more events of a QP or CQ than were read aborts.
//  - A handle that is unknown or already destroyed aborts the process with a
//    message (a real provider would crash or corrupt memory).
//  - Capabilities are granted exactly as asked (providers round up).
//  - Delivery is instantaneous unless delayed by a fault or a retry.
//
// Thread safety: every Api call may come from any thread; one mutex guards
// the fabric, and getCqEvent, getAsyncEvent and a destroy waiting for an
// ack wait without it. A timer thread runs delayed
// work (slow completions, retry timeouts). One FakeVerbs may live at a time
// (the Api table is plain function pointers); a second one aborts.
#pragma once

#include <infiniband/verbs.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/ibverbs/api.h"

namespace eccl::test {

class FakeVerbs {
 public:
  struct DeviceSpec {
    std::string name = "fake_rdma0";
    uint8_t ports = 1;
    ibv_port_state state = IBV_PORT_ACTIVE;         // anything but ACTIVE: nothing gets through
    uint8_t linkLayer = IBV_LINK_LAYER_INFINIBAND;  // or IBV_LINK_LAYER_ETHERNET (RoCE)
    ibv_mtu mtu = IBV_MTU_4096;
    int gidTableLen = 4;
  };

  struct Options {
    std::vector<DeviceSpec> devices{DeviceSpec{}};                   // may be empty
    size_t maxRegisteredBytes = std::numeric_limits<size_t>::max();  // regMr: ENOMEM above
    std::chrono::milliseconds transportTimeout{20};                  // until RETRY_EXC_ERR
    // destroyQp / destroyCq wait this long for an asynchronous event of the
    // object read but not yet acked, then abort (libibverbs waits forever).
    std::chrono::milliseconds asyncAckTimeout{5000};
  };

  // Armed by inject(); fires on the afterPosts-th matching send WR posted
  // from then on (matching: qpNum 0 or equal, and opcode equal unless
  // anyOpcode), once. Only WRs posted in RTS count. When two faults would
  // fire on one WR the first injected wins and the other fires on the next
  // matching WR. A fault acts when its WR reaches the head of the send
  // queue, so every WR posted before it completes first.
  struct Fault {
    enum class Kind {
      kQpError,          // the QP goes to ERR: this WR and all outstanding work flush
      kErrorCompletion,  // not delivered; completes with `status` after `delay`; QP to
                         // ERR (the peer too for REM_ACCESS/REM_INV_REQ/REM_OP errors)
      kLostCompletion,   // this WR and every later one on the QP vanish (no delivery,
                         // no completion, QP stays RTS; a later move to ERR flushes them)
      kSlowCompletion,   // delivered and completed `delay` after posting; the WRs
                         // behind it on the QP wait for it
    };
    Kind kind = Kind::kQpError;
    uint64_t afterPosts = 1;
    ibv_wc_status status = IBV_WC_RETRY_EXC_ERR;
    std::chrono::milliseconds delay{0};
    uint32_t qpNum = 0;  // 0: any QP
    ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    bool anyOpcode = false;
  };

  struct Counts {
    uint64_t posts = 0;         // send WRs accepted by postSend (any state)
    uint64_t writes = 0;        // RDMA writes delivered (with or without immediate)
    uint64_t sends = 0;         // SENDs delivered (with or without immediate)
    uint64_t bytesWritten = 0;  // payload bytes landed in receivers' memory (writes and sends)
    uint64_t recvsPosted = 0;   // receive WRs accepted by postRecv
    uint64_t regMrs = 0, deregMrs = 0;
    uint64_t liveMrs = 0, liveQps = 0, liveCqs = 0, livePds = 0, liveChannels = 0;
    uint64_t liveContexts = 0;
    uint64_t forkInits = 0;
    uint64_t cqOverruns = 0;
    uint64_t asyncEvents = 0;      // raised (injected or CQ_ERR): one per context queued on
    uint64_t asyncEventsRead = 0;  // returned by getAsyncEvent
    uint64_t asyncAcks = 0;        // ackAsyncEvent calls, any event type
  };

  FakeVerbs();
  explicit FakeVerbs(Options options);
  ~FakeVerbs();  // stops the timer thread; frees whatever is still open
  FakeVerbs(const FakeVerbs&) = delete;
  FakeVerbs& operator=(const FakeVerbs&) = delete;

  // The table to install with transport::ibverbs::setApiForTesting (or use
  // ScopedFakeVerbs); valid while this object lives.
  const transport::ibverbs::Api* api() const;

  void inject(const Fault& fault);
  void clearFaults();  // disarms faults not yet fired (fired() keeps counting)
  uint64_t fired(Fault::Kind kind) const;

  // Raises an asynchronous event now, as the HCA would:
  //  - QP events (QP_FATAL, QP_REQ_ERR, QP_ACCESS_ERR, and COMM_EST,
  //    SQ_DRAINED, PATH_MIG, PATH_MIG_ERR, QP_LAST_WQE_REACHED): on the
  //    context of QP `qpNum` (aborts if there is no such QP), element.qp =
  //    that QP. The three errors first move it to ERR, so its outstanding
  //    work is flushed into its CQs before the event can be read.
  //  - IBV_EVENT_CQ_ERR: the send CQ of QP `qpNum` overruns as if one
  //    completion too many arrived: it stops, its QPs go to ERR, and the
  //    event (element.cq) is raised on its context.
  //  - IBV_EVENT_DEVICE_FATAL: every QP of the fabric goes to ERR (flushing),
  //    then the event (element.port_num = `port`) is queued on every open
  //    context. The devices keep working otherwise (no EIO from later calls).
  //  - Port events (PORT_ERR, PORT_ACTIVE, LID_CHANGE, PKEY_CHANGE,
  //    SM_CHANGE, CLIENT_REREGISTER, GID_CHANGE): element.port_num = `port`,
  //    queued on every open context of every device that has that port
  //    (aborts if no configured device has it). Only the event: the port's
  //    state and traffic are unchanged (DeviceSpec::state sets a port down).
  //  - SRQ and WQ events abort: the fake has neither.
  // An event with no open context to go to is dropped (and not counted).
  void injectAsyncEvent(ibv_event_type type, uint32_t qpNum = 0, uint8_t port = 1);

  Counts counts() const;

  class Fabric;

 private:
  std::unique_ptr<Fabric> fabric_;
};

// A FakeVerbs installed as the process's verbs (transport::ibverbs::api())
// for this object's lifetime.
class ScopedFakeVerbs {
 public:
  ScopedFakeVerbs() { transport::ibverbs::setApiForTesting(fake_.api()); }
  explicit ScopedFakeVerbs(FakeVerbs::Options options) : fake_(std::move(options)) {
    transport::ibverbs::setApiForTesting(fake_.api());
  }
  ~ScopedFakeVerbs() { transport::ibverbs::setApiForTesting(nullptr); }
  ScopedFakeVerbs(const ScopedFakeVerbs&) = delete;
  ScopedFakeVerbs& operator=(const ScopedFakeVerbs&) = delete;

  FakeVerbs& operator*() { return fake_; }
  FakeVerbs* operator->() { return &fake_; }

 private:
  FakeVerbs fake_;
};

}  // namespace eccl::test
