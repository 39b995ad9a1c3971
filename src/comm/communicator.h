// Communicator: a peer's membership in the group and its op engine.
//
// Life: create -> connect (register, wait for admission, open data links) ->
// collectives and topology updates -> destroy (leave).
//
// Op engine: each tag has a worker thread running its ops in issue order, so
// ops of different tags proceed concurrently over the shared links. An op:
// tells the master its descriptor (OpBegin, one way), runs the ring, reports
// OpDone and waits for the master's verdict, which is success only when every
// member succeeded. A failure verdict (a member failed or disagreed) cancels
// the op wherever it is. That is the one control round-trip per op.
//
// Faults: a failed op leaves the caller's input in the receive buffer. A
// receive that waits half the failure timeout is reported to the master
// (Suspect), which alone decides who is dead. A master that kicks this peer,
// or goes away, ends every op with ecclKicked / ecclMasterUnreachable; a new
// connect() then rejoins as a newcomer.
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "comm/control_client.h"
#include "comm/request.h"
#include "comm/staging.h"

namespace eccl::collectives {
struct RingContext;
}
namespace eccl::transport::nccl {
class TagComm;  // transport/nccl/collective.h, in builds with NCCL
}

namespace eccl::comm {

struct CommOptions {
  std::string masterAddress;
  uint32_t peerGroup = 0;
  std::string transport = "tcp";
  uint32_t streams = 0;  // per link; 0 = each link finds its count
  std::string authToken;
  std::chrono::milliseconds connectTimeout{10000};
  std::chrono::milliseconds opTimeout{60000};
  std::string advertisedAddress;
  std::string bindAddress;
  std::chrono::milliseconds heartbeatInterval{500};
  std::chrono::milliseconds failureTimeout{2000};
  security::TlsOptions tls;
};

class Communicator {
 public:
  explicit Communicator(CommOptions options);
  ~Communicator();  // leaves the group; bounded

  // connect and updateTopology must not overlap each other (or destroy):
  // a second concurrent call returns ecclInvalidUsage instead of racing.
  Status connect();
  // With `optimize`: ecclCommOptimizeTopology (bandwidth probes first).
  Status updateTopology(bool optimize = false);
  // Claims the communicator for destroy: false while connect or
  // updateTopology runs (they then refuse to start: it is being destroyed).
  bool claimForDestroy() { return !lifecycle_.exchange(true, std::memory_order_acq_rel); }
  Result<bool> arePeersPending();

  int worldSize() const;
  int rank() const;
  uint64_t epoch() const;
  uint32_t peerGroup() const { return options_.peerGroup; }

  // Queues an op on its tag's worker. With `inline` set and the tag idle, the
  // op runs on the calling thread instead (blocking calls: two thread
  // hand-offs fewer per op, which is most of a small op's latency).
  Result<std::shared_ptr<Request>> submit(const OpArgs& args, bool runInline = false);

  void setLastError(const std::string& message);
  std::string lastError() const;

 private:
  struct TagQueue {
    std::deque<std::shared_ptr<Request>> queue;
    std::thread worker;
    bool busy = false;  // an op of this tag is executing (worker or caller thread)
    // The caller's input of the executing op where the ring overwrites it
    // (in-place all-reduce, broadcast at non-roots): restored on failure.
    std::vector<std::byte> backup;
    StagingArea staging;  // its ops on device buffers
    // Transport "nccl": the tag's NCCL communicator (never made without NCCL).
    struct NcclDeleter {
      void operator()(transport::nccl::TagComm* c) const;
    };
    std::unique_ptr<transport::nccl::TagComm, NcclDeleter> nccl;
  };
  struct OpKey {
    uint64_t epoch;
    uint32_t tag;
    uint64_t seq;
    auto operator<=>(const OpKey&) const = default;
  };

