#include <fmt/format.h>

#include "api/shim.h"
#include "codec/codec.h"
#include "common/dtype.h"

struct ecclRequest {
  std::shared_ptr<eccl::comm::Request> impl;
};

using eccl::Status;
using eccl::error;
using eccl::api::guard;
using eccl::comm::OpArgs;

namespace {

Status validate(OpArgs& a, const ecclOpOptions_t* opts, ecclComm_t comm) {
  if (comm == nullptr || !comm->impl) return error(ecclInvalidArgument, "comm is NULL");
  if (!eccl::isValidDtype(a.dtype)) {
    return error(ecclInvalidArgument, fmt::format("unknown dtype {}", static_cast<int>(a.dtype)));
  }
  if (!eccl::isValidOp(a.op)) {
    return error(ecclInvalidArgument, fmt::format("unknown reduction op {}", static_cast<int>(a.op)));
  }
  const size_t esz = eccl::dtypeSize(a.dtype);
  if (a.count > (size_t{1} << 48) / esz) {
    return error(ecclInvalidArgument, fmt::format("count {} is too large", a.count));
  }
  if (a.count > 0 && (a.recvbuf == nullptr || a.sendbuf == nullptr)) {
    return error(ecclInvalidArgument, "buffer is NULL with count > 0");
  }
  if (a.sendbuf != a.recvbuf && a.count > 0) {
    const auto* s = static_cast<const std::byte*>(a.sendbuf);
    const auto* r = static_cast<const std::byte*>(a.recvbuf);
    const size_t bytes = a.count * esz;
    if (s < r + bytes && r < s + bytes) {
      return error(ecclInvalidArgument, "sendbuf and recvbuf overlap without being equal");
    }
  }
  if (opts != nullptr) {
    ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(opts, sizeof(ecclOpOptions_t), "ecclOpOptions_t",
                                                "ECCL_OP_OPTIONS_INIT"));
    const int mem = eccl::api::rawEnum(opts->memType);
    if (mem != ecclMemHost && mem != ecclMemCuda) {
      return error(ecclInvalidArgument, fmt::format("unknown memType {}", mem));
    }
    a.memType = static_cast<ecclMemType_t>(mem);
    a.cudaStream = opts->cudaStream;
    const bool v02 = ECCL_HAS_FIELD(opts, quantBlockSize);  // rounding and block size
    const int quant = eccl::api::rawEnum(opts->quantization);
    const int rounding = v02 ? eccl::api::rawEnum(opts->rounding) : ecclRoundNearest;
    a.blockElems = v02 ? opts->quantBlockSize : 0;
    ECCL_RETURN_IF_ERROR(eccl::codec::checkParams(quant, rounding, a.dtype, &a.blockElems));
    a.quant = static_cast<ecclQuantization_t>(quant);
    a.rounding = static_cast<ecclRounding_t>(rounding);
  }
  return Status::ok();
}

Status submit(OpArgs a, const ecclOpOptions_t* opts, ecclComm_t comm,
              std::shared_ptr<eccl::comm::Request>* out, bool blocking = false) {
  if (opts != nullptr) a.tag = opts->tag;
  ECCL_RETURN_IF_ERROR(validate(a, opts, comm));
  auto r = comm->impl->submit(a, /*runInline=*/blocking);
  if (!r) return r.status();
  *out = std::move(*r);
  return Status::ok();
}

OpArgs allReduceArgs(const void* sendbuf, void* recvbuf, size_t count, ecclDataType_t dtype,
                     ecclRedOp_t op) {
  OpArgs a;
  a.kind = eccl::wire::OpKind::kAllReduce;
  a.sendbuf = sendbuf;
  a.recvbuf = recvbuf;
  a.count = count;
  a.dtype = dtype;
  a.op = op;
  return a;
}

