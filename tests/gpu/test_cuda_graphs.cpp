// CUDA graphs (backend/cuda/graph.h): a recorded computation replays with new inputs (host or device)
// and gives what the eager run gives, bit for bit (the same kernels in the same order); callers own
// their outputs; a computation that cannot be recorded runs eagerly. Then the image encoder and the
// mask decoder of the tiny model, with graphs against without, over several images and prompt sets.
// Without a CUDA GPU every test is skipped.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "backend/cuda/cuda_ops.h"
#include "core/rng.h"
#include "gpu_available.h"
#include "samfast/model.h"

namespace samfast {
namespace {

Tensor random_host(Shape shape, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(std::move(shape));
  Rng rng{seed};
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = rng.uniform(lo, hi);
  return t;
}

void expect_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape, b.shape) << what;
  int64_t differ = 0;
  for (int64_t i = 0; i < a.numel(); ++i) differ += a.data[i] != b.data[i];
  EXPECT_EQ(differ, 0) << what << ": elements differing";
}

class CudaGraphsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  }
};

TEST_P(CudaGraphsTest, ReplaysWithNewInputs) {
  CudaOps gpu(0, precision_of(GetParam()));
  const Tensor w = gpu.upload(random_host({48, 32}, 1)), b = gpu.upload(random_host({48}, 2));
  const Tensor g = gpu.upload(random_host({48}, 3)), beta = gpu.upload(random_host({48}, 4));
  int calls = 0;
  const Ops::Computation fn = [&](const std::vector<Tensor>& in) {
    ++calls;
    Tensor h = gpu.linear(in[0], w, &b, Act::GELU, nullptr);
    h = gpu.layer_norm(h, g, beta, 1e-6f, Act::None);
    return std::vector<Tensor>{gpu.add(h, in[1]), gpu.slice(h, 1, 2)};
  };
  std::vector<Tensor> kept;  // outputs of earlier runs, which later replays must not overwrite
  std::vector<std::vector<Tensor>> expected;
  for (int run = 0; run < 5; ++run) {
    const Tensor x = random_host({2, 5, 32}, 10 + run), y = random_host({2, 5, 48}, 20 + run);
    const std::vector<Tensor> in = {gpu.upload(x), gpu.upload(y)};
    // x from the host (uploaded into the graph's own input buffer on a replay), y on the device
    const std::vector<Tensor> out = gpu.run_recorded("test", {x, in[1]}, fn);
    const int before = calls;
    const std::vector<Tensor> eager = fn(in);
    calls = before;
    ASSERT_EQ(out.size(), 2u);
    expected.push_back({gpu.download(eager[0]), gpu.download(eager[1])});
    kept.push_back(out[0]);
    kept.push_back(out[1]);
  }
  // Run 1 eager, run 2 recorded (fn runs once, during the capture), runs 3-5 replayed.
  EXPECT_EQ(calls, 2);
  for (int run = 0; run < 5; ++run) {
    expect_equal(gpu.download(kept[2 * run]), expected[run][0], "run " + std::to_string(run) + " output 0");
    expect_equal(gpu.download(kept[2 * run + 1]), expected[run][1], "run " + std::to_string(run) + " output 1");
  }
}

TEST_P(CudaGraphsTest, UnrecordableRunsEagerly) {
  CudaOps gpu(0, precision_of(GetParam()));
  int calls = 0;
  const Ops::Computation fn = [&](const std::vector<Tensor>& in) {
    ++calls;
    const Tensor host = gpu.download(in[0]);  // a host synchronisation: cannot be captured
    return std::vector<Tensor>{gpu.add(in[0], gpu.upload(host))};
  };
  for (int run = 0; run < 4; ++run) {
    const Tensor x = random_host({3, 7}, 30 + run);
    const Tensor out = gpu.download(gpu.run_recorded("unrecordable", {gpu.upload(x)}, fn)[0]);
    const Tensor xr = gpu.download(gpu.upload(x));  // in the backend's precision
    for (int64_t i = 0; i < x.numel(); ++i) ASSERT_NEAR(out.data[i], 2 * xr.data[i], 1e-2 * std::abs(xr.data[i]) + 1e-6);
  }
  EXPECT_EQ(calls, 5);  // every run, plus the failed recording
}

