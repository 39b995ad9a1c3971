#include "transport/nccl/collective.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "common/dtype.h"
#include "common/log.h"

namespace eccl::transport::nccl {

bool fits(ecclDataType_t dtype, ecclQuantization_t quant) {
  ncclDataType_t t;
  return quant == ecclQuantNone && toNccl(dtype, &t);
}

TagComm::~TagComm() {
  abort();
  release();
}

void TagComm::release() {
  if (dev_ == nullptr) return;
  if (done_ != nullptr) dev_->destroyEvent(done_);
  if (stream_ != nullptr) dev_->destroyStream(stream_);
  if (scratch_ != nullptr) dev_->freeDevice(scratch_);
  done_ = nullptr;
  stream_ = nullptr;
  scratch_ = nullptr;
  scratchBytes_ = 0;
}

void TagComm::abort() {
  if (comm_ == nullptr) return;
  // Ends the communicator's kernels and frees it; never waits for a peer.
  api_->commAbort(comm_);
  comm_ = nullptr;
  ++aborts_;
}

Status TagComm::prepare(const Call& call, size_t bytes) {
  if (device_ != call.device) {  // another GPU: its own stream and scratch
    const bool hadComm = comm_ != nullptr;
    abort();
    release();
    device_ = call.device;
    if (hadComm) {
      // The others keep their communicator: rebuilding alone would leave
      // them waiting. Failing the op makes every member rebuild at the next.
      return error(ecclInvalidUsage, fmt::format("this member's buffers moved to CUDA device {} "
                                                 "since the tag's last op; its NCCL communicator "
                                                 "is rebuilt at the next op", call.device));
    }
  }
  if (stream_ == nullptr) {
    Result<cuda::Stream> s = dev_->createStream();
    if (!s) return s.status();
    stream_ = *s;
  }
  if (done_ == nullptr) {
    Result<cuda::Event> e = dev_->createEvent();
    if (!e) return e.status();
    done_ = *e;
  }
  if (scratchBytes_ < bytes) {
    if (scratch_ != nullptr) dev_->freeDevice(scratch_);
    scratch_ = nullptr;
    scratchBytes_ = 0;
    Result<void*> p = dev_->allocDevice(bytes);
    if (!p) return p.status();
    scratch_ = *p;
    scratchBytes_ = bytes;
  }
  return Status::ok();
}

Status TagComm::watch(const Call& call, const char* what,
                      const std::function<Result<bool>()>& done) {
  const auto deadline = Clock::now() + call.timeout;
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    const int cancelled = call.cancel != nullptr ? call.cancel->load(std::memory_order_acquire) : 0;
    if (cancelled != 0) {
      abort();
      return error(static_cast<ecclResult_t>(cancelled),
                   fmt::format("NCCL {} aborted: the op failed on the group", what));
    }
    if (comm_ != nullptr) {
      ncclResult_t async = ncclSuccess;
      const ncclResult_t r = api_->commGetAsyncError(comm_, &async);
      if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
        const ncclResult_t bad = r != ncclSuccess ? r : async;
        abort();
        // A remote or system error is a peer or the network going away: the
        // master decides who is dead; this member reports the op lost.
        return error(ecclPeerLost, fmt::format("NCCL {}: {} ({}); communicator aborted", what,
                                               api_->getErrorString(bad), static_cast<int>(bad)));
      }
    }
    Result<bool> finished = done();
    if (!finished) {
      abort();
      return finished.status();
    }
    if (*finished) return Status::ok();
    if (Clock::now() >= deadline) {
      abort();
      return error(ecclTimeout, fmt::format("NCCL {} made no progress for {} ms; communicator "
                                            "aborted", what, call.timeout.count()));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

Status TagComm::connect(const Call& call) {
  if (comm_ != nullptr && epoch_ == call.epoch) return Status::ok();
  abort();  // an earlier epoch's
  ncclUniqueId id{};
  if (call.rank == 0) {
    const ncclResult_t r = api_->getUniqueId(&id);
    if (r != ncclSuccess) {
      return error(ecclSystemError, fmt::format("ncclGetUniqueId: {}", api_->getErrorString(r)));
    }
  }
  ECCL_RETURN_IF_ERROR(call.shareId(&id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; the watchdog waits
  ncclComm_t comm = nullptr;
  const ncclResult_t r = api_->commInitRankConfig(&comm, call.world, id, call.rank, &config);
  comm_ = comm;
  if (r != ncclSuccess && r != ncclInProgress) {
    abort();
    return error(ecclSystemError,
                 fmt::format("ncclCommInitRankConfig: {}", api_->getErrorString(r)));
  }
  epoch_ = call.epoch;
  ECCL_RETURN_IF_ERROR(watch(call, "communicator init", [&]() -> Result<bool> {
    ncclResult_t async = ncclInProgress;
    api_->commGetAsyncError(comm_, &async);
    return async == ncclSuccess;
  }));
  ECCL_LOG(kDebug, kTransport, "NCCL communicator of epoch {}: rank {} of {}", call.epoch,
           call.rank, call.world);
  return Status::ok();
}

Status TagComm::enqueue(const Call& call, void* out) {
  ncclDataType_t type;
  toNccl(call.dtype, &type);
  // NCCL reads the input only after the caller's earlier work on it.
  ECCL_RETURN_IF_ERROR(dev_->wait(stream_, call.ready));
  auto* stream = static_cast<cudaStream_t>(stream_);
  const ncclResult_t r =
      call.allReduce
          ? api_->allReduce(call.sendbuf, out, call.count, type, toNccl(call.op), comm_, stream)
          : api_->broadcast(call.sendbuf, out, call.count, type, call.root, comm_, stream);
  if (r != ncclSuccess && r != ncclInProgress) {
    abort();
    return error(ecclSystemError, fmt::format("NCCL {}: {}", call.allReduce ? "all-reduce" : "broadcast",
                                              api_->getErrorString(r)));
  }
  // Non-blocking: the call is enqueued once the async state leaves "in progress".
  ECCL_RETURN_IF_ERROR(watch(call, "enqueue", [&]() -> Result<bool> {
    ncclResult_t async = ncclInProgress;
    api_->commGetAsyncError(comm_, &async);
    return async == ncclSuccess;
  }));
  // ecclAvg: NCCL sums, then one division, like the host path (NCCL's own
  // average scales each input first, which rounds differently).
  if (call.allReduce && call.op == ecclAvg) {
    ECCL_RETURN_IF_ERROR(dev_->divide(call.dtype, out, call.count,
                                      static_cast<uint64_t>(call.world), stream_));
  }
  return dev_->record(done_, stream_);
}

Status TagComm::run(const Api& api, cuda::Device& dev, const Call& call) {
  api_ = &api;
  dev_ = &dev;
  pendingFrom_ = pendingTo_ = nullptr;
  pendingBytes_ = 0;
  const size_t bytes = call.count * dtypeSize(call.dtype);
  const bool inPlace = call.allReduce ? call.sendbuf == call.recvbuf : call.rank != call.root;
  ECCL_RETURN_IF_ERROR(prepare(call, inPlace ? bytes : 0));
  ECCL_RETURN_IF_ERROR(connect(call));
  if (bytes == 0) return Status::ok();
  void* out = inPlace ? scratch_ : call.recvbuf;
  ECCL_RETURN_IF_ERROR(enqueue(call, out));
  ECCL_RETURN_IF_ERROR(watch(call, call.allReduce ? "all-reduce" : "broadcast",
                             [&] { return dev_->query(done_); }));
  if (inPlace) {
    pendingFrom_ = scratch_;
    pendingTo_ = call.recvbuf;
    pendingBytes_ = bytes;
  }
  return Status::ok();
}

Status TagComm::drain(std::chrono::milliseconds bound) {
  if (stream_ == nullptr || done_ == nullptr) return Status::ok();
  ECCL_RETURN_IF_ERROR(dev_->record(done_, stream_));
  const auto deadline = Clock::now() + bound;
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    Result<bool> idle = dev_->query(done_);
    if (!idle) return idle.status();
    if (*idle) return Status::ok();
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
  stream_ = nullptr;  // abandoned, see drain()'s contract
  done_ = nullptr;
  scratch_ = nullptr;
  scratchBytes_ = 0;
  return error(ecclTimeout, fmt::format("the aborted NCCL op's stream did not drain in {} ms",
                                        bound.count()));
}

Status TagComm::finish(bool success, std::chrono::milliseconds bound) {
  if (!success) {
    // The others aborted theirs: this one cannot be trusted to match them.
    abort();
    // Whatever the aborted op still had queued ends before the caller's
    // buffers are touched again.
    return drain(bound);
  }
  if (pendingBytes_ == 0) return Status::ok();
  ECCL_RETURN_IF_ERROR(dev_->copy(pendingTo_, pendingFrom_, pendingBytes_, stream_));
  ECCL_RETURN_IF_ERROR(dev_->record(done_, stream_));
  pendingBytes_ = 0;
  return dev_->synchronize(done_);
}

}  // namespace eccl::transport::nccl
