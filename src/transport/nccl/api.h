// The NCCL calls ECCL's NCCL backend makes, as a table of function pointers:
// the real library, loaded with dlopen on first use (libeccl never links
// NCCL, so it runs where NCCL is absent), or a test stand-in that can block an
// op or raise an asynchronous error (tests/integration/nccl_test.cc).
#pragma once

#include <nccl.h>

#include "common/status.h"
#include "eccl/eccl.h"

namespace eccl::transport::nccl {

struct Api {
  ncclResult_t (*getVersion)(int* version);
  ncclResult_t (*getUniqueId)(ncclUniqueId* id);
  ncclResult_t (*commInitRankConfig)(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                     ncclConfig_t* config);
  ncclResult_t (*commGetAsyncError)(ncclComm_t comm, ncclResult_t* asyncError);
  ncclResult_t (*commAbort)(ncclComm_t comm);
  ncclResult_t (*allReduce)(const void* sendbuff, void* recvbuff, size_t count,
                            ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                            cudaStream_t stream);
  ncclResult_t (*broadcast)(const void* sendbuff, void* recvbuff, size_t count,
                            ncclDataType_t datatype, int root, ncclComm_t comm,
                            cudaStream_t stream);
  const char* (*getErrorString)(ncclResult_t result);
};

// The oldest NCCL the backend runs on: non-blocking communicators with a
// working ncclCommAbort from any thread.
inline constexpr int kMinVersion = 21800;  // 2.18.0

// The stand-in when one is installed, else libnccl.so.2, loaded once.
// ecclUnsupported with the reason when it cannot be loaded or is too old.
Result<const Api*> api();
// Installs a stand-in for this process (tests); nullptr uninstalls it.
void setApiForTesting(const Api* api);

// NCCL's type for an ECCL dtype; false for the ones NCCL lacks (int16, uint16).
bool toNccl(ecclDataType_t dtype, ncclDataType_t* out);
// NCCL's reduction for an ECCL op (ecclAvg: ncclSum, divided afterwards).
ncclRedOp_t toNccl(ecclRedOp_t op);

}  // namespace eccl::transport::nccl
