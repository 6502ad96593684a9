// The automatic mask generator's mask measures on the GPU (see backend/ops.h): only per-mask numbers
// and RLE run starts cross to the host, never a full-resolution mask.
#include <algorithm>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/postprocess.h"

namespace samfast {
namespace {

// Host copy of n elements of device memory (waits for the stream).
template <class T>
std::vector<T> to_host(const void* p, size_t n, cudaStream_t stream) {
  std::vector<T> v(n);
  if (n) CUDA_CHECK(cudaMemcpyAsync(v.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

}  // namespace

Ops::Later<Ops::MaskStats> CudaOps::mask_stats(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                               std::pair<int, int> size, float thr, float hi, float lo) {
  check_mask_planes(low_res, "mask_stats");
  expect(low_res, "mask_stats", "masks");
  const int64_t n = low_res.dim(0), L = low_res.dim(1);
  if (n == 0) return [] { return MaskStats{}; };
  Tensor stats = empty({6 * n}, DType::F32);  // int32 payload: 2 counts per plane, then 4 box corners per plane
  const size_t es = element_size(dt_);
  for (int64_t first = 0; first < n; first += 65535) {  // planes are the grid's z dimension
    const int64_t k = std::min<int64_t>(65535, n - first);
    SAMFAST_DISPATCH(dt_, T,
                     cuda::mask_stats<T>(reinterpret_cast<const T*>(low_res.ptr<char>() + es * first * L * L), k, (int)L,
                                         img_size, input_size.first, input_size.second, size.first, size.second, thr, hi,
                                         lo, stats.ptr<int>() + 2 * first, stats.ptr<int>() + 2 * n + 4 * first, ctx_->stream));
  }
  Later<Tensor> host = download_later(stats);  // fp32 tensors are copied bit for bit
  return [host, n] {
    const Tensor h = host();
    const int* v = reinterpret_cast<const int*>(h.data);
    MaskStats s;
    s.above_hi.resize(n), s.above_lo.resize(n), s.box.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const int* b = v + 2 * n + 4 * i;
      s.above_hi[i] = v[2 * i], s.above_lo[i] = v[2 * i + 1];
      s.box[i] = b[2] < 0 ? std::array<int, 4>{0, 0, 0, 0} : std::array<int, 4>{b[0], b[1], b[2], b[3]};
    }
    return s;
  };
}

std::vector<Rle> CudaOps::mask_rles(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                    std::pair<int, int> size, float thr, std::pair<int, int> offset_xy,
                                    std::pair<int, int> frame_size) {
  check_mask_planes(low_res, "mask_rles");
  expect(low_res, "mask_rles", "masks");
  const auto [h, w] = size;
  const auto [x0, y0] = offset_xy;
  const auto [H, W] = frame_size;
  check_mask_frame(size, offset_xy, frame_size);
  const int64_t n = low_res.dim(0), L = low_res.dim(1);
  std::vector<Rle> out(n);
  // Binary masks in chunks of at most ~256 MiB, so memory stays bounded whatever the mask count.
  const int64_t chunk = std::clamp<int64_t>((int64_t(256) << 20) / (int64_t(h) * w), 1, 65535);
  const size_t es = element_size(dt_);
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t k = std::min(chunk, n - first);
    Tensor bytes = empty({(k * h * w + 3) / 4}, DType::F32);  // uint8 payload
    Tensor per_column = empty({k, w}, DType::F32), totals = empty({2 * k}, DType::F32);  // int32 / int64
    SAMFAST_DISPATCH(dt_, T,
                     cuda::binary_masks<T>(reinterpret_cast<const T*>(low_res.ptr<char>() + es * first * L * L), k,
                                           (int)L, img_size, input_size.first, input_size.second, h, w, thr,
                                           bytes.ptr<uint8_t>(), ctx_->stream));
    cuda::count_run_starts(bytes.ptr<uint8_t>(), k, h, w, x0, y0, H, W, per_column.ptr<int>(), totals.ptr<int64_t>(),
                           ctx_->stream);
    const std::vector<int64_t> count = to_host<int64_t>(totals.data, k, ctx_->stream);
    std::vector<int64_t> base(k + 1, 0);
    for (int64_t i = 0; i < k; ++i) base[i + 1] = base[i] + count[i];
    Tensor base_dev = empty({2 * k}, DType::F32);
    CUDA_CHECK(cudaMemcpy(base_dev.data, base.data(), sizeof(int64_t) * k, cudaMemcpyHostToDevice));
    Tensor starts = empty({std::max<int64_t>(1, base[k])}, DType::F32);  // uint32 payload
    cuda::write_run_starts(bytes.ptr<uint8_t>(), k, h, w, x0, y0, H, W, per_column.ptr<int>(), base_dev.ptr<int64_t>(),
                           starts.ptr<uint32_t>(), ctx_->stream);
    const std::vector<uint32_t> s = to_host<uint32_t>(starts.data, base[k], ctx_->stream);
    for (int64_t i = 0; i < k; ++i) {
      Rle& r = out[first + i];
      r.height = H, r.width = W;
      const uint32_t* p = s.data() + base[i];
      const int64_t m = count[i];
      r.counts.resize(m + 1);
      uint32_t prev = 0;
      for (int64_t j = 0; j < m; ++j) r.counts[j] = p[j] - prev, prev = p[j];
      r.counts[m] = uint32_t(uint64_t(H) * W - prev);
    }
  }
  return out;
}

Tensor CudaOps::gather(const Tensor& x, const std::vector<int64_t>& select) {
  check_gather(x, select);
  expect(x, "gather", "input");
  const int64_t n = x.dim(0), inner = n ? x.numel() / n : 0;
  Shape s = x.shape;
  s[0] = (int64_t)select.size();
  Tensor y = empty(s);
  const size_t bytes = element_size(dt_) * inner;
  // Runs of consecutive indices become one copy each.
  for (size_t i = 0; i < select.size();) {
    size_t j = i + 1;
    while (j < select.size() && select[j] == select[j - 1] + 1 && select[j] < n) ++j;
    CUDA_CHECK(cudaMemcpyAsync(y.ptr<char>() + bytes * i, x.ptr<char>() + bytes * select[i], bytes * (j - i),
                               cudaMemcpyDeviceToDevice, ctx_->stream));
    i = j;
  }
  return y;
}

}  // namespace samfast