// Graphs of different shapes share the one arena (sized by the largest plan), each replay still
// gives the eager result, and outputs handed out earlier stay intact; a larger graph replaces the
// arena and the graphs recorded on the old one record again at their next run.
TEST_P(CudaGraphsTest, GraphsShareOneArena) {
  CudaOps gpu(0, precision_of(GetParam()));
  const Tensor w = gpu.upload(random_host({64, 32}, 1)), b = gpu.upload(random_host({64}, 2));
  const Tensor g = gpu.upload(random_host({64}, 3)), beta = gpu.upload(random_host({64}, 4));
  const Ops::Computation fn = [&](const std::vector<Tensor>& in) {
    const Tensor h = gpu.linear(in[0], w, &b, Act::GELU, nullptr);
    const Tensor n = gpu.layer_norm(h, g, beta, 1e-6f, Act::None);
    return std::vector<Tensor>{gpu.add(n, h)};
  };
  std::vector<Tensor> kept;
  std::vector<Tensor> expected;
  int seed = 100;
  auto run = [&](int64_t rows) {
    const Tensor x = random_host({rows, 32}, seed++);
    const Tensor dx = gpu.upload(x);
    kept.push_back(gpu.run_recorded("arena", {dx}, fn)[0]);
    expected.push_back(gpu.download(fn({dx})[0]));
  };
  for (int i = 0; i < 3; ++i) run(8);  // eager, recorded, replayed
  const Ops::MemoryUse small = gpu.memory_use();
  EXPECT_GT(small.graph_arena, 0);
  EXPECT_EQ(small.graphs_in_arena, 1);
  for (int i = 0; i < 3; ++i) run(1000);
  const Ops::MemoryUse large = gpu.memory_use();
  EXPECT_GT(large.graph_arena, small.graph_arena);
  EXPECT_EQ(large.graphs_in_arena, 1);  // (the small one records again at its next run)
  for (int i = 0; i < 6; ++i) run(i % 2 ? 1000 : 8);
  const Ops::MemoryUse both = gpu.memory_use();
  EXPECT_EQ(both.graph_arena, large.graph_arena);
  EXPECT_EQ(both.graphs_in_arena, 2);
  // The arena is the larger graph's plan: h, n and the output (1000 x 64 each), all alive at the add.
  const int64_t elem = GetParam() == DType::F32 ? 4 : 2;
  EXPECT_LE(both.graph_arena, 3 * 1000 * 64 * elem + 3 * 256);
  for (size_t i = 0; i < kept.size(); ++i) expect_equal(gpu.download(kept[i]), expected[i], "run " + std::to_string(i));
}

