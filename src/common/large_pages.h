// Buffers of a megabyte and more on transparent huge pages, where the kernel
// offers them (THP "always" or "madvise"). A same-host peer reads such a
// buffer with process_vm_readv (transport/shm/), which looks up and pins each
// of its pages per call: on a huge page that is one page-table entry per
// 2 MiB instead of one per 4 KiB, and the copies into and out of it miss the
// TLB less. Each such buffer is a mapping of its own, aligned to and rounded
// up to whole huge pages (so a 1 MiB buffer takes 2 MiB), and unmapped when
// freed. Allocators made with `large` false, and buffers under a megabyte,
// use the ordinary heap. Without THP the advice is ignored: small pages.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <vector>

namespace eccl {

template <class T>
class LargePageAllocator {
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "the ordinary heap's alignment");

 public:
  using value_type = T;
  // A buffer keeps the allocator it was made with, whatever it is moved to.
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  static constexpr size_t kHugePage = 2 << 20;  // x86-64's (elsewhere only the gain is lost)
  static constexpr size_t kMinBytes = 1 << 20;

  LargePageAllocator() = default;
  explicit LargePageAllocator(bool large) : large_(large) {}
  template <class U>
  LargePageAllocator(const LargePageAllocator<U>& o) : large_(o.large()) {}  // NOLINT: rebinding

  bool large() const { return large_; }

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (!onHugePages(bytes)) return static_cast<T*>(::operator new(bytes));
    // Map one huge page more than needed, then unmap the unaligned ends.
    const size_t size = rounded(bytes);
    void* m = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(m);
    const uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
    if (aligned > start) ::munmap(m, aligned - start);
    if (const size_t tail = start + kHugePage - aligned; tail > 0) {
      ::munmap(reinterpret_cast<void*>(aligned + size), tail);
    }
    ::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);  // advice only
    return reinterpret_cast<T*>(aligned);
  }
  void deallocate(T* p, size_t n) {
    if (onHugePages(n * sizeof(T))) {
      ::munmap(p, rounded(n * sizeof(T)));
    } else {
      ::operator delete(p);
    }
  }
  template <class U>
  bool operator==(const LargePageAllocator<U>& o) const { return large_ == o.large(); }

 private:
  static size_t rounded(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }
  bool onHugePages(size_t bytes) const { return large_ && bytes >= kMinBytes; }
  bool large_ = false;
};

// A byte buffer; on huge pages once it is a megabyte or more when its
// allocator says so (LargePageBytes(LargePageAllocator<std::byte>(true))).
using LargePageBytes = std::vector<std::byte, LargePageAllocator<std::byte>>;

}  // namespace eccl
