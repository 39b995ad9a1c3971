// ecclSharedStateSync: checks what the caller passed, then runs the sync as an
// op of the communicator (comm/sync.cc).
#include <fmt/format.h>

#include <cstring>
#include <set>
#include <string_view>

#include "api/shim.h"
#include "common/dtype.h"
#include "cuda/device.h"

using eccl::Result;
using eccl::Status;
using eccl::error;

namespace {

Status checkState(const ecclSharedState_t* state) {
  ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(state, sizeof(ecclSharedState_t), "ecclSharedState_t",
                                              "ECCL_SHARED_STATE_INIT"));
  if (state->tensorCount > eccl::wire::kMaxSyncTensors) {
    return error(ecclInvalidArgument, fmt::format("{} tensors; a shared state holds at most {}",
                                                  state->tensorCount, eccl::wire::kMaxSyncTensors));
  }
  if (state->tensorCount > 0 && state->tensors == nullptr) {
    return error(ecclInvalidArgument, "tensors is NULL with tensorCount > 0");
  }
  std::set<std::string_view> names;
  for (size_t i = 0; i < state->tensorCount; ++i) {
    const ecclTensorInfo_t& t = state->tensors[i];
    if (t.name == nullptr || t.name[0] == '\0') {
      return error(ecclInvalidArgument, fmt::format("tensor #{} has no name", i));
    }
    const size_t len = strnlen(t.name, eccl::wire::kMaxTensorNameBytes + 1);
    if (len > eccl::wire::kMaxTensorNameBytes) {
      return error(ecclInvalidArgument, fmt::format("tensor #{}'s name is longer than {} bytes", i,
                                                    eccl::wire::kMaxTensorNameBytes));
    }
    const std::string_view name(t.name, len);
    if (!names.insert(name).second) {
      return error(ecclInvalidArgument, fmt::format("two tensors are named \"{}\"", name));
    }
    const int dtype = eccl::api::rawEnum(t.dtype);
    if (!eccl::isValidDtype(dtype)) {
      return error(ecclInvalidArgument, fmt::format("tensor \"{}\" has unknown dtype {}", name, dtype));
    }
    const int mem = eccl::api::rawEnum(t.memType);
    if (mem != ecclMemHost && mem != ecclMemCuda) {
      return error(ecclInvalidArgument, fmt::format("tensor \"{}\" has unknown memType {}", name, mem));
    }
    if (t.count > (size_t{1} << 48) / eccl::dtypeSize(static_cast<ecclDataType_t>(dtype))) {
      return error(ecclInvalidArgument, fmt::format("tensor \"{}\": count {} is too large", name, t.count));
    }
    if (t.count > 0 && t.data == nullptr) {
      return error(ecclInvalidArgument, fmt::format("tensor \"{}\": data is NULL with count > 0", name));
    }
    if (mem == ecclMemCuda) {  // before the collective starts: a mistake fails here alone
      Result<eccl::cuda::Device*> dev = eccl::cuda::device();
      if (!dev) return dev.status();
      const size_t bytes = t.count * eccl::dtypeSize(static_cast<ecclDataType_t>(dtype));
      if (bytes > 0) {
        Result<int> where = (*dev)->deviceOf(t.data, bytes);
        if (!where) return where.status();
        if (*where < 0) {
          return error(ecclInvalidArgument, fmt::format("tensor \"{}\" is marked ecclMemCuda but "
                                                        "its data is host memory", name));
        }
      }
    }
  }
  return Status::ok();
}

}  // namespace

extern "C" {

ECCL_API ecclResult_t ecclSharedStateSync(ecclComm_t comm, ecclSharedState_t* state,
                                          ecclSyncStrategy_t strategy, ecclSyncInfo_t* info) {
  return eccl::api::guard(comm, "ecclSharedStateSync", [&]() -> Status {
    if (comm == nullptr || !comm->impl) return error(ecclInvalidArgument, "comm is NULL");
    ECCL_RETURN_IF_ERROR(checkState(state));
    const int s = eccl::api::rawEnum(strategy);
    if (s < 0 || s >= ecclNumSyncStrategies) {
      return error(ecclInvalidArgument, fmt::format("unknown sync strategy {}", s));
    }
    if (info != nullptr) {
      ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(info, sizeof(ecclSyncInfo_t), "ecclSyncInfo_t",
                                                  "ECCL_SYNC_INFO_INIT"));
    }
    eccl::comm::SyncArgs args{state, static_cast<ecclSyncStrategy_t>(s), info};
    eccl::comm::OpArgs a;
    a.kind = eccl::wire::OpKind::kSync;
    a.tag = eccl::wire::kSyncTag;
    a.sync = &args;
    a.dtype = ecclUint8;
    auto r = comm->impl->submit(a, /*runInline=*/true);
    if (!r) return r.status();
    return (*r)->wait(nullptr);
  });
}

}  // extern "C"
