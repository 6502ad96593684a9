#include "samfast/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/size_cache.h"
#include "samfast/error.h"

namespace samfast {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

void throw_bad_shape(const Shape& s) {
  for (int64_t d : s)
    if (d < 0) throw Error("shape " + shape_str(s) + " has a negative dimension");
  throw Error("shape " + shape_str(s) + " has more elements than fit in 64 bits");
}

void throw_bad_dim(int i, const Shape& s) {
  throw InvalidArgument("dimension " + std::to_string(i) + " of a tensor of shape " + shape_str(s) + " does not exist");
}

namespace {

// Freed host buffers are kept by exact size and handed out again: a forward pass asks for the same
// sizes for every image, so after the first one no allocation reaches the OS and no fresh page is
// faulted in (with plain new/delete, glibc returns big blocks to the OS on every free).
class BufferPool {
 public:
  float* get(size_t bytes) {
    if (void* p = cache_.take(bytes)) return static_cast<float*>(p);
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw Error("out of host memory: could not allocate " + std::to_string(bytes) + " bytes");
    return static_cast<float*>(p);
  }
  void put(float* p, size_t bytes) {
    SizeCache::Buffers evicted;
    if (!cache_.keep(p, bytes, evicted)) std::free(p);
    for (auto& [q, n] : evicted) std::free(q);
  }

 private:
  SizeCache cache_{size_t(2) << 30};
};

BufferPool& pool() {
  static BufferPool* p = new BufferPool;  // never destroyed: tensors may outlive static destruction
  return *p;
}

}  // namespace

Tensor Tensor::empty(Shape shape, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::U8) throw Error("host tensors are fp32 or uint8");
  size_t bytes = 0;
  if (__builtin_mul_overflow(element_size(dtype), std::max<int64_t>(1, numel_of(shape)), &bytes) ||
      __builtin_add_overflow(bytes, size_t{63}, &bytes))
    throw Error("out of host memory: a tensor of shape " + shape_str(shape) + " needs more than 2^64 bytes");
  bytes = bytes / 64 * 64;
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  float* p = pool().get(bytes);
  t.storage = std::shared_ptr<float[]>(p, [bytes](float* q) { pool().put(q, bytes); });
  t.data = p;
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

Tensor Tensor::item(int64_t i) const {
  if (shape.empty() || i < 0 || i >= shape[0]) throw Error("item " + std::to_string(i) + " of " + shape_str(shape));
  Tensor t = *this;
  t.shape.erase(t.shape.begin());
  t.data = reinterpret_cast<float*>(reinterpret_cast<char*>(data) + i * numel_of(t.shape) * element_size(dtype));
  return t;
}

Tensor Tensor::clone() const {
  if (!defined()) return *this;
  if (!on_host()) throw Error("clone: " + shape_str(shape) + " is not a host tensor");
  Tensor t = empty(shape, dtype);
  std::memcpy(t.data, data, nbytes());
  return t;
}

}  // namespace samfast
