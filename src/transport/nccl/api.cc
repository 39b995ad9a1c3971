#include "transport/nccl/api.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <string>

#include "transport/loaded_api.h"

namespace eccl::transport::nccl {
namespace {


Result<const Api*> load() {
  constexpr const char* kLibrary = "libnccl.so.2";
  // The loader's search path first, then where the build found NCCL (the
  // CUDA toolkit's library folder is often not on the search path).
  void* lib = nullptr;
  std::string tried;
  for (const char* path : {kLibrary, ECCL_NCCL_BUILD_LIBRARY}) {
    if (path[0] == '\0') continue;
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
    const char* why = dlerror();
    tried += fmt::format("\n  {}: {}", path, why != nullptr ? why : "not loadable");
  }
  if (lib == nullptr) {
    return error(ecclUnsupported, fmt::format("transport \"nccl\": {} could not be loaded "
                                              "(install NCCL 2.18 or newer); tried:{}",
                                              kLibrary, tried));
  }
  static Api real{};
  std::string missing;
  bindSymbol(lib, "ncclGetVersion", &real.getVersion, &missing);
  bindSymbol(lib, "ncclGetUniqueId", &real.getUniqueId, &missing);
  bindSymbol(lib, "ncclCommInitRankConfig", &real.commInitRankConfig, &missing);
  bindSymbol(lib, "ncclCommGetAsyncError", &real.commGetAsyncError, &missing);
  bindSymbol(lib, "ncclCommAbort", &real.commAbort, &missing);
  bindSymbol(lib, "ncclAllReduce", &real.allReduce, &missing);
  bindSymbol(lib, "ncclBroadcast", &real.broadcast, &missing);
  bindSymbol(lib, "ncclGetErrorString", &real.getErrorString, &missing);
  if (!missing.empty()) {
    return error(ecclUnsupported, fmt::format("transport \"nccl\": {} lacks{}", kLibrary, missing));
  }
  int version = 0;
  real.getVersion(&version);
  if (version < kMinVersion) {
    return error(ecclUnsupported,
                 fmt::format("transport \"nccl\": NCCL {} is too old (need {} or newer for "
                             "non-blocking communicators that abort)", version, kMinVersion));
  }
  return &real;  // the library stays loaded
}

LoadedApi<Api> table(load);

}  // namespace

Result<const Api*> api() { return table.get(); }

void setApiForTesting(const Api* a) { table.setForTesting(a); }

bool toNccl(ecclDataType_t dtype, ncclDataType_t* out) {
  switch (dtype) {
    case ecclInt8: *out = ncclInt8; return true;
    case ecclUint8: *out = ncclUint8; return true;
    case ecclInt32: *out = ncclInt32; return true;
    case ecclUint32: *out = ncclUint32; return true;
    case ecclInt64: *out = ncclInt64; return true;
    case ecclUint64: *out = ncclUint64; return true;
    case ecclFloat16: *out = ncclFloat16; return true;
    case ecclBfloat16: *out = ncclBfloat16; return true;
    case ecclFloat32: *out = ncclFloat32; return true;
    case ecclFloat64: *out = ncclFloat64; return true;
    default: return false;  // int16, uint16
  }
}

ncclRedOp_t toNccl(ecclRedOp_t op) {
  switch (op) {
    case ecclProd: return ncclProd;
    case ecclMax: return ncclMax;
    case ecclMin: return ncclMin;
    default: return ncclSum;  // sum, avg
  }
}

}  // namespace eccl::transport::nccl
