// The shared-memory ring (transport/shm/ring.h): bytes arrive in order across
// the wrap, a full ring takes nothing, and a ring is only opened by a process
// of the same host that names the right descriptor and nonce.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fcntl.h>

#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "transport/shm/ring.h"

namespace eccl::transport::shm {
namespace {

constexpr uint64_t kBytes = wire::kMinShmRingBytes;

// The byte count of a ring call that must succeed.
size_t moved(Result<size_t> r) {
  EXPECT_TRUE(r.hasValue()) << r.status().message();
  return r.hasValue() ? std::move(r).value() : 0;
}

TEST(ShmRing, BytesArriveInOrderAcrossTheWrap) {
  wire::ShmOffer offer;
  Result<Ring> writer = Ring::create(kBytes, &offer);
  ASSERT_TRUE(writer.hasValue()) << writer.status().message();
  Result<Ring> reader = Ring::open(offer);
  ASSERT_TRUE(reader.hasValue()) << reader.status().message();
  writer->closeDescriptor();

  // 40 ring lengths of bytes in odd-sized pieces, written and read by two threads.
  std::vector<std::byte> in(40 * kBytes + 12345);
  std::mt19937 rng(7);
  for (auto& b : in) b = static_cast<std::byte>(rng());
  std::thread w([&] {
    std::mt19937 sizes(1);
    size_t at = 0;
    while (at < in.size()) {
      const size_t want = std::min<size_t>(in.size() - at, 1 + sizes() % (kBytes / 3));
      Result<size_t> k = writer->write(in.data() + at, want);
      ASSERT_TRUE(k.hasValue());
      at += *k;
      if (*k == 0) writer->waitForSpace(std::chrono::milliseconds(50));
    }
  });
  std::vector<std::byte> out(in.size());
  std::mt19937 sizes(2);
  size_t at = 0;
  while (at < out.size()) {
    const size_t want = std::min<size_t>(out.size() - at, 1 + sizes() % (kBytes / 5));
    Result<size_t> k = reader->read(out.data() + at, want);
    ASSERT_TRUE(k.hasValue());
    at += *k;
    if (*k == 0) reader->waitForData(std::chrono::milliseconds(50));
  }
  w.join();
  EXPECT_EQ(in, out);
}

TEST(ShmRing, AFullRingTakesNothingUntilRead) {
  wire::ShmOffer offer;
  Result<Ring> writer = Ring::create(kBytes, &offer);
  ASSERT_TRUE(writer.hasValue());
  Result<Ring> reader = Ring::open(offer);
  ASSERT_TRUE(reader.hasValue());
  std::vector<std::byte> buf(kBytes + 100, std::byte{1});
  EXPECT_EQ(moved(writer->write(buf.data(), buf.size())), kBytes);
  EXPECT_EQ(moved(writer->write(buf.data(), 1)), 0u);
  const auto start = std::chrono::steady_clock::now();
  writer->waitForSpace(std::chrono::milliseconds(30));  // nobody reads: times out
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(25));
  EXPECT_EQ(moved(reader->read(buf.data(), 10)), 10u);
  EXPECT_EQ(moved(writer->write(buf.data(), 100)), 10u);
}

TEST(ShmRing, OpensOnlyTheRingOfferedOnThisHost) {
  wire::ShmOffer offer;
  Result<Ring> writer = Ring::create(kBytes, &offer);
  ASSERT_TRUE(writer.hasValue());
  EXPECT_EQ(offer.host, hostIdentity());
  EXPECT_EQ(offer.pid, static_cast<uint32_t>(::getpid()));

  wire::ShmOffer other = offer;
  other.host.netNamespace ^= 1;  // a peer in another network namespace
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  other = offer;
  other.host.bootId[0] ^= std::byte{1};  // another machine
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  other = offer;
  other.nonce[0] ^= std::byte{1};  // the right descriptor, the wrong ring
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  other = offer;
  other.ringBytes *= 2;  // not the size of the memfd
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  other = offer;
  other.fd = 0;  // stdin: not a sealed ring
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);

  // A plain (unsealed) file of the right size at the named descriptor: refused.
  const int fd = ::memfd_create("not-a-ring", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(Ring::kHeaderBytes + kBytes)), 0);
  other = offer;
  other.fd = static_cast<uint32_t>(fd);
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  ::close(fd);

  // A pipe at the named descriptor: opening it neither blocks nor passes.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  other = offer;
  other.fd = static_cast<uint32_t>(fds[0]);
  EXPECT_EQ(Ring::open(other).status().code(), ecclUnsupported);
  ::close(fds[0]);
  ::close(fds[1]);

  writer->closeDescriptor();  // after this the offer names nothing
  EXPECT_EQ(Ring::open(offer).status().code(), ecclUnsupported);
}

TEST(ShmRing, AnImpossibleIndexBreaksTheReader) {
  wire::ShmOffer offer;
  Result<Ring> writer = Ring::create(kBytes, &offer);
  ASSERT_TRUE(writer.hasValue());
  Result<Ring> reader = Ring::open(offer);
  ASSERT_TRUE(reader.hasValue());
  // A second mapping of the memfd plays a writer that publishes a head
  // further ahead than the ring holds (the header's 64-byte aligned head
  // index sits at offset 64).
  const std::string path = "/proc/self/fd/" + std::to_string(offer.fd);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, Ring::kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::vector<std::byte> buf(16);
  ASSERT_EQ(moved(writer->write(buf.data(), buf.size())), buf.size());
  auto* head = reinterpret_cast<std::atomic<uint64_t>*>(static_cast<std::byte*>(p) + 64);
  ASSERT_EQ(head->load(), buf.size());  // the layout this test assumes
  head->store(kBytes * 3);
  Result<size_t> k = reader->read(buf.data(), buf.size());
  EXPECT_FALSE(k.hasValue());
  EXPECT_EQ(k.status().code(), ecclPeerLost);
  ::munmap(p, Ring::kHeaderBytes);
  ::close(fd);
}

}  // namespace
}  // namespace eccl::transport::shm
