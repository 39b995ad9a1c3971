// Request: one collective from submission to verdict. Shared between the
// caller (ecclWait/ecclTest), the tag's worker thread and the control thread
// that delivers the master's verdict.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include "eccl/eccl.h"
#include "transport/transport.h"
#include "wire/control.h"

namespace eccl::comm {

class Staging;

// A shared-state sync's arguments (the caller's; they outlive the op).
struct SyncArgs {
  ecclSharedState_t* state = nullptr;
  ecclSyncStrategy_t strategy = ecclSyncEnforcePopular;
  ecclSyncInfo_t* info = nullptr;  // may be null
};

struct OpArgs {
  wire::OpKind kind = wire::OpKind::kAllReduce;
  SyncArgs* sync = nullptr;  // kSync only
  const void* sendbuf = nullptr;
  void* recvbuf = nullptr;
  size_t count = 0;
  ecclDataType_t dtype = ecclFloat32;
  ecclRedOp_t op = ecclSum;
  int root = 0;
  uint32_t tag = 0;
  ecclQuantization_t quant = ecclQuantNone;
  ecclRounding_t rounding = ecclRoundNearest;
  uint32_t blockElems = 0;  // blocked codecs only (codec::checkParams)
  ecclMemType_t memType = ecclMemHost;
  void* cudaStream = nullptr;  // ecclMemCuda: the caller's stream

  wire::OpDescriptor descriptor() const {
    if (kind == wire::OpKind::kSync) return {static_cast<uint8_t>(kind), ecclUint8, 0, 0, 0, 0, 0};
    return {static_cast<uint8_t>(kind),
            static_cast<uint8_t>(dtype),
            static_cast<uint8_t>(kind == wire::OpKind::kBroadcast ? ecclSum : op),
            static_cast<uint64_t>(count),
            kind == wire::OpKind::kBroadcast ? root : 0,
            wire::packCodec(quant, rounding == ecclRoundStochastic),
            static_cast<uint16_t>(blockElems)};
  }
};

class Request {
 public:
  explicit Request(OpArgs args) : args_(args) {}

  const OpArgs& args() const { return args_; }
  uint64_t seq = 0;
  uint64_t epoch = 0;
  std::shared_ptr<Staging> staging;  // ecclMemCuda buffers (comm/staging.h)
  transport::CancelFlag cancel{0};

  // The master's answer; the first one counts.
  void setVerdict(ecclResult_t result, std::string message) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (verdict_) return;
      verdict_ = Status(result, std::move(message));
    }
    if (result != ecclSuccess) cancel.store(result, std::memory_order_release);
    cv_.notify_all();
  }
  // Waits without a deadline of its own: the master answers every op (its op
  // deadline included), and a lost master, a kick or destroy set a verdict too.
  Status awaitVerdict() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return verdict_.has_value(); });
    return *verdict_;
  }

  void complete(Status status, const ecclOpInfo_t& info) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = std::move(status);
      info_ = info;
      done_ = true;
    }
    cv_.notify_all();
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  Status wait(ecclOpInfo_t* info) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    if (info != nullptr) copyInfo(info);
    return status_;
  }

 private:
  void copyInfo(ecclOpInfo_t* out) const {
    // Copy only the fields the caller's struct version has.
    const size_t n = std::min(out->structSize, sizeof(ecclOpInfo_t));
    const size_t callerSize = out->structSize;
    std::memcpy(static_cast<void*>(out), &info_, n);
    out->structSize = callerSize;
  }

  OpArgs args_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Status> verdict_;
  bool done_ = false;
  Status status_;
  ecclOpInfo_t info_ = ECCL_OP_INFO_INIT;
};

}  // namespace eccl::comm
