#include <string>

#include "api/results.h"
#include "api/shim.h"
#include "common/log.h"

namespace eccl::api {
namespace {

thread_local std::string tlsLastError;

}  // namespace

void recordError(ecclComm_t comm, ecclResult_t result, const std::string& message) {
  tlsLastError = message;
  if (comm != nullptr && comm->impl) comm->impl->setLastError(message);
  ECCL_LOG(kDebug, kApi, "{} -> {}", message, static_cast<int>(result));
}

}  // namespace eccl::api

extern "C" {

ECCL_API const char* ecclGetErrorString(ecclResult_t result) {
  switch (result) {
#define ECCL_RESULT_CASE(name, text) \
  case name:                         \
    return #name ": " text;
    ECCL_RESULT_TABLE(ECCL_RESULT_CASE)
#undef ECCL_RESULT_CASE
    default:
      return "unknown ecclResult_t value";
  }
}

ECCL_API const char* ecclGetLastError(ecclComm_t comm) {
  if (comm != nullptr && comm->impl) {
    // Keep the returned pointer valid on this thread until the next call.
    thread_local std::string copy;
    copy = comm->impl->lastError();
    return copy.c_str();
  }
  return eccl::api::tlsLastError.c_str();
}

ECCL_API ecclResult_t ecclGetVersion(int* version) {
  if (version == nullptr) {
    eccl::api::recordError(nullptr, ecclInvalidArgument, "ecclGetVersion: version is NULL");
    return ecclInvalidArgument;
  }
  *version = ECCL_VERSION_CODE;
  return ecclSuccess;
}

}  // extern "C"
