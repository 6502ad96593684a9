// Dumps samfast's intermediate and final tensors as .npy so that tests/parity/*.py can compare them
// with upstream segment_anything on the same checkpoint and inputs. Test-only, not installed.
//   parity_tool CHECKPOINT IMAGE.png PROMPTS.json OUTDIR [DEVICE [PRECISION]]
// PROMPTS.json: {"prompts": [{"points": [[x, y], ...], "labels": [...], "box": [x0, y0, x1, y1] | null,
//                 "mask_input": "file.npy" | null, "multimask": bool}, ...]}
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "samfast/image.h"
#include "samfast/npy.h"
#include "samfast/predictor.h"
#include "samfast/transforms.h"

using namespace samfast;

namespace {
Tensor nhwc_to_nchw(const Tensor& x) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = Tensor::empty({B, C, H, W});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H * W; ++i)
      for (int64_t c = 0; c < C; ++c) y.data[(b * C + c) * H * W + i] = x.data[(b * H * W + i) * C + c];
  return y;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 7) {
    std::cerr << "usage: parity_tool CHECKPOINT IMAGE.png PROMPTS.json OUTDIR [DEVICE [PRECISION]]\n";
    return 2;
  }
  try {
    const std::string out = argv[4];
    ModelOptions options;
    options.device = argc > 5 ? argv[5] : "cpu";
    options.precision = parse_precision(argc > 6 ? argv[6] : "fp32");
    Model model = Model::load(argv[1], options);
    Image img = read_image(argv[2]);
    const int S = model.config().img_size;
    auto [h, w] = preprocess_shape(img.height, img.width, S);
    Tensor input = normalize_and_pad(resize_pil_bilinear(img, h, w), S);
    write_npy(out + "/input.npy", input);
    Tensor emb = model.encode_image(input, [&](int i, const Tensor& x) {
      write_npy(out + "/block_" + std::to_string(i) + ".npy", model.download(x));
    });
    write_npy(out + "/embedding.npy", nhwc_to_nchw(model.download(emb)));
    write_npy(out + "/dense_pe.npy", nhwc_to_nchw(model.dense_positional_encoding()));

    Predictor predictor(model);
    predictor.set_image(img);
    nlohmann::json spec = nlohmann::json::parse(std::ifstream(argv[3]));
    int k = 0;
    for (const auto& p : spec["prompts"]) {
      Prompt prompt;
      for (const auto& xy : p["points"]) prompt.points.push_back({xy[0].get<float>(), xy[1].get<float>()});
      for (const auto& l : p["labels"]) prompt.labels.push_back(l.get<int>());
      if (!p["box"].is_null()) prompt.box = std::array<float, 4>{p["box"][0], p["box"][1], p["box"][2], p["box"][3]};
      if (!p["mask_input"].is_null()) prompt.mask_input = read_npy(p["mask_input"].get<std::string>());
      const std::string pre = out + "/p" + std::to_string(k++) + "_";

      // The prompt encoder alone, on coordinates transformed as the predictor does.
      PromptBatch batch;
      const int64_t N = (int64_t)prompt.points.size();
      if (N) {
        batch.points = Tensor::empty({1, N, 2});
        batch.labels = Tensor::empty({1, N});
        for (int64_t i = 0; i < N; ++i) {
          batch.points.data[2 * i] = prompt.points[i][0], batch.points.data[2 * i + 1] = prompt.points[i][1];
          batch.labels.data[i] = (float)prompt.labels[i];
        }
        apply_coords(batch.points.data, N, predictor.original_size(), S);
      }
      if (prompt.box) {
        batch.boxes = Tensor::empty({1, 4});
        std::memcpy(batch.boxes.data, prompt.box->data(), sizeof(float) * 4);
        apply_coords(batch.boxes.data, 2, predictor.original_size(), S);
      }
      if (prompt.mask_input.defined()) batch.masks = prompt.mask_input.view({1, 1, prompt.mask_input.dim(-2), prompt.mask_input.dim(-1)});
      PromptEmbeddings pe = model.encode_prompts(batch);
      write_npy(pre + "sparse.npy", pe.sparse);
      Tensor dense = model.download(pe.dense);
      const int64_t G = model.config().grid(), D = dense.dim(3);
      if (dense.numel() == D) {  // one vector everywhere: expand for the comparison
        Tensor full = Tensor::empty({1, G, G, D});
        for (int64_t i = 0; i < G * G; ++i) std::memcpy(full.data + i * D, dense.data, sizeof(float) * D);
        dense = full;
      }
      write_npy(pre + "dense.npy", nhwc_to_nchw(dense));

      Prediction r = predictor.predict(prompt, p["multimask"].get<bool>(), /*return_logits=*/true);
      write_npy(pre + "masks.npy", r.masks);
      write_npy(pre + "iou.npy", r.iou);
      write_npy(pre + "low_res.npy", r.low_res_masks);
    }
  } catch (const std::exception& e) {
    std::cerr << "parity_tool: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
