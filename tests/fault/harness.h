// Multi-process fault-test harness (the gloo multiproc_test pattern): child
// processes with their stdout piped into a line log, signals, bounded reaping.
//
// Children print one event per line as `event key=value key=value ...`
// (see fault_peer.cc). A reader thread per child stores every stdout line with
// its arrival time and forwards stderr (library logs) to ours, prefixed with
// the child's name. Set ECCL_FAULT_VERBOSE=1 to echo stdout lines as well.
//
// Times are CLOCK_MONOTONIC nanoseconds on both sides, so the t0/t1 stamps a
// child prints compare directly with nowNs() taken here.
//
// Nothing here blocks without a bound: every wait takes a timeout, and a
// Process that goes out of scope is SIGKILLed and reaped. Children also get
// PR_SET_PDEATHSIG(SIGKILL), so a test binary killed by CTest's timeout takes
// its children with it. That signal follows the thread that forked, so create
// Processes on the test's main thread, not on short-lived helper threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

namespace eccl::fault {

using Millis = std::chrono::milliseconds;

// CLOCK_MONOTONIC in nanoseconds, the clock children stamp their lines with.
int64_t nowNs();
// Sleeps until CLOCK_MONOTONIC reaches `ns` (returns at once if it has).
void sleepUntilNs(int64_t ns);

// One line `event k=v k=v`, split. Tokens without '=' are ignored.
struct Fields {
  std::string event;
  std::map<std::string, std::string> values;

  bool has(const std::string& key) const { return values.count(key) != 0; }
  std::string str(const std::string& key) const;
  // The value as an integer (decimal, or hex with 0x); `fallback` if absent or malformed.
  int64_t num(const std::string& key, int64_t fallback = -1) const;
};
Fields parseFields(const std::string& line);

struct Line {
  int64_t arrivalNs = 0;  // nowNs() when the reader thread got it
  std::string text;
  Fields fields;
};

// A child process. Not copyable; destroying it kills and reaps the child.
class Process {
 public:
  // Starts argv[0] (a path) with argv. On failure to fork/exec, ok() is false
  // and the error is in startError().
  Process(std::string name, std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool ok() const { return pid_ > 0 && startError_.empty(); }
  const std::string& startError() const { return startError_; }
  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  // ---- stdout lines -----------------------------------------------------
  size_t lineCount() const;
  // Copies of lines [from, end).
  std::vector<Line> linesFrom(size_t from) const;
  std::vector<Line> lines() const { return linesFrom(0); }
  // Index of the first line at index >= from that satisfies pred, waiting up
  // to `timeout` for it; nullopt on timeout or when stdout closed without one.
  std::optional<size_t> waitLine(const std::function<bool(const Line&)>& pred, Millis timeout,
                                 size_t from = 0) const;
  // The line at `index` (which must exist).
  Line lineAt(size_t index) const;
  // True once the child closed its stdout (it exited, normally or not).
  bool stdoutClosed() const;
  // All stdout lines joined, for failure messages.
  std::string transcript(size_t maxLines = 60) const;

  // ---- signals and exit ----------------------------------------------------
  // kill(pid, sig); false when the child is already reaped or kill failed.
  bool signal(int sig);
  // Waits up to `timeout` for the child to exit and reaps it. True if it has.
  bool waitExit(Millis timeout);
  // Waits up to `timeout` for the child to report stopped (after SIGSTOP).
  bool waitStopped(Millis timeout);
  bool reaped() const { return reaped_; }
  // Valid once reaped(): exited normally with this code, or killed by this signal.
  bool exitedNormally() const;
  int exitCode() const;
  bool killedBySignal(int sig) const;
  std::string describeExit() const;
  // SIGKILL (if still running) and reap; idempotent.
  void killAndReap();

 private:
  void readLoop(int outFd, int errFd);

  std::string name_;
  pid_t pid_ = -1;
  std::string startError_;
  bool reaped_ = false;
  int status_ = 0;
  bool verbose_ = false;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Line> lines_;
  bool closed_ = false;
  std::thread reader_;
};

// Polls cond every few milliseconds until it holds or `timeout` passes.
bool waitUntil(const std::function<bool()>& cond, Millis timeout);

// Runs a command to completion (stdout and stderr forwarded); returns its exit
// code, or -1 if it could not start or did not finish within `timeout`.
int runCommand(const std::vector<std::string>& argv, Millis timeout);

// Finds `program` in $PATH (or the usual sbin folders); empty if absent.
std::string findProgram(const std::string& program);

// An ecclMasterCreate master in this process, on 127.0.0.1.
class InProcessMaster {
 public:
  explicit InProcessMaster(uint32_t failureTimeoutMs, uint32_t heartbeatMs = 500);
  ~InProcessMaster();
  InProcessMaster(const InProcessMaster&) = delete;
  InProcessMaster& operator=(const InProcessMaster&) = delete;
  bool ok() const { return master_ != nullptr; }
  const std::string& address() const { return address_; }

 private:
  ecclMaster_t master_ = nullptr;
  std::string address_;
};

}  // namespace eccl::fault
