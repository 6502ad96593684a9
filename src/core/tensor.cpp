#include "samfast/tensor.h"

#include <algorithm>
#include <cstring>

#include "samfast/error.h"

namespace samfast {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

Tensor Tensor::empty(Shape shape) {
  for (int64_t d : shape)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape = std::move(shape);
  t.storage = std::shared_ptr<float[]>(new float[std::max<int64_t>(1, numel_of(t.shape))]);
  t.data = t.storage.get();
  return t;
}

Tensor Tensor::zeros(Shape shape) {
  Tensor t = empty(std::move(shape));
  std::fill(t.data, t.data + t.numel(), 0.0f);
  return t;
}

Tensor Tensor::from(Shape shape, const std::vector<float>& values) {
  Tensor t = empty(std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw Error("Tensor::from: " + std::to_string(values.size()) + " values for shape " + shape_str(t.shape));
  std::copy(values.begin(), values.end(), t.data);
  return t;
}

Tensor Tensor::view(Shape new_shape) const {
  if (numel_of(new_shape) != numel())
    throw Error("cannot view " + shape_str(shape) + " as " + shape_str(new_shape));
  Tensor t = *this;
  t.shape = std::move(new_shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape);
  std::memcpy(t.data, data, sizeof(float) * numel());
  return t;
}

}  // namespace samfast