OpArgs broadcastArgs(void* buf, size_t count, ecclDataType_t dtype, int root) {
  OpArgs a;
  a.kind = eccl::wire::OpKind::kBroadcast;
  a.sendbuf = buf;
  a.recvbuf = buf;
  a.count = count;
  a.dtype = dtype;
  a.op = ecclSum;
  a.root = root;
  return a;
}

Status runBlocking(OpArgs a, const ecclOpOptions_t* opts, ecclComm_t comm, ecclOpInfo_t* info) {
  if (info != nullptr && info->structSize < sizeof(size_t)) {
    return error(ecclInvalidArgument, "info.structSize not set; use ECCL_OP_INFO_INIT");
  }
  std::shared_ptr<eccl::comm::Request> req;
  ECCL_RETURN_IF_ERROR(submit(a, opts, comm, &req, /*blocking=*/true));
  return req->wait(info);
}

}  // namespace

extern "C" {

ECCL_API ecclResult_t ecclAllReduce(const void* sendbuf, void* recvbuf, size_t count,
                                    ecclDataType_t dtype, ecclRedOp_t op,
                                    const ecclOpOptions_t* opts, ecclComm_t comm,
                                    ecclOpInfo_t* info) {
  return guard(comm, "ecclAllReduce", [&]() -> Status {
    return runBlocking(allReduceArgs(sendbuf, recvbuf, count, dtype, op), opts, comm, info);
  });
}

ECCL_API ecclResult_t ecclBroadcast(void* buf, size_t count, ecclDataType_t dtype, int root,
                                    const ecclOpOptions_t* opts, ecclComm_t comm,
                                    ecclOpInfo_t* info) {
  return guard(comm, "ecclBroadcast", [&]() -> Status {
    return runBlocking(broadcastArgs(buf, count, dtype, root), opts, comm, info);
  });
}

ECCL_API ecclResult_t ecclAllReduceAsync(const void* sendbuf, void* recvbuf, size_t count,
                                         ecclDataType_t dtype, ecclRedOp_t op,
                                         const ecclOpOptions_t* opts, ecclComm_t comm,
                                         ecclRequest_t* request) {
  return guard(comm, "ecclAllReduceAsync", [&]() -> Status {
    if (request == nullptr) return error(ecclInvalidArgument, "request is NULL");
    std::shared_ptr<eccl::comm::Request> req;
    ECCL_RETURN_IF_ERROR(submit(allReduceArgs(sendbuf, recvbuf, count, dtype, op), opts, comm, &req));
    *request = new ecclRequest{std::move(req)};
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclBroadcastAsync(void* buf, size_t count, ecclDataType_t dtype, int root,
                                         const ecclOpOptions_t* opts, ecclComm_t comm,
                                         ecclRequest_t* request) {
  return guard(comm, "ecclBroadcastAsync", [&]() -> Status {
    if (request == nullptr) return error(ecclInvalidArgument, "request is NULL");
    std::shared_ptr<eccl::comm::Request> req;
    ECCL_RETURN_IF_ERROR(submit(broadcastArgs(buf, count, dtype, root), opts, comm, &req));
    *request = new ecclRequest{std::move(req)};
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclWait(ecclRequest_t request, ecclOpInfo_t* info) {
  return guard(nullptr, "ecclWait", [&]() -> Status {
    if (request == nullptr) return error(ecclInvalidArgument, "request is NULL");
    if (info != nullptr && info->structSize < sizeof(size_t)) {
      return error(ecclInvalidArgument, "info.structSize not set; use ECCL_OP_INFO_INIT");
    }
    std::unique_ptr<ecclRequest> owned(request);
    return owned->impl->wait(info);
  });
}

ECCL_API ecclResult_t ecclTest(ecclRequest_t request, int* done) {
  return guard(nullptr, "ecclTest", [&]() -> Status {
    if (request == nullptr || done == nullptr) {
      return error(ecclInvalidArgument, "request and done must not be NULL");
    }
    *done = request->impl->done() ? 1 : 0;
    return Status::ok();
  });
}

}  // extern "C"
