#include "fault/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace eccl::fault {
namespace {

// Serialises forwarded stderr lines of all children so they do not interleave.
std::mutex& stderrMutex() {
  static std::mutex mu;
  return mu;
}

bool envFlag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void sleepUntilNs(int64_t ns) {
  timespec ts{};
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

std::string Fields::str(const std::string& key) const {
  auto it = values.find(key);
  return it == values.end() ? std::string() : it->second;
}

int64_t Fields::num(const std::string& key, int64_t fallback) const {
  auto it = values.find(key);
  if (it == values.end() || it->second.empty()) return fallback;
  const char* s = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0') return fallback;
  return v;
}

Fields parseFields(const std::string& line) {
  Fields f;
  std::istringstream in(line);
  std::string token;
  bool first = true;
  while (in >> token) {
    const size_t eq = token.find('=');
    if (first && eq == std::string::npos) {
      f.event = token;
    } else if (eq != std::string::npos) {
      f.values[token.substr(0, eq)] = token.substr(eq + 1);
    }
    first = false;
  }
  return f;
}

// ---- Process ---------------------------------------------------------------

Process::Process(std::string name, std::vector<std::string> argv)
    : name_(std::move(name)), verbose_(envFlag("ECCL_FAULT_VERBOSE")) {
  if (argv.empty()) {
    startError_ = "empty argv";
    return;
  }
  // Everything the child needs is prepared before fork: between fork and
  // exec a multithreaded parent's child may only make async-signal-safe calls.
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
  // O_CLOEXEC everywhere: a sibling spawned later must not inherit our write
  // ends, or this child's EOF would never come.
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(status, O_CLOEXEC) != 0) {
    startError_ = std::string("pipe2: ") + std::strerror(errno);
    for (int fd : {out[0], out[1], err[0], err[1], status[0], status[1]}) {
      if (fd >= 0) close(fd);
    }
    return;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Die with the test: CTest kills a test binary that runs past its timeout.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execv(args[0], args.data());
    const int e = errno;
    // Tell the parent why; the status pipe closes on a successful exec.
    (void)!write(status[1], &e, sizeof(e));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  close(status[1]);
  if (pid < 0) {
    startError_ = std::string("fork: ") + std::strerror(errno);
    close(out[0]);
    close(err[0]);
    close(status[0]);
    return;
  }
  pid_ = pid;
  int childErrno = 0;
  ssize_t n;
  while ((n = read(status[0], &childErrno, sizeof(childErrno))) < 0 && errno == EINTR) {
  }
  close(status[0]);
  if (n == static_cast<ssize_t>(sizeof(childErrno))) {
    startError_ = "cannot start " + argv[0] + ": " + std::strerror(childErrno);
  }
  reader_ = std::thread([this, o = out[0], e = err[0]] { readLoop(o, e); });
}

Process::~Process() {
  killAndReap();
  if (reader_.joinable()) reader_.join();
}

void Process::readLoop(int outFd, int errFd) {
  std::string pending[2];
  pollfd fds[2] = {{outFd, POLLIN, 0}, {errFd, POLLIN, 0}};
  int open = 2;
  char buf[65536];
  while (open > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      const bool eof = n <= 0;
      if (!eof) pending[i].append(buf, static_cast<size_t>(n));
      // Complete lines; at EOF, also an unterminated tail.
      size_t start = 0;
      for (size_t nl; (nl = pending[i].find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string text = pending[i].substr(start, nl - start);
        if (i == 0) {
          if (verbose_) {
            std::lock_guard<std::mutex> lock(stderrMutex());
            std::fprintf(stderr, "[%s] %s\n", name_.c_str(), text.c_str());
          }
          Line line{nowNs(), text, parseFields(text)};
          std::lock_guard<std::mutex> lock(mu_);
          lines_.push_back(std::move(line));
        } else {
          std::lock_guard<std::mutex> lock(stderrMutex());
          std::fprintf(stderr, "[%s] %s\n", name_.c_str(), text.c_str());
        }
      }
      pending[i].erase(0, start);
      if (eof) {
        if (!pending[i].empty()) {
          std::lock_guard<std::mutex> lock(stderrMutex());
          std::fprintf(stderr, "[%s] (unterminated) %s\n", name_.c_str(), pending[i].c_str());
        }
        close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
    cv_.notify_all();
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

size_t Process::lineCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_.size();
}

std::vector<Line> Process::linesFrom(size_t from) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (from >= lines_.size()) return {};
  return std::vector<Line>(lines_.begin() + static_cast<ptrdiff_t>(from), lines_.end());
}

Line Process::lineAt(size_t index) const {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_.at(index);
}

std::optional<size_t> Process::waitLine(const std::function<bool(const Line&)>& pred,
                                        Millis timeout, size_t from) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  size_t next = from;
  for (;;) {
    for (; next < lines_.size(); ++next) {
      if (pred(lines_[next])) return next;
    }
    if (closed_) return std::nullopt;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      for (; next < lines_.size(); ++next) {
        if (pred(lines_[next])) return next;
      }
      return std::nullopt;
    }
  }
}

bool Process::stdoutClosed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

std::string Process::transcript(size_t maxLines) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string s = "---- last stdout lines of " + name_ + " (pid " + std::to_string(pid_) + ")\n";
  const size_t start = lines_.size() > maxLines ? lines_.size() - maxLines : 0;
  for (size_t i = start; i < lines_.size(); ++i) s += "  " + lines_[i].text + "\n";
  return s;
}

bool Process::signal(int sig) {
  if (pid_ <= 0 || reaped_) return false;
  return ::kill(pid_, sig) == 0;
}

bool Process::waitExit(Millis timeout) {
  if (pid_ <= 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reaped_) {
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = st;
      break;
    }
    if (r < 0 && errno != EINTR) return false;  // not our child any more
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(2));
  }
  return true;
}

