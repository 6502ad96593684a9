// A dense, contiguous fp32 host tensor with shared storage (a view plus a reference count).
// The CPU backend works on these; a device backend keeps its own buffers behind the same shapes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace samfast {

using Shape = std::vector<int64_t>;

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
std::string shape_str(const Shape& s);  // "(1, 256, 64, 64)"

struct Tensor {
  Shape shape;
  std::shared_ptr<float[]> storage;
  float* data = nullptr;

  static Tensor empty(Shape shape);
  static Tensor zeros(Shape shape);
  static Tensor from(Shape shape, const std::vector<float>& values);

  int64_t numel() const { return numel_of(shape); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  int ndim() const { return static_cast<int>(shape.size()); }
  bool defined() const { return data != nullptr; }
  // Same storage, new shape with the same element count.
  Tensor view(Shape new_shape) const;
  Tensor clone() const;
};

}  // namespace samfast
