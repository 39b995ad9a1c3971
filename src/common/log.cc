#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <mutex>
#include <sstream>

#include "common/env.h"

namespace eccl::log {
namespace {

constexpr std::array<const char*, static_cast<size_t>(Subsys::kCount)> kSubsysNames = {
    "master", "comm", "transport", "coll", "api"};

struct State {
  Level level = Level::kWarn;
  std::array<bool, static_cast<size_t>(Subsys::kCount)> subsys{};
  std::shared_ptr<spdlog::logger> logger;
};

Level parseLevel(const std::string& s) {
  if (s == "trace") return Level::kTrace;
  if (s == "debug") return Level::kDebug;
  if (s == "info") return Level::kInfo;
  if (s == "error") return Level::kError;
  if (s == "off") return Level::kOff;
  return Level::kWarn;
}

State& state() {
  static State* s = [] {
    auto* st = new State();  // never destroyed: threads may log during exit
    st->level = parseLevel(env::logLevel());
    const std::string wanted = env::logSubsystems();
    for (size_t i = 0; i < st->subsys.size(); ++i) {
      st->subsys[i] = wanted.empty() || wanted.find(kSubsysNames[i]) != std::string::npos;
    }
    // A private logger, not registered globally, so an application's own
    // spdlog setup is untouched.
    st->logger = std::make_shared<spdlog::logger>(
        "eccl", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    st->logger->set_pattern("[%H:%M:%S.%e] [eccl %^%l%$] %v");
    st->logger->set_level(spdlog::level::trace);
    return st;
  }();
  return *s;
}

}  // namespace

Context& threadContext() {
  thread_local Context ctx;
  return ctx;
}

bool enabled(Level level, Subsys subsys) {
  const State& s = state();
  return level >= s.level && level != Level::kOff && s.subsys[static_cast<size_t>(subsys)];
}

void write(Level level, Subsys subsys, const std::string& message) {
  const Context& ctx = threadContext();
  std::string line = ctx.set ? fmt::format("[{}] [peer {} epoch {}] {}",
                                           kSubsysNames[static_cast<size_t>(subsys)],
                                           ctx.peerId, ctx.epoch, message)
                             : fmt::format("[{}] {}", kSubsysNames[static_cast<size_t>(subsys)],
                                           message);
  static constexpr spdlog::level::level_enum kMap[] = {
      spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
      spdlog::level::warn,  spdlog::level::err,   spdlog::level::off};
  state().logger->log(kMap[static_cast<int>(level)], line);
}

}  // namespace eccl::log