  Status requireConnected() const;
  Status registerAndJoin();
  Status applyTopology(const wire::Topology& t);
  // Opens this epoch's links to the ring neighbours of `t` (world > 1).
  Status openLinks(const wire::Topology& t);
  // Under viewMu_: wakes every link's waiters, or drops every link.
  void interruptLinks();
  void dropLinks();
  Status voteAndApply(bool optimize);
  // This member's rounds of a bandwidth probe (probe.cc): what it received
  // from each partner, or why it stopped.
  wire::ProbeReport runProbes(const wire::ProbePlan& plan);
  void workerLoop(uint32_t tag);
  void execute(Request& req);
  Status runRing(Request& req, ecclOpInfo_t& info, TagQueue& tag);
  // The op on NCCL (transport "nccl", device buffers): this member's result.
  Status runNccl(Request& req, collectives::RingContext& ctx, TagQueue& tag);
  // A shared-state sync (sync.cc): manifest, plan, transfers, verdict.
  // `area`: the sync tag's pinned buffer, for CUDA tensors' host mirrors.
  Status runSync(Request& req, StagingArea& area);
  // The sync itself, on host tensors; `fetched` (optional) gets the indices
  // of the tensors it received.
  Status syncState(Request& req, SyncArgs& args, std::vector<uint32_t>* fetched);
  // Registers an op for its verdict (an early one, a lost master, destroy);
  // false when it already has a failure verdict.
  void registerActive(Request& req);
  void unregisterActive(const Request& req);
  void dropSession();
  void onVerdict(const wire::OpVerdict& v);
  void onMasterLost(const Status& st);
  void onMemberLost(const wire::MemberLost& m);
  // Whether the master reported `peer` lost in `epoch`.
  bool peerLost(uint64_t epoch, uint64_t peer);
  // Tells the master this op has been stuck on `peer` for `stuck` (Suspect).
  void reportStall(uint64_t epoch, uint32_t tag, uint64_t seq, uint64_t peer, bool sending,
                   std::chrono::milliseconds stuck);

  // Held by connect/updateTopology while they run.
  class LifecycleCall;
  std::atomic<bool> lifecycle_{false};

  CommOptions options_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<ControlClient> control_;
  uint64_t peerId_ = 0;

  // Current view; changed only by connect/updateTopology with no op in flight.
  mutable std::mutex viewMu_;
  bool connected_ = false;
  uint64_t epoch_ = 0;
  int rank_ = 0;
  std::vector<wire::RingPeer> ring_;
  uint32_t segmentBytes_ = wire::kDefaultSegmentBytes;  // the group's, from the master
  std::unique_ptr<transport::Link> right_;
  std::unique_ptr<transport::Link> left_;
  // Small-message collectives' links (collectives/small.h): [k - 1] to and
  // from the members 2^k places on and back along the ring, k >= 1.
  std::vector<std::unique_ptr<transport::Link>> hopOut_, hopIn_;
  Status linksError_;  // why this epoch's links are missing (ops fail with it)

  // Link setup of an epoch stops when the master reports that epoch lost a
  // member (its links may never open).
  std::mutex linkSetupMu_;
  uint64_t lostEpoch_ = 0;          // newest epoch that lost a member
  std::set<uint64_t> lostPeers_;    // the members it lost (a sync stops waiting for them)
  uint64_t settingUpEpoch_ = 0;     // epoch whose links are being opened, 0 if none
  transport::CancelFlag linkSetupCancel_{0};

  // Op engine.
  std::mutex opsMu_;
  std::condition_variable opsCv_;
  std::map<uint32_t, TagQueue> tags_;
  std::map<uint32_t, uint64_t> nextSeq_;
  std::map<OpKey, std::shared_ptr<Request>> active_;
  std::map<OpKey, wire::OpVerdict> earlyVerdicts_;
  size_t inFlight_ = 0;
  bool stopping_ = false;
  bool topologyChanging_ = false;  // submit() refuses ops meanwhile
  Status masterLost_;  // ecclMasterUnreachable or ecclKicked: calls fail with it

  mutable std::mutex errMu_;
  std::string lastError_;
};

}  // namespace eccl::comm
