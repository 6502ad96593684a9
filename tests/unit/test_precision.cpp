// Precision names: one list, read and written back the same way.
#include <gtest/gtest.h>

#include "error_of.h"
#include "samfast/precision.h"

namespace samfast {
namespace {

using testing::error_of;

TEST(Precision, NamesRoundTrip) {
  EXPECT_EQ(precision_names(), (std::vector<std::string>{"auto", "fp32", "bf16", "fp16", "fp8", "int8"}));
  for (const std::string& name : precision_names()) EXPECT_EQ(to_string(parse_precision(name)), name);
  EXPECT_EQ(parse_precision("bf16"), Precision::BF16);
}

TEST(Precision, UnknownNameListsTheValidOnes) {
  EXPECT_EQ(error_of([] { parse_precision("int4"); }),
            "unknown precision 'int4': expected auto, fp32, bf16, fp16, fp8 or int8");
}

}  // namespace
}  // namespace samfast
