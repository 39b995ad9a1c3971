// Little-endian, bounds-checked (de)serialization used by every message.
//
// Reader never reads past its span: each get* returns false once the input
// is short, and the decoder above turns that into a clear error. Strings and
// arrays carry a u32 length that is checked against what is left before any
// allocation, so a forged length cannot make us allocate gigabytes.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace eccl::wire {

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(uint16_t v) { le(v); }
  void u32(uint32_t v) { le(v); }
  void u64(uint64_t v) { le(v); }
  void i32(int32_t v) { le(static_cast<uint32_t>(v)); }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }
  template <size_t N>
  void fixed(const std::array<std::byte, N>& a) {
    out_.insert(out_.end(), a.begin(), a.end());
  }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  template <typename T>
  void le(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  std::vector<std::byte> out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}

  bool u8(uint8_t* v) { return le(v); }
  bool u16(uint16_t* v) { return le(v); }
  bool u32(uint32_t* v) { return le(v); }
  bool u64(uint64_t* v) { return le(v); }
  bool i32(int32_t* v) {
    uint32_t u = 0;
    if (!le(&u)) return false;
    *v = static_cast<int32_t>(u);
    return true;
  }
  bool str(std::string* s, size_t maxLen) {
    uint32_t n = 0;
    if (!u32(&n) || n > maxLen || n > remaining()) return false;
    s->assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  template <size_t N>
  bool fixed(std::array<std::byte, N>* a) {
    if (remaining() < N) return false;
    std::copy_n(in_.data() + pos_, N, a->begin());
    pos_ += N;
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }
  bool atEnd() const { return pos_ == in_.size(); }

 private:
  template <typename T>
  bool le(T* v) {
    if (remaining() < sizeof(T)) return false;
    T r = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      r |= static_cast<T>(static_cast<T>(in_[pos_ + i]) << (8 * i));
    }
    pos_ += sizeof(T);
    *v = r;
    return true;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

}  // namespace eccl::wire
