#include "common/dtype.h"

#include <array>
#include <cctype>

namespace eccl {
namespace {

struct DtypeInfo {
  size_t size;
  const char* name;
};

// Indexed by ecclDataType_t; the static_assert keeps it in step with eccl.h.
constexpr std::array<DtypeInfo, ecclNumTypes> kDtypes = {{
    {1, "int8"},
    {1, "uint8"},
    {2, "int16"},
    {2, "uint16"},
    {4, "int32"},
    {4, "uint32"},
    {8, "int64"},
    {8, "uint64"},
    {2, "float16"},
    {2, "bfloat16"},
    {4, "float32"},
    {8, "float64"},
}};
static_assert(kDtypes.size() == ecclNumTypes);

constexpr std::array<const char*, ecclNumOps> kOps = {"sum", "avg", "prod", "max", "min"};
static_assert(kOps.size() == ecclNumOps);

constexpr std::array<const char*, ecclNumQuantizations> kQuants = {"none", "fp16", "bf16",
                                                                  "uint8", "uint4"};
static_assert(kQuants.size() == ecclNumQuantizations);

template <typename E>
struct Alias {
  const char* name;
  E value;
};

constexpr Alias<ecclDataType_t> kDtypeAliases[] = {
    {"i8", ecclInt8},          {"u8", ecclUint8},         {"i16", ecclInt16},
    {"u16", ecclUint16},       {"i32", ecclInt32},        {"int", ecclInt32},
    {"u32", ecclUint32},       {"uint", ecclUint32},      {"unsigned", ecclUint32},
    {"i64", ecclInt64},        {"u64", ecclUint64},       {"f16", ecclFloat16},
    {"fp16", ecclFloat16},     {"half", ecclFloat16},     {"bf16", ecclBfloat16},
    {"f32", ecclFloat32},      {"fp32", ecclFloat32},     {"float", ecclFloat32},
    {"f64", ecclFloat64},      {"fp64", ecclFloat64},     {"double", ecclFloat64},
};

constexpr Alias<ecclRedOp_t> kOpAliases[] = {
    {"add", ecclSum}, {"mean", ecclAvg}, {"average", ecclAvg},
    {"mul", ecclProd}, {"product", ecclProd},
};

constexpr Alias<ecclQuantization_t> kQuantAliases[] = {
    {"float16", ecclQuantFloat16}, {"f16", ecclQuantFloat16},   {"half", ecclQuantFloat16},
    {"bfloat16", ecclQuantBfloat16}, {"u8", ecclQuantUint8},    {"int8", ecclQuantUint8},
    {"u4", ecclQuantUint4},        {"int4", ecclQuantUint4},
};

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return std::tolower(static_cast<unsigned char>(c)); };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace

bool isValidDtype(int dtype) { return dtype >= 0 && dtype < ecclNumTypes; }
bool isValidOp(int op) { return op >= 0 && op < ecclNumOps; }
bool isValidQuant(int quant) { return quant >= 0 && quant < ecclNumQuantizations; }

size_t dtypeSize(ecclDataType_t dtype) {
  return isValidDtype(dtype) ? kDtypes[static_cast<size_t>(dtype)].size : 0;
}

const char* dtypeName(ecclDataType_t dtype) {
  return isValidDtype(dtype) ? kDtypes[static_cast<size_t>(dtype)].name : "invalid";
}

const char* opName(ecclRedOp_t op) {
  return isValidOp(op) ? kOps[static_cast<size_t>(op)] : "invalid";
}

const char* quantName(ecclQuantization_t quant) {
  return isValidQuant(quant) ? kQuants[static_cast<size_t>(quant)] : "invalid";
}

std::optional<ecclDataType_t> parseDtype(std::string_view name) {
  for (size_t i = 0; i < kDtypes.size(); ++i) {
    if (equalsIgnoreCase(name, kDtypes[i].name)) return static_cast<ecclDataType_t>(i);
  }
  for (const auto& alias : kDtypeAliases) {
    if (equalsIgnoreCase(name, alias.name)) return alias.value;
  }
  return std::nullopt;
}

std::optional<ecclRedOp_t> parseOp(std::string_view name) {
  for (size_t i = 0; i < kOps.size(); ++i) {
    if (equalsIgnoreCase(name, kOps[i])) return static_cast<ecclRedOp_t>(i);
  }
  for (const auto& alias : kOpAliases) {
    if (equalsIgnoreCase(name, alias.name)) return alias.value;
  }
  return std::nullopt;
}

std::optional<ecclQuantization_t> parseQuant(std::string_view name) {
  for (size_t i = 0; i < kQuants.size(); ++i) {
    if (equalsIgnoreCase(name, kQuants[i])) return static_cast<ecclQuantization_t>(i);
  }
  for (const auto& alias : kQuantAliases) {
    if (equalsIgnoreCase(name, alias.name)) return alias.value;
  }
  return std::nullopt;
}

}  // namespace eccl
