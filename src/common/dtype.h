// Data types, reduction ops and codecs of the C API: sizes, names, parsing.
//
// A C caller can pass any int as one of these enums, and in C++ a value
// outside the enum's range is undefined behaviour (clang's UBSan flags it), so
// the API layer checks the int with isValidDtype / isValidOp before anything
// treats it as the enum. The functions below still tolerate bad values.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "eccl/eccl.h"

namespace eccl {

// Bytes per element; 0 for an invalid dtype.
size_t dtypeSize(ecclDataType_t dtype);

// Canonical lower-case names ("int8", ..., "float16", "bfloat16", "float32",
// "float64"; "sum", "avg", "prod", "max", "min"). "invalid" when out of range.
// The strings are static.
const char* dtypeName(ecclDataType_t dtype);
const char* opName(ecclRedOp_t op);
// Codecs: "none", "fp16", "bf16", "uint8", "uint4".
const char* quantName(ecclQuantization_t quant);

bool isValidDtype(int dtype);
bool isValidOp(int op);
bool isValidQuant(int quant);

// Case-insensitive. Accepts the canonical names and common aliases:
// i8/u8/i16/u16/i32/u32/i64/u64, int (int32), uint/unsigned (uint32),
// f16/fp16/half, bf16, f32/fp32/float, f64/fp64/double.
std::optional<ecclDataType_t> parseDtype(std::string_view name);
// Canonical names plus add (sum), mean/average (avg), mul/product (prod).
std::optional<ecclRedOp_t> parseOp(std::string_view name);
// Canonical names plus float16/f16/half, bfloat16, u8/int8, u4/int4.
std::optional<ecclQuantization_t> parseQuant(std::string_view name);

}  // namespace eccl
