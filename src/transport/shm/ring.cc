#include "transport/shm/ring.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <new>

#include "security/auth.h"

namespace eccl::transport::shm {

struct Ring::Header {
  std::array<std::byte, 16> nonce{};  // first: what the opener checks
  uint64_t capacity = 0;
  uint64_t writerBase = 0;  // where the writer mapped this header (its address space)
  std::atomic<uint32_t> remoteReads{0};  // 1: the reader can read the writer's memory
  alignas(64) std::atomic<uint64_t> head{0};   // bytes written (the writer's)
  std::atomic<uint32_t> dataSeq{0};            // futex: bumped when bytes were added
  std::atomic<uint32_t> readerWaiting{0};
  alignas(64) std::atomic<uint64_t> tail{0};   // bytes read (the reader's)
  std::atomic<uint32_t> spaceSeq{0};           // futex: bumped when bytes were taken
  std::atomic<uint32_t> writerWaiting{0};
  alignas(64) std::atomic<uint64_t> acked{0};  // remote payloads the reader copied
  std::atomic<uint32_t> ackSeq{0};             // futex: bumped with acked
  std::atomic<uint32_t> ackWaiting{0};
};
static_assert(sizeof(Ring::Header) <= Ring::kHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "the ring's indices must be address-free atomics");

namespace {

Status sysError(const char* what) {
  return error(ecclSystemError, fmt::format("shared-memory ring: {}: {}", what, std::strerror(errno)));
}

// Shared (not private) futexes: the word lives in a mapping of two processes.
void futexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::milliseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000),
              static_cast<long>((timeout.count() % 1000) * 1000000)};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futexWake(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

uint64_t namespaceInode(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

wire::HostIdentity readHostIdentity() {
  wire::HostIdentity id;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string text;
  std::getline(f, text);
  // A UUID: its 32 hex digits are the 16 bytes.
  size_t n = 0;
  for (size_t i = 0; i + 1 < text.size() && n < id.bootId.size();) {
    if (text[i] == '-') {
      ++i;
      continue;
    }
    id.bootId[n++] = static_cast<std::byte>(std::stoi(text.substr(i, 2), nullptr, 16));
    i += 2;
  }
  id.netNamespace = namespaceInode("/proc/self/ns/net");
  id.pidNamespace = namespaceInode("/proc/self/ns/pid");
  id.uid = static_cast<uint32_t>(::getuid());
  return id;
}

}  // namespace

const wire::HostIdentity& hostIdentity() {
  static const wire::HostIdentity id = readHostIdentity();
  return id;
}

Ring::Ring(Ring&& o) noexcept { *this = std::move(o); }

Ring& Ring::operator=(Ring&& o) noexcept {
  if (this != &o) {
    this->~Ring();
    base_ = std::exchange(o.base_, nullptr);
    mapped_ = std::exchange(o.mapped_, 0);
    capacity_ = std::exchange(o.capacity_, 0);
    fd_ = std::exchange(o.fd_, -1);
    index_ = std::exchange(o.index_, 0);
    writerPid_ = std::exchange(o.writerPid_, 0);
  }
  return *this;
}

Ring::~Ring() {
  if (base_ != nullptr) ::munmap(base_, mapped_);
  base_ = nullptr;
  closeDescriptor();
}

void Ring::closeDescriptor() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Ring> Ring::create(uint64_t bytes, wire::ShmOffer* offer) {
  if (bytes < wire::kMinShmRingBytes || bytes > wire::kMaxShmRingBytes || (bytes & (bytes - 1)) != 0) {
    return error(ecclInvalidArgument, fmt::format("shared-memory ring of {} bytes (a power of two "
                                                  "from {} to {})", bytes, wire::kMinShmRingBytes,
                                                  wire::kMaxShmRingBytes));
  }
  Ring r;
  r.fd_ = ::memfd_create("eccl-link", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r.fd_ < 0) return sysError("memfd_create");
  r.mapped_ = kHeaderBytes + bytes;
  if (::ftruncate(r.fd_, static_cast<off_t>(r.mapped_)) != 0) return sysError("ftruncate");
  if (::fcntl(r.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return sysError("sealing the memfd");
  }
  void* p = ::mmap(nullptr, r.mapped_, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_, 0);
  if (p == MAP_FAILED) return sysError("mmap");
  r.base_ = static_cast<std::byte*>(p);
  r.capacity_ = bytes;
  Result<security::Nonce> nonce = security::randomNonce();
  if (!nonce) return nonce.status();
  Header* h = new (r.base_) Header();
  std::copy_n(nonce->begin(), h->nonce.size(), h->nonce.begin());
  h->capacity = bytes;
  h->writerBase = reinterpret_cast<uintptr_t>(r.base_);
  offer->host = hostIdentity();
  offer->pid = static_cast<uint32_t>(::getpid());
  offer->fd = static_cast<uint32_t>(r.fd_);
  offer->ringBytes = bytes;
  offer->nonce = h->nonce;
  return r;
}

Result<Ring> Ring::open(const wire::ShmOffer& offer, bool remoteReads) {
  if (!(offer.host == hostIdentity())) {
    return error(ecclUnsupported, "the dialler is on another host, or in another network or pid "
                                  "namespace, or another user");
  }
  Ring r;
  const std::string path = fmt::format("/proc/{}/fd/{}", offer.pid, offer.fd);
  // Whatever the descriptor turns out to be, opening it must not block (a
  // FIFO) or make it this process's terminal: the checks below refuse it.
  r.fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (r.fd_ < 0) {
    return error(ecclUnsupported, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  }
  // Sealed against shrinking, and of the size offered: the mapping cannot fault.
  const int seals = ::fcntl(r.fd_, F_GET_SEALS);
  struct stat st {};
  r.mapped_ = kHeaderBytes + offer.ringBytes;
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0 || ::fstat(r.fd_, &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != r.mapped_) {
    return error(ecclUnsupported, fmt::format("{} is not a sealed ring of {} bytes", path,
                                              offer.ringBytes));
  }
  void* p = ::mmap(nullptr, r.mapped_, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_, 0);
  if (p == MAP_FAILED) return sysError("mmap");
  r.base_ = static_cast<std::byte*>(p);
  r.closeDescriptor();
  r.capacity_ = offer.ringBytes;
  const Header* h = r.header();
  if (h->nonce != offer.nonce || h->capacity != offer.ringBytes ||
      h->head.load(std::memory_order_acquire) != 0 || h->tail.load(std::memory_order_acquire) != 0) {
    return error(ecclUnsupported, fmt::format("{} is not the ring offered (nonce or state differ)", path));
  }
  // Whether this process may read the writer's memory (process_vm_readv: the
  // same user, and no ptrace restriction in the way): the nonce at the
  // writer's own address of the header says.
  r.writerPid_ = static_cast<pid_t>(offer.pid);
  std::array<std::byte, 16> seen{};
  if (remoteReads && r.readRemote(h->writerBase, seen.data(), seen.size()).isOk() &&
      seen == offer.nonce) {
    r.header()->remoteReads.store(1, std::memory_order_release);
  }
  return r;
}

Result<size_t> Ring::write(const std::byte* src, size_t n) {
  Header* h = header();
  const uint64_t tail = h->tail.load(std::memory_order_acquire);
  if (tail > index_ || index_ - tail > capacity_) {
    return error(ecclPeerLost, fmt::format("shared-memory ring: the reader's index {} does not fit "
                                           "the {} bytes written", tail, index_));
  }
  const size_t k = static_cast<size_t>(std::min<uint64_t>(n, capacity_ - (index_ - tail)));
  if (k == 0) return size_t{0};
  const size_t pos = static_cast<size_t>(index_ & (capacity_ - 1));
  const size_t first = std::min<size_t>(k, capacity_ - pos);
  std::memcpy(data() + pos, src, first);
  std::memcpy(data(), src + first, k - first);
  index_ += k;
  h->head.store(index_, std::memory_order_seq_cst);
  if (h->readerWaiting.load(std::memory_order_seq_cst) != 0) {
    h->dataSeq.fetch_add(1, std::memory_order_seq_cst);
    futexWake(&h->dataSeq);
  }
  return k;
}

Result<size_t> Ring::read(std::byte* out, size_t n) {
  Header* h = header();
  const uint64_t head = h->head.load(std::memory_order_acquire);
  if (head < index_ || head - index_ > capacity_) {
    return error(ecclPeerLost, fmt::format("shared-memory ring: the writer's index {} does not fit "
                                           "the {} bytes read", head, index_));
  }
  const size_t k = static_cast<size_t>(std::min<uint64_t>(n, head - index_));
  if (k == 0) return size_t{0};
  const size_t pos = static_cast<size_t>(index_ & (capacity_ - 1));
  const size_t first = std::min<size_t>(k, capacity_ - pos);
  std::memcpy(out, data() + pos, first);
  std::memcpy(out + first, data(), k - first);
  index_ += k;
  h->tail.store(index_, std::memory_order_seq_cst);
  if (h->writerWaiting.load(std::memory_order_seq_cst) != 0) {
    h->spaceSeq.fetch_add(1, std::memory_order_seq_cst);
    futexWake(&h->spaceSeq);
  }
  return k;
}

void Ring::waitForSpace(std::chrono::milliseconds timeout) {
  Header* h = header();
  const uint32_t seq = h->spaceSeq.load(std::memory_order_seq_cst);
  h->writerWaiting.store(1, std::memory_order_seq_cst);
  if (index_ - h->tail.load(std::memory_order_seq_cst) >= capacity_) futexWait(&h->spaceSeq, seq, timeout);
  h->writerWaiting.store(0, std::memory_order_relaxed);
}

void Ring::waitForData(std::chrono::milliseconds timeout) {
  Header* h = header();
  const uint32_t seq = h->dataSeq.load(std::memory_order_seq_cst);
  h->readerWaiting.store(1, std::memory_order_seq_cst);
  if (h->head.load(std::memory_order_seq_cst) == index_) futexWait(&h->dataSeq, seq, timeout);
  h->readerWaiting.store(0, std::memory_order_relaxed);
}

bool Ring::remoteReads() const {
  return header()->remoteReads.load(std::memory_order_acquire) != 0;
}

Status Ring::readRemote(uint64_t address, std::byte* out, size_t n) const {
  size_t done = 0;
  while (done < n) {
    iovec local{out + done, n - done};
    iovec remote{reinterpret_cast<void*>(address + done), n - done};
    const ssize_t k = ::process_vm_readv(writerPid_, &local, 1, &remote, 1, 0);
    if (k <= 0) {
      return error(ecclPeerLost, fmt::format("reading {} bytes of process {}: {}", n - done, writerPid_,
                                             k < 0 ? std::strerror(errno) : "nothing read"));
    }
    done += static_cast<size_t>(k);
  }
  return Status::ok();
}

void Ring::ack() {
  Header* h = header();
  h->acked.fetch_add(1, std::memory_order_seq_cst);
  if (h->ackWaiting.load(std::memory_order_seq_cst) != 0) {
    h->ackSeq.fetch_add(1, std::memory_order_seq_cst);
    futexWake(&h->ackSeq);
  }
}

uint64_t Ring::acked() const { return header()->acked.load(std::memory_order_acquire); }

void Ring::waitForAck(uint64_t want, std::chrono::milliseconds timeout) {
  Header* h = header();
  const uint32_t seq = h->ackSeq.load(std::memory_order_seq_cst);
  h->ackWaiting.store(1, std::memory_order_seq_cst);
  if (h->acked.load(std::memory_order_seq_cst) < want) futexWait(&h->ackSeq, seq, timeout);
  h->ackWaiting.store(0, std::memory_order_relaxed);
}

void Ring::wakeReader() {
  Header* h = header();
  h->dataSeq.fetch_add(1, std::memory_order_seq_cst);
  futexWake(&h->dataSeq);
}

}  // namespace eccl::transport::shm