bool Process::waitStopped(Millis timeout) {
  if (pid_ <= 0 || reaped_) return false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG | WUNTRACED);
    if (r == pid_) {
      if (WIFSTOPPED(st)) return true;
      reaped_ = true;  // it exited instead
      status_ = st;
      return false;
    }
    if (r < 0 && errno != EINTR) return false;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(2));
  }
}

bool Process::exitedNormally() const { return reaped_ && WIFEXITED(status_); }

int Process::exitCode() const { return exitedNormally() ? WEXITSTATUS(status_) : -1; }

bool Process::killedBySignal(int sig) const {
  return reaped_ && WIFSIGNALED(status_) && WTERMSIG(status_) == sig;
}

std::string Process::describeExit() const {
  if (!reaped_) return "still running";
  if (WIFEXITED(status_)) return "exited with code " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return std::string("killed by ") + strsignal(WTERMSIG(status_));
  return "unknown wait status " + std::to_string(status_);
}

void Process::killAndReap() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, SIGKILL);  // also ends a stopped process
  int st = 0;
  pid_t r;
  while ((r = waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  status_ = r == pid_ ? st : 0;
}

// ---- free helpers ------------------------------------------------------------

bool waitUntil(const std::function<bool()>& cond, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(10));
  }
}

int runCommand(const std::vector<std::string>& argv, Millis timeout) {
  Process p(argv.empty() ? "cmd" : argv[0], argv);
  if (!p.ok()) {
    std::fprintf(stderr, "runCommand: %s\n", p.startError().c_str());
    return -1;
  }
  if (!p.waitExit(timeout)) return -1;  // the destructor kills it
  p.waitLine([](const Line&) { return false; }, Millis(1000));  // returns at stdout EOF
  for (const Line& l : p.lines()) {
    std::fprintf(stderr, "[%s] %s\n", p.name().c_str(), l.text.c_str());
  }
  return p.exitCode();
}

std::string findProgram(const std::string& program) {
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/local/sbin";
  std::istringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// ---- InProcessMaster ------------------------------------------------------------

InProcessMaster::InProcessMaster(uint32_t failureTimeoutMs, uint32_t heartbeatMs) {
  ecclMasterConfig_t cfg = ECCL_MASTER_CONFIG_INIT;
  cfg.listenAddress = "127.0.0.1";
  cfg.failureTimeoutMs = failureTimeoutMs;
  cfg.heartbeatIntervalMs = heartbeatMs;
  if (ecclMasterCreate(&cfg, &master_) != ecclSuccess) {
    std::fprintf(stderr, "ecclMasterCreate: %s\n", ecclGetLastError(nullptr));
    master_ = nullptr;
    return;
  }
  uint16_t port = 0;
  ecclMasterGetPort(master_, &port);
  address_ = "127.0.0.1:" + std::to_string(port);
}

InProcessMaster::~InProcessMaster() { ecclMasterDestroy(master_); }

}  // namespace eccl::fault
