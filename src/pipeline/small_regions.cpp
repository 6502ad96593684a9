// Connected components written here rather than taken from OpenCV: libopencv-core pulls in GL, TBB
// and LAPACK for this one function, all of which would have to travel with the binary. What matters
// for exactness is the set of components (8-connectivity) and, for one tie-break, OpenCV's label
// order: its default algorithm for 8-connectivity (Spaghetti, a 2x2-block scan) numbers components by
// the first 2x2 block, in block raster order, that holds one of their pixels. A 2x2 block never holds
// two components (its pixels are pairwise 8-adjacent), so that order is a strict one.
#include "pipeline/small_regions.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "samfast/error.h"

namespace samfast {
namespace {

int find(std::vector<int>& parent, int x) {
  while (parent[x] != x) x = parent[x] = parent[parent[x]];
  return x;
}

// Labels 1..n of the 8-connected components of `on` pixels in OpenCV's order (0 = off); sizes[l].
int label_components(const std::vector<uint8_t>& on, int h, int w, std::vector<int>& labels, std::vector<int64_t>& sizes) {
  labels.assign(size_t(h) * w, 0);
  std::vector<int> parent{0};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * w + x;
      if (!on[i]) continue;
      int l = 0;
      auto join = [&](int ny, int nx) {
        if (ny < 0 || nx < 0 || nx >= w) return;
        const int m = labels[size_t(ny) * w + nx];
        if (!m) return;
        if (!l) {
          l = m;
        } else {
          const int a = find(parent, l), b = find(parent, m);
          if (a != b) parent[std::max(a, b)] = std::min(a, b);
        }
      };
      join(y, x - 1), join(y - 1, x - 1), join(y - 1, x), join(y - 1, x + 1);
      if (!l) {
        l = (int)parent.size();
        parent.push_back(l);
      }
      labels[i] = l;
    }
  // Final numbering by first 2x2 block in block raster order.
  std::vector<int> final_of(parent.size(), 0);
  int n = 0;
  for (int by = 0; by < h; by += 2)
    for (int bx = 0; bx < w; bx += 2)
      for (int dy = 0; dy < 2 && by + dy < h; ++dy)
        for (int dx = 0; dx < 2 && bx + dx < w; ++dx) {
          const int l = labels[size_t(by + dy) * w + bx + dx];
          if (!l) continue;
          const int r = find(parent, l);
          if (!final_of[r]) final_of[r] = ++n;
        }
  sizes.assign(size_t(n) + 1, 0);
  for (int& l : labels)
    if (l) {
      l = final_of[find(parent, l)];
      ++sizes[l];
    }
  return n;
}

}  // namespace

bool remove_small_regions(std::vector<uint8_t>& mask, int h, int w, double area_thresh, bool holes) {
  if (h < 0 || w < 0 || mask.size() != size_t(h) * size_t(w))
    throw InvalidArgument("remove_small_regions: a " + std::to_string(w) + "x" + std::to_string(h) + " mask needs " +
                std::to_string(int64_t(h) * w) + " bytes, got " + std::to_string(mask.size()));
  // ref: working_mask = (correct_holes ^ mask): holes are components of the background.
  std::vector<uint8_t> working(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) working[i] = (mask[i] != 0) != holes;
  std::vector<int> labels;
  std::vector<int64_t> sizes;
  const int n = label_components(working, h, w, labels, sizes);
  std::vector<uint8_t> fill(size_t(n) + 1, 0);  // ref: fill_labels; the result is isin(regions, fill_labels)
  bool any_small = false;
  for (int l = 1; l <= n; ++l) any_small |= double(sizes[l]) < area_thresh;
  if (!any_small) return false;
  if (holes) {
    fill[0] = 1;  // label 0 is the mask itself
    for (int l = 1; l <= n; ++l) fill[l] = double(sizes[l]) < area_thresh;
  } else {
    bool any = false;
    for (int l = 1; l <= n; ++l) any |= (fill[l] = double(sizes[l]) >= area_thresh);
    if (!any)  // every island is small: keep the largest (np.argmax: the first of equals)
      fill[std::max_element(sizes.begin() + 1, sizes.end()) - sizes.begin()] = 1;
  }
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = fill[labels[i]];
  return true;
}

}  // namespace samfast
