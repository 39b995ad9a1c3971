// A one-way byte ring in memory shared by two processes of one host: the
// shared-memory path of a link between peers on the same host (shm/link.h).
//
// The dialler creates it as a sealed memfd (it cannot grow or shrink, so the
// other side's mapping never faults) and offers it in the link's handshake
// (wire::ShmOffer); the acceptor opens it as /proc/<pid>/fd/<fd>, maps it and
// checks the nonce at its start. A memfd has no name: nothing is left in
// /dev/shm or anywhere else when either process dies, and the memory goes
// once both have unmapped it. Each link of each epoch has a ring of its own,
// so no frame of an old epoch can be read from a new link.
//
// No lock is shared between the processes: the writer owns `head`, the reader
// `tail` (byte counts that only grow), each publishes with a release store
// and reads the other's with an acquire load. A side that has to wait says so
// in a flag and sleeps on a futex word with a short timeout, so a dead or
// stopped peer never holds it; the other side bumps that word and wakes it.
// Neither trusts what the other wrote: indices that do not add up break the
// link, and frames are decoded as from a socket.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <sys/types.h>

#include "common/status.h"
#include "wire/data.h"

namespace eccl::transport::shm {

// This process's wire::HostIdentity (read once).
const wire::HostIdentity& hostIdentity();

class Ring {
 public:
  static constexpr size_t kHeaderBytes = 4096;

  // A new ring of `bytes` (a power of two) and the offer naming it.
  static Result<Ring> create(uint64_t bytes, wire::ShmOffer* offer);
  // Maps the ring `offer` names; ecclUnsupported when it is not on this host
  // or cannot be opened (the link stays on TCP). `remoteReads` false: payloads
  // always travel through the ring (tests of that path).
  static Result<Ring> open(const wire::ShmOffer& offer, bool remoteReads = true);

  Ring() = default;
  Ring(Ring&& o) noexcept;
  Ring& operator=(Ring&& o) noexcept;
  ~Ring();

  // The creator's descriptor is only needed until the other side opened it.
  void closeDescriptor();

  // Writer: copies up to `n` bytes in (what fits), publishes them and wakes a
  // waiting reader; returns how many. An error when the reader's index is
  // impossible.
  Result<size_t> write(const std::byte* data, size_t n);
  // Reader: copies up to `n` bytes out and frees their space.
  Result<size_t> read(std::byte* out, size_t n);
  // Sleeps until the reader took bytes (writer) or the writer added some
  // (reader), or `timeout`.
  void waitForSpace(std::chrono::milliseconds timeout);
  void waitForData(std::chrono::milliseconds timeout);
  // Wakes this side's own waiter (a destructor stopping its reader thread).
  void wakeReader();

  // Payloads read straight from the writer's memory (one copy instead of two,
  // where the reader may: process_vm_readv, checked when the ring is opened).
  // The writer puts the payload's address in the ring and waits until the
  // reader acked it; the reader copies it out and acks.
  bool remoteReads() const;
  Status readRemote(uint64_t address, std::byte* out, size_t n) const;  // reader
  void ack();                                                            // reader
  uint64_t acked() const;                                                // writer
  void waitForAck(uint64_t want, std::chrono::milliseconds timeout);     // writer

  uint64_t capacity() const { return capacity_; }

  struct Header;  // the shared layout (ring.cc)

 private:
  Header* header() const { return reinterpret_cast<Header*>(base_); }
  std::byte* data() const { return base_ + kHeaderBytes; }

  std::byte* base_ = nullptr;
  size_t mapped_ = 0;
  uint64_t capacity_ = 0;
  int fd_ = -1;
  // Our own index, kept here: the shared copy is only published.
  uint64_t index_ = 0;
  pid_t writerPid_ = 0;  // the reader's: whose memory remote payloads are in
};

}  // namespace eccl::transport::shm
