// Status and Result<T>: how failures travel inside ECCL.
//
// Peer failure is ordinary control flow here, so internals return a Status
// (an ecclResult_t plus a message) instead of throwing. Only src/api/ turns
// them into C results; exceptions are reserved for programming errors and
// allocation failure, which the shim layer also catches.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "eccl/eccl.h"

namespace eccl {

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ecclResult_t code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool isOk() const { return code_ == ecclSuccess; }
  explicit operator bool() const { return isOk(); }
  ecclResult_t code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  ecclResult_t code_ = ecclSuccess;
  std::string message_;
};

inline Status error(ecclResult_t code, std::string message) {
  return Status(code, std::move(message));
}

// Shaped like std::expected<T, Status>.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT

  bool hasValue() const { return v_.index() == 0; }
  explicit operator bool() const { return hasValue(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  T* operator->() { return &std::get<0>(v_); }
  const Status& status() const { return std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace eccl

// Early return of a failed Status.
#define ECCL_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::eccl::Status eccl_st_ = (expr);       \
    if (!eccl_st_.isOk()) return eccl_st_;  \
  } while (0)
