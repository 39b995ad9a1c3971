// The shim layer: the only place where C++ exceptions are caught. Every C
// function body runs inside guard(), which maps a Status or an exception to a
// result and records the message for ecclGetLastError.
#pragma once

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <string>

#include "comm/communicator.h"
#include "common/status.h"
#include "security/tls.h"

struct ecclComm {
  std::unique_ptr<eccl::comm::Communicator> impl;
};

namespace eccl::api {

void recordError(ecclComm_t comm, ecclResult_t result, const std::string& message);

template <typename F>
ecclResult_t guard(ecclComm_t comm, const char* function, F&& body) noexcept {
  try {
    Status st = body();
    if (!st.isOk()) recordError(comm, st.code(), std::string(function) + ": " + st.message());
    return st.code();
  } catch (const std::bad_alloc&) {
    recordError(comm, ecclSystemError, std::string(function) + ": out of memory");
    return ecclSystemError;
  } catch (const std::exception& e) {
    recordError(comm, ecclInternalError, std::string(function) + ": " + e.what());
    return ecclInternalError;
  } catch (...) {
    recordError(comm, ecclInternalError, std::string(function) + ": unknown exception");
    return ecclInternalError;
  }
}

// Config structs: callers built with an older, smaller struct are accepted;
// a structSize smaller than the first version means it was not initialised.
template <typename T>
Status checkStruct(const T* p, size_t firstVersionSize, const char* name, const char* initMacro) {
  if (p == nullptr) return error(ecclInvalidArgument, std::string(name) + " is NULL");
  const size_t size = p->structSize;
  if (size < firstVersionSize || size > (1u << 16)) {
    return error(ecclInvalidArgument, std::string(name) + ".structSize is " +
                                          std::to_string(p->structSize) + "; initialise it with " +
                                          initMacro);
  }
  return Status::ok();
}

// The int a C caller stored in an enum field. C lets any int in; C++ reading
// one outside the enum's range as the enum is undefined behaviour (UBSan's
// -fsanitize=enum), so fields are read as ints and checked before use.
template <typename E>
int rawEnum(const E& field) {
  static_assert(std::is_enum_v<E> && sizeof(E) == sizeof(int));
  int v;
  std::memcpy(&v, &field, sizeof v);
  return v;
}

// Whether a caller's config struct (of its structSize) includes `field`.
#define ECCL_HAS_FIELD(p, field) \
  ((p)->structSize >= offsetof(std::remove_pointer_t<decltype(p)>, field) + sizeof((p)->field))

// The TLS fields of a config struct; NULL (the environment's) for callers
// built before the fields existed.
template <typename Config>
Result<security::TlsOptions> tlsOptionsOf(const Config* c) {
  const bool has = ECCL_HAS_FIELD(c, tlsCaFile);
  return security::tlsOptionsFrom(has ? c->tls : nullptr, has ? c->tlsCertFile : nullptr,
                                  has ? c->tlsKeyFile : nullptr, has ? c->tlsCaFile : nullptr);
}

}  // namespace eccl::api
