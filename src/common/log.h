// Logging. spdlog stays behind this header: no other file includes it.
//
// Each line is prefixed with the subsystem and, when the calling thread works
// for a communicator, that peer's id and epoch (set with ScopedLogContext).
// ECCL_LOG_LEVEL picks the level, ECCL_LOG_SUBSYS the subsystems.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace eccl::log {

enum class Level { kTrace = 0, kDebug, kInfo, kWarn, kError, kOff };
enum class Subsys { kMaster = 0, kComm, kTransport, kColl, kApi, kCount };

bool enabled(Level level, Subsys subsys);
void write(Level level, Subsys subsys, const std::string& message);

// Per-thread identity added to each line.
struct Context {
  uint64_t peerId = 0;
  uint64_t epoch = 0;
  bool set = false;
};
Context& threadContext();

class ScopedLogContext {
 public:
  ScopedLogContext(uint64_t peerId, uint64_t epoch) : saved_(threadContext()) {
    threadContext() = Context{peerId, epoch, true};
  }
  ~ScopedLogContext() { threadContext() = saved_; }
  ScopedLogContext(const ScopedLogContext&) = delete;
  ScopedLogContext& operator=(const ScopedLogContext&) = delete;

 private:
  Context saved_;
};

template <typename... Args>
void logf(Level level, Subsys subsys, fmt::format_string<Args...> f, Args&&... args) {
  if (!enabled(level, subsys)) return;
  write(level, subsys, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace eccl::log

#define ECCL_LOG(level, subsys, ...) \
  ::eccl::log::logf(::eccl::log::Level::level, ::eccl::log::Subsys::subsys, __VA_ARGS__)
