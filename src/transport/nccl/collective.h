// The NCCL backend: collectives on CUDA buffers run on an NCCL communicator
// while ECCL keeps membership, agreement and fault handling (docs/cuda.md).
//
// One communicator per tag and epoch: NCCL needs the ops on a communicator
// issued in the same order by every rank, and ECCL orders ops only within a
// tag. It is made at the tag's first NCCL op of an epoch: rank 0's unique id
// reaches the others over ECCL's own (authenticated) data links, then every
// member inits a non-blocking communicator (config.blocking = 0).
//
// Never hanging: the op's thread is its watchdog. While NCCL works it polls,
// every 0.1 to 2 ms, the op's completion event, ncclCommGetAsyncError and the
// op's cancel flag, which the master's verdicts set (a member died or left,
// the members disagree, an epoch change); on a failure, an async error or the
// op timeout it calls ncclCommAbort, which ends the op's kernels, and the op
// fails. NCCL's own timeouts play no part.
//
// All or nothing: an in-place all-reduce (and a broadcast at a non-root)
// writes into a device scratch buffer, copied into place only once the
// master's verdict is success; an out-of-place all-reduce writes recvbuf,
// which the caller's input replaces on failure (comm/staging.h). Any failed
// op aborts the tag's communicator on every member (the verdict is agreed),
// so the next op builds a fresh one.
#pragma once

#include <chrono>
#include <functional>

#include "cuda/device.h"
#include "transport/nccl/api.h"
#include "transport/transport.h"

namespace eccl::transport::nccl {

struct Call {
  bool allReduce = true;  // else broadcast
  const void* sendbuf = nullptr;
  void* recvbuf = nullptr;  // broadcast: == sendbuf
  size_t count = 0;
  ecclDataType_t dtype = ecclFloat32;
  ecclRedOp_t op = ecclSum;
  int root = 0;
  int rank = 0;
  int world = 1;
  uint64_t epoch = 0;
  int device = 0;                    // the buffers' CUDA device, current on this thread
  cuda::Event ready = nullptr;       // the caller's stream at submission
  const CancelFlag* cancel = nullptr;
  std::chrono::milliseconds timeout{60000};  // no completion in this long: ecclTimeout
  // Gives every member rank 0's id (called on every member, rank 0 included).
  std::function<Status(ncclUniqueId* id)> shareId;
};

// Whether NCCL can run this op at all (a dtype it has, no codec).
bool fits(ecclDataType_t dtype, ecclQuantization_t quant);

class TagComm {
 public:
  TagComm() = default;
  TagComm(const TagComm&) = delete;
  TagComm& operator=(const TagComm&) = delete;
  ~TagComm();

  // Runs the op up to its completion on the device: this member's result.
  // The caller's buffers are untouched unless the op is an out-of-place
  // all-reduce (recvbuf).
  Status run(const Api& api, cuda::Device& dev, const Call& call);
  // After the master's verdict: success moves the result into place; failure
  // aborts the communicator (if run() has not already) and waits, at most
  // `bound`, for what the aborted op left queued.
  Status finish(bool success, std::chrono::milliseconds bound);

  // Aborted communicators so far (tests).
  uint64_t aborts() const { return aborts_; }

 private:
  Status prepare(const Call& call, size_t bytes);
  Status connect(const Call& call);
  Status enqueue(const Call& call, void* out);
  // Polls until done() is true; on a cancel, an async error or the deadline
  // aborts the communicator and fails.
  Status watch(const Call& call, const char* what, const std::function<Result<bool>()>& done);
  void abort();
  void release();
  // Waits at most `bound` for the stream's queued work; when it does not end,
  // the stream, event and scratch are abandoned (never reused or freed:
  // freeing could wait on them) and the next op makes new ones.
  Status drain(std::chrono::milliseconds bound);

  const Api* api_ = nullptr;
  cuda::Device* dev_ = nullptr;
  ncclComm_t comm_ = nullptr;
  uint64_t epoch_ = 0;
  int device_ = -1;
  cuda::Stream stream_ = nullptr;
  cuda::Event done_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratchBytes_ = 0;
  // The op between run() and finish(): where its result is, where it goes.
  void* pendingFrom_ = nullptr;
  void* pendingTo_ = nullptr;
  size_t pendingBytes_ = 0;
  uint64_t aborts_ = 0;
};

}  // namespace eccl::transport::nccl
