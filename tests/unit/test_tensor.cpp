// Shapes: element counts never wrap around, whatever a file declared.
#include <gtest/gtest.h>

#include "samfast/error.h"
#include "samfast/tensor.h"

namespace samfast {
namespace {

TEST(Tensor, NumelOfRefusesNegativeAndOverflowingShapes) {
  EXPECT_EQ(numel_of({}), 1);
  EXPECT_EQ(numel_of({3, 0, 5}), 0);
  EXPECT_EQ(numel_of({int64_t{1} << 31, int64_t{1} << 31}), int64_t{1} << 62);
  try {
    numel_of({3, -1});
    ADD_FAILURE() << "a negative dimension was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "shape (3, -1) has a negative dimension");
  }
  try {
    numel_of({int64_t{1} << 32, int64_t{1} << 32});
    ADD_FAILURE() << "an overflowing shape was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "shape (4294967296, 4294967296) has more elements than fit in 64 bits");
  }
  // 2^62 elements fit in int64, their 2^64 bytes do not.
  EXPECT_THROW(Tensor::empty({int64_t{1} << 61, 2}), Error);
  EXPECT_THROW(Tensor::empty({-2}), Error);
}

}  // namespace
}  // namespace samfast