TEST_P(CudaGraphsTest, TinyModelEncoderAndDecoder) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const auto tensors = Model::synthetic_tensors(cfg, 7);
  const Precision precision = precision_of(GetParam());
  const std::string prec = to_string(precision);
  const Model graphs = Model::from_tensors(tensors, {.device = "cuda", .precision = precision, .cuda_graphs = true});
  const Model eager = Model::from_tensors(tensors, {.device = "cuda", .precision = precision, .cuda_graphs = false});
  const int S = cfg.img_size;
  for (int image = 0; image < 4; ++image) {
    const Tensor pixels = random_host({1, 3, S, S}, 40 + image, -2.f, 2.f);
    const Tensor eg = graphs.encode_image(pixels), ee = eager.encode_image(pixels);
    const std::string what = prec + " image " + std::to_string(image);
    expect_equal(graphs.download(eg), eager.download(ee), what + " embedding");
    for (int set = 0; set < 3; ++set) {
      PromptBatch p;
      p.points = random_host({5, 2, 2}, 50 + 10 * image + set, 0.f, (float)S - 1);
      p.labels = Tensor::from({5, 2}, {1, 0, 1, 1, 1, -1, 0, 1, 1, 0});
      for (bool multimask : {true, false}) {
        const DecoderOutput dg = graphs.decode_masks(eg, graphs.encode_prompts(p), multimask);
        const DecoderOutput de = eager.decode_masks(ee, eager.encode_prompts(p), multimask);
        const std::string w2 = what + " prompts " + std::to_string(set) + (multimask ? " multimask" : "");
        expect_equal(graphs.download(dg.low_res_masks), eager.download(de.low_res_masks), w2 + " masks");
        expect_equal(graphs.download(dg.iou), eager.download(de.iou), w2 + " iou");
      }
    }
  }
  const Model::MemoryUse mem = graphs.memory_use();
  EXPECT_GE(mem.graphs_in_arena, 3);  // the encoder, the decoder with and without multimask
  EXPECT_GT(mem.graph_arena, 0);
  EXPECT_GT(mem.weights, 0);
  EXPECT_EQ(mem.weights_filled, mem.weights);  // every weight in the one allocation, which was sized exactly
  EXPECT_EQ(eager.backend().memory_use().graph_arena, 0);
}

// Model::plan_memory: after it, real images at the planned batch and prompt count, as the predictor
// feeds them (bytes of images of any size, Model::encode_rgb), run within the planned peak and arena
// (nothing more is allocated), with the results of a model that made no plan.
TEST_P(CudaGraphsTest, PlannedMemoryHoldsForRealImages) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const auto tensors = Model::synthetic_tensors(cfg, 9);
  const Precision precision = precision_of(GetParam());
  const std::string prec = to_string(precision);
  const Model planned = Model::from_tensors(tensors, {.device = "cuda", .precision = precision});
  const Model plain = Model::from_tensors(tensors, {.device = "cuda", .precision = precision});
  const Model::MemoryPlan plan = planned.plan_memory(2, 5);
  EXPECT_GT(plan.weights, 0);
  EXPECT_GT(plan.graph_arena, 0);
  EXPECT_GE(plan.peak, plan.weights + plan.graph_arena);
  const int S = cfg.img_size;
  for (int image = 0; image < 3; ++image) {
    Tensor rgb = Tensor::empty({2, S, S, 3}, DType::U8), extent = Tensor::empty({2, 2, S}, DType::U8);
    for (int64_t i = 0; i < rgb.numel(); ++i) rgb.ptr<uint8_t>()[i] = uint8_t((i * 2654435761u + image) >> 24);
    for (int64_t b = 0; b < 2; ++b)  // (image b: S x S, then S - 100 (image + 1) wide)
      for (int64_t i = 0; i < S; ++i)
        extent.ptr<uint8_t>()[b * 2 * S + i] = 1, extent.ptr<uint8_t>()[(b * 2 + 1) * S + i] = i < S - b * 100 * (image + 1);
    const Tensor e1 = planned.encode_rgb(rgb, extent), e2 = plain.encode_rgb(rgb, extent);
    expect_equal(planned.download(e1), plain.download(e2), prec + " embeddings " + std::to_string(image));
    for (int64_t b = 0; b < 2; ++b) {
      PromptBatch p;
      p.points = random_host({5, 1, 2}, 70 + 2 * image + b, 0.f, (float)S - 1);
      p.labels = Tensor::from({5, 1}, {1, 1, 1, 1, 1});
      const std::vector<int64_t> image_of_prompt(5, b);
      const DecoderOutput d1 = planned.decode_masks(e1, image_of_prompt, planned.encode_prompts(p), true);
      const DecoderOutput d2 = plain.decode_masks(e2, image_of_prompt, plain.encode_prompts(p), true);
      expect_equal(planned.download(d1.low_res_masks), plain.download(d2.low_res_masks), prec + " masks");
    }
  }
  EXPECT_EQ(planned.peak_memory_bytes(), plan.peak);
  EXPECT_EQ(planned.backend().memory_use().graph_arena, plan.graph_arena);
}

