// The ceiling ECCL's TCP transport works under on this machine: raw loopback
// TCP throughput between two processes (one stream, 1 MiB writes, the
// receiver reading with MSG_WAITALL, nothing else). Compare eccl-bench's
// aggregate traffic against it, not against memory bandwidth.
//
//   build/bench/loopback_tcp [GiB to send, default 1]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  const size_t total = (argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1) << 30;
  const size_t chunk = 1 << 20;
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("loopback_tcp: listen");
    return 1;
  }
  const pid_t child = ::fork();
  if (child == 0) {  // sender
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(1);
    std::vector<char> buf(chunk, 1);
    for (size_t sent = 0; sent < total;) {
      const ssize_t n = ::write(s, buf.data(), chunk);
      if (n <= 0) _exit(1);
      sent += static_cast<size_t>(n);
    }
    ::close(s);
    _exit(0);
  }
  const int c = ::accept(listener, nullptr, nullptr);
  std::vector<char> buf(chunk);
  const auto t0 = std::chrono::steady_clock::now();
  size_t got = 0;
  for (ssize_t n; (n = ::recv(c, buf.data(), chunk, MSG_WAITALL)) > 0;) got += static_cast<size_t>(n);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int status = 0;
  ::waitpid(child, &status, 0);
  std::printf("loopback TCP, 1 stream, %zu MiB: %.2f GB/s\n", got >> 20, static_cast<double>(got) / s / 1e9);
  return got == total ? 0 : 1;
}
