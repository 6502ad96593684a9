// A dense, contiguous tensor with shared storage (a view plus a reference count). Host tensors are
// fp32, or uint8 for binary masks (0/1, as upstream's bool masks; 4x less to copy and to keep); a
// device backend makes tensors whose data points into device memory, in fp32 or a 16-bit type,
// which only that backend reads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace samfast {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "(1, 256, 64, 64)"
[[noreturn]] void throw_bad_shape(const Shape& s);  // numel_of's error, kept out of line
[[noreturn]] void throw_bad_dim(int i, const Shape& s);  // Tensor::dim's

// The element count; a negative dimension or a count past int64 (a shape read from a damaged
// file) throws samfast::Error rather than wrapping around.
inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) throw_bad_shape(s);
  return n;
}

enum class Device { CPU, CUDA };
// F8E4M3, I8: quantised weights of a backend (--precision fp8 on a GPU, int8 on the CPU)
enum class DType { F32, BF16, F16, U8, F8E4M3, I8 };
inline size_t element_size(DType t) {
  return t == DType::F32 ? 4 : t == DType::U8 || t == DType::F8E4M3 || t == DType::I8 ? 1 : 2;
}

struct Tensor {
  Shape shape;
  std::shared_ptr<float[]> storage;
  float* data = nullptr;  // host fp32 data (ptr<uint8_t>() for U8); for a device tensor, its device address
  Device device = Device::CPU;
  DType dtype = DType::F32;

  static Tensor empty(Shape shape, DType dtype = DType::F32);  // host fp32 or U8
  static Tensor zeros(Shape shape);
  static Tensor from(Shape shape, const std::vector<float>& values);

  int64_t numel() const { return numel_of(shape); }
  int64_t dim(int i) const {  // i < 0 counts from the end
    const int k = i < 0 ? i + ndim() : i;
    if (k < 0 || k >= ndim()) throw_bad_dim(i, shape);
    return shape[size_t(k)];
  }
  int ndim() const { return static_cast<int>(shape.size()); }
  bool defined() const { return data != nullptr; }
  bool on_host() const { return device == Device::CPU; }
  size_t nbytes() const { return element_size(dtype) * static_cast<size_t>(numel()); }
  template <class T>
  T* ptr() const { return reinterpret_cast<T*>(data); }
  // Same storage, new shape with the same element count.
  Tensor view(Shape new_shape) const;
  // Item i of dim 0, sharing storage (no copy): a (N, ...) tensor -> (...).
  Tensor item(int64_t i) const;
  Tensor clone() const;  // (an undefined tensor's clone is undefined)
};

}  // namespace samfast