// The ragged decode of many prompts an image runs one decode per image on the graph cache's lanes
// (side streams, graph.h): over runs with new prompts (eager, recorded, then replays beside each
// other), every output, kept until the end, is bit for bit the same model's decode of that image's
// prompts alone on the stream itself. (Not another model's: a model times its large GEMMs'
// candidate kernels and may keep others, so two models' embeddings need not agree to the bit.)
TEST_P(CudaGraphsTest, RaggedDecodeOnLanes) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const auto tensors = Model::synthetic_tensors(cfg, 13);
  const Precision precision = precision_of(GetParam());
  const std::string prec = to_string(precision);
  const Model graphs = Model::from_tensors(tensors, {.device = "cuda", .precision = precision, .cuda_graphs = true});
  ASSERT_GE(graphs.backend().lanes(), 2) << "SAMFAST_LANES is set below 2";
  const int S = cfg.img_size, images = 4, per_image = 12, B = images * per_image;
  const Tensor pixels = random_host({images, 3, S, S}, 80, -2.f, 2.f);
  const Tensor eg = graphs.encode_image(pixels);
  std::vector<int64_t> image_of(B);
  for (int b = 0; b < B; ++b) image_of[b] = (b * 3) % images;  // interleaved
  struct Kept {
    DecoderOutput got;
    PromptBatch prompts;
    bool multimask;
  };
  std::vector<Kept> kept;
  for (int run = 0; run < 5; ++run)
    for (bool multimask : {true, false}) {
      PromptBatch p;
      p.points = random_host({B, 1, 2}, 90 + run, 0.f, (float)S - 1);
      p.labels = Tensor::empty({B, 1});
      for (int b = 0; b < B; ++b) p.labels.data[b] = 1.f;
      kept.push_back({graphs.decode_masks(eg, image_of, graphs.encode_prompts(p), multimask), p, multimask});
    }
  for (size_t r = 0; r < kept.size(); ++r) {
    const Tensor masks = graphs.download(kept[r].got.low_res_masks), iou = graphs.download(kept[r].got.iou);
    ASSERT_EQ(masks.dim(0), B);
    const int64_t per_mask = masks.numel() / B, per_iou = iou.numel() / B;
    for (int img = 0; img < images; ++img) {
      std::vector<int64_t> mine;
      for (int b = 0; b < B; ++b)
        if (image_of[b] == img) mine.push_back(b);
      PromptBatch p;
      p.points = Tensor::empty({(int64_t)mine.size(), 1, 2});
      p.labels = Tensor::empty({(int64_t)mine.size(), 1});
      for (size_t k = 0; k < mine.size(); ++k) {
        p.points.data[2 * k] = kept[r].prompts.points.data[2 * mine[k]];
        p.points.data[2 * k + 1] = kept[r].prompts.points.data[2 * mine[k] + 1];
        p.labels.data[k] = 1.f;
      }
      const DecoderOutput alone =
          graphs.decode_masks(graphs.backend().gather(eg, {img}), graphs.encode_prompts(p), kept[r].multimask);
      const Tensor m1 = graphs.download(alone.low_res_masks), i1 = graphs.download(alone.iou);
      int64_t differ = 0;
      for (size_t k = 0; k < mine.size(); ++k) {
        for (int64_t j = 0; j < per_mask; ++j) differ += masks.data[mine[k] * per_mask + j] != m1.data[k * per_mask + j];
        for (int64_t j = 0; j < per_iou; ++j) differ += iou.data[mine[k] * per_iou + j] != i1.data[k * per_iou + j];
      }
      EXPECT_EQ(differ, 0) << prec << " decode " << r << " image " << img << ": elements differing";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaGraphsTest, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return i.param == DType::F32 ? "F32" : i.param == DType::BF16 ? "BF16" : "F16";
                         });

}  // namespace
}  // namespace samfast
