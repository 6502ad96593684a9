// `samfast bench`: throughput as segment-anything-fast's experiments measure it (image encoder at
// batch B plus P single-point multimask prompts decoded per image), and single-image latencies,
// as a table and a JSON line.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "options.h"
#include "samfast/error.h"
#include "samfast/gpu_trace.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/predictor.h"
#include "samfast/transforms.h"

namespace samfast::cli {
namespace {

struct Args {
  WeightsChoice weights;
  std::string image;
  int runs = 3, prompts = 16, batch = 1;
  ModelOptions options;
  bool amg = false;  // segment everything instead
  std::string trace;  // Chrome trace of the timed runs' GPU work
  std::vector<std::string> images;
  MaskGeneratorOptions gen;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Ends a --trace of `runs` timed runs: writes the file, prints the kernels with the most GPU time.
void finish_trace(std::unique_ptr<GpuTrace>& trace, const std::string& path, int runs, const char* what,
                  nlohmann::json& j) {
  if (!trace) return;
  const auto totals = trace->finish(path);
  trace.reset();
  double all = 0;
  for (const auto& t : totals) all += t.ms;
  std::cout << "GPU trace of the " << runs << " " << what << " written to " << path << " (open in ui.perfetto.dev); "
            << "kernel time per run " << all / runs << " ms, by kernel:\n";
  nlohmann::json top = nlohmann::json::array();
  for (size_t i = 0; i < totals.size() && i < 20; ++i) {
    const auto& t = totals[i];
    std::printf("  %8.3f ms %5.1f%%  %6lld x  %s\n", t.ms / runs, 100.0 * t.ms / all, (long long)(t.launches / runs),
                t.name.substr(0, 110).c_str());
    top.push_back({{"kernel", t.name}, {"ms_per_run", t.ms / runs}, {"launches_per_run", t.launches / runs}});
  }
  j["trace"] = path;
  j["kernel_ms_per_run"] = all / runs;
  j["top_kernels"] = top;
}

// Segment everything as over a folder: generate() wall time per image (records on the host) after
// two warm-ups, the next image resized and normalized on another thread meanwhile (as `everything`
// does); that host work's own time is reported as preprocess_ms.
int run_amg_bench(const Args& a, const Model& model) {
  std::vector<std::string> paths = a.images;
  if (!a.image.empty()) paths.insert(paths.begin(), a.image);
  if (paths.empty()) throw Error("bench --amg needs at least one --image");
  std::vector<Image> imgs;
  for (const auto& p : paths) imgs.push_back(read_image(p));
  const int S = model.config().img_size;
  const MaskGenerator gen(model, a.gen);
  gen.generate(imgs[0]);  // warm-up: allocations, library plans
  gen.generate(imgs[0]);  // and CUDA graphs, recorded at a computation's second run
  std::unique_ptr<GpuTrace> trace;
  if (!a.trace.empty()) trace = std::make_unique<GpuTrace>();
  std::vector<double> secs, pre, enc, dec, post;
  std::vector<std::vector<double>> s_i(imgs.size());
  std::vector<size_t> masks(imgs.size());
  auto prepare_async = [&](size_t i) {
    return std::async(std::launch::async, [&, i] {
      const double t0 = now_ms();
      EncoderInput in = Predictor::prepare(imgs[i], S);
      pre.push_back(now_ms() - t0);  // only one preparation runs at a time
      return in;
    });
  };
  const size_t n = imgs.size() * size_t(a.runs);
  std::future<EncoderInput> next = prepare_async(0);
  for (size_t k = 0; k < n; ++k) {  // run r of image i at k = r * images + i
    const size_t i = k % imgs.size();
    const EncoderInput input = next.get();
    if (k + 1 < n) next = prepare_async((k + 1) % imgs.size());
    GenerateTimings t;
    const double t0 = now_ms();
    masks[i] = gen.generate(imgs[i], &t, &input).size();
    const double sec = (now_ms() - t0) / 1000.0;
    s_i[i].push_back(sec), secs.push_back(sec);
    enc.push_back(t.encoder_ms), dec.push_back(t.decoder_ms), post.push_back(t.postprocess_ms);
  }
  nlohmann::json per_image = nlohmann::json::array();
  for (size_t i = 0; i < imgs.size(); ++i)
    per_image.push_back({{"image", paths[i]}, {"size", {imgs[i].width, imgs[i].height}}, {"seconds", median(s_i[i])}, {"masks", masks[i]}});
  const double sec = median(secs);
  nlohmann::json j = {{"amg", true},
                      {"device", model.device()},
                      {"precision", to_string(model.precision())},
                      {"decoder_precision", to_string(model.decoder_precision())},
                      {"cuda_graphs", a.options.cuda_graphs && model.device() != "cpu"},
                      {"model", model.config().name()},
                      {"points_per_side", a.gen.points_per_side},
                      {"points_per_batch", a.gen.points_per_batch},
                      {"pred_iou_thresh", a.gen.pred_iou_thresh},
                      {"stability_score_thresh", a.gen.stability_score_thresh},
                      {"runs", a.runs},
                      {"seconds_per_image", sec},
                      {"img_per_s", 1.0 / sec},
                      {"preprocess_ms", median(pre)},
                      {"encoder_ms", median(enc)},
                      {"decoder_ms", median(dec)},
                      {"postprocess_ms", median(post)},
                      {"per_image", per_image},
                      {"peak_gib", model.peak_memory_bytes() / double(1 << 30)}};
  finish_trace(trace, a.trace, (int)n, "generate() calls", j);
  std::cout << "samfast bench --amg: " << j["model"].get<std::string>() << " on " << device_summary(model) << ", "
            << imgs.size() << " images, median of " << a.runs << " runs each\n"
            << "  seconds per image   " << sec << "  (next image's preprocessing " << median(pre)
            << " ms on another thread; encoder " << median(enc) << " ms, decoder " << median(dec)
            << " ms, post-processing " << median(post) << " ms)\n"
            << j.dump() << "\n";
  return 0;
}

int run_bench(const Args& a) {
  if (!a.trace.empty() && std::filesystem::exists(a.trace))
    throw Error("--trace " + a.trace + " exists: remove it or name a new file");
  Model model = load_model(a.weights, a.options);
  if (!a.trace.empty() && model.device() == "cpu")
    throw Error("--trace records GPU work, and this model runs on the CPU (" +
                (model.backend_note().empty() ? std::string("--device cpu") : model.backend_note()) + ")");
  if (a.amg) return run_amg_bench(a, model);
  Image img;
  if (!a.image.empty()) {
    img = read_image(a.image);
  } else {  // a fixed pseudo-random 1024x1024 picture: no decode or resize cost, nothing all-zero
    img.height = img.width = 1024;
    img.rgb.resize(1024 * 1024 * 3);
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = (uint8_t)((i * 2654435761u) >> 24);
  }
  std::vector<Prompt> prompts(a.prompts);
  for (int i = 0; i < a.prompts; ++i) {
    prompts[i].points = {{(float)((i * 97) % img.width), (float)((i * 61) % img.height)}};
    prompts[i].labels = {1};
  }
  const int S = model.config().img_size;
  auto [h, w] = preprocess_shape(img.height, img.width, S);
  Tensor one = normalize_and_pad(resize_pil_bilinear(img, h, w), S);
  Tensor batch = Tensor::empty({a.batch, 3, S, S});
  for (int b = 0; b < a.batch; ++b) std::copy(one.data, one.data + one.numel(), batch.data + b * one.numel());
  // On the device before the clock starts, as the anchor's input tensor is (uploading a batch of 8
  // takes ~100 MB over PCIe: a cost of where images come from, not of the encoder).
  batch = model.upload_images(batch);

  // The decoder work of segment-anything-fast's measurement: P prompts through the prompt encoder,
  // the mask decoder and post-processing to the original size, masks left on the device.
  PromptBatch pb;
  pb.points = Tensor::empty({a.prompts, 1, 2});
  pb.labels = Tensor::empty({a.prompts, 1});
  for (int i = 0; i < a.prompts; ++i) {
    pb.points.data[2 * i] = prompts[i].points[0][0], pb.points.data[2 * i + 1] = prompts[i].points[0][1];
    pb.labels.data[i] = 1.f;
    apply_coords(pb.points.data + 2 * i, 1, {img.height, img.width}, S);
  }
  // The same prompts for every image of the batch, decoded in one ragged pass (decode_masks with an
  // image per prompt, the NestedTensor analog): no loop over the images.
  PromptBatch pb_all;
  pb_all.points = Tensor::empty({int64_t(a.batch) * a.prompts, 1, 2});
  pb_all.labels = Tensor::empty({int64_t(a.batch) * a.prompts, 1});
  std::vector<int64_t> image_of_prompt;
  for (int b = 0; b < a.batch; ++b)
    for (int i = 0; i < a.prompts; ++i) {
      const int64_t k = int64_t(b) * a.prompts + i;
      pb_all.points.data[2 * k] = pb.points.data[2 * i], pb_all.points.data[2 * k + 1] = pb.points.data[2 * i + 1];
      pb_all.labels.data[k] = 1.f;
      image_of_prompt.push_back(b);
    }
  Predictor predictor(model);
  const Tensor emb1 = model.encode_image(one);
  std::vector<double> set_image, predict_one, predict_p, decode_p, decode_ragged, encode_b;
  // Runs -1 and 0 warm up: allocations and library plans, then the CUDA graphs, recorded at a
  // computation's second run.
  std::unique_ptr<GpuTrace> trace;
  for (int r = -1; r <= a.runs; ++r) {
    if (r == 1 && !a.trace.empty()) trace = std::make_unique<GpuTrace>();
    double t0 = now_ms();
    predictor.set_image(img);
    model.synchronize();  // set_image only queues the encoder on a GPU
    double t1 = now_ms();
    predictor.predict(prompts[0], true);
    double t2 = now_ms();
    predictor.predict_batch(prompts, true);
    double t3 = now_ms();
    const Tensor embeddings = model.encode_image(batch);
    model.synchronize();
    double t4 = now_ms();
    Tensor last;
    for (int b = 0; b < a.batch; ++b) {
      DecoderOutput d = model.decode_masks(emb1, model.encode_prompts(pb), true);
      model.postprocess_masks(d.low_res_masks, {h, w}, {img.height, img.width}, true, /*to_host=*/false);
      last = d.iou;
    }
    model.synchronize();  // one stream: every decode and post-processing has finished
    double t5 = now_ms();
    if (r <= 0) continue;
    set_image.push_back(t1 - t0), predict_one.push_back(t2 - t1), predict_p.push_back(t3 - t2);
    encode_b.push_back(t4 - t3), decode_p.push_back((t5 - t4) / a.batch);
  }
  nlohmann::json traced;  // (the trace covers the runs above)
  finish_trace(trace, a.trace, a.runs, "timed runs", traced);
  // (The ragged decode holds all B x P prompts' masks at once: its peak is reported apart.)
  const int64_t peak = model.peak_memory_bytes();
  const Model::MemoryUse mem = model.memory_use();
  const Tensor embeddings = model.encode_image(batch);
  for (int r = -1; r <= a.runs; ++r) {
    const double t0 = now_ms();
    DecoderOutput d = model.decode_masks(embeddings, image_of_prompt, model.encode_prompts(pb_all), true);
    model.postprocess_masks(d.low_res_masks, {h, w}, {img.height, img.width}, true, /*to_host=*/false);
    model.synchronize();
    if (r > 0) decode_ragged.push_back((now_ms() - t0) / a.batch);
  }
  const double enc = median(encode_b), dec = median(decode_p), dec_ragged = median(decode_ragged);
  const double img_s = a.batch / ((enc + a.batch * dec) / 1000.0), enc_img_s = a.batch / (enc / 1000.0);
  const double img_s_ragged = a.batch / ((enc + a.batch * dec_ragged) / 1000.0);
  nlohmann::json j = {{"device", model.device()},
                      {"precision", to_string(model.precision())},
                      {"decoder_precision", to_string(model.decoder_precision())},
                      {"cuda_graphs", a.options.cuda_graphs && model.device() != "cpu"},
                      {"model", model.config().name()},
                      {"batch", a.batch},
                      {"prompts", a.prompts},
                      {"runs", a.runs},
                      {"img_per_s", img_s},
                      {"encoder_img_per_s", enc_img_s},
                      {"encoder_batch_ms", enc},
                      {"decode_prompts_ms", dec},
                      {"img_per_s_ragged", img_s_ragged},
                      {"decode_prompts_ragged_ms", dec_ragged},
                      {"set_image_ms", median(set_image)},
                      {"predict_prompts_to_host_ms", median(predict_p)},
                      {"predict_1_prompt_ms", median(predict_one)},
                      {"peak_gib", peak / double(1 << 30)},
                      {"peak_gib_ragged", model.peak_memory_bytes() / double(1 << 30)},
                      {"weights_gib", mem.weights / double(1 << 30)},
                      {"graph_arena_gib", mem.graph_arena / double(1 << 30)},
                      {"graph_arena_gib_ragged", model.memory_use().graph_arena / double(1 << 30)}};
  if (!traced.is_null()) j.update(traced);
  std::cout << "samfast bench: " << j["model"].get<std::string>() << " on " << device_summary(model) << ", batch " << a.batch << ", " << a.prompts << " prompts/image, median of "
            << a.runs << " runs\n"
            << "  img/s (encoder + " << a.prompts << " prompts)  " << img_s << "\n"
            << "  encoder img/s              " << enc_img_s << "\n"
            << "  decode " << a.prompts << " prompts (ms)     " << dec << "  (to " << img.width << "x" << img.height
            << " masks, left on the device)\n"
            << "  img/s, ragged decode       " << img_s_ragged << "  (the batch's " << a.batch * a.prompts
            << " prompts decoded in one pass: " << dec_ragged << " ms an image)\n"
            << "  predict_batch " << a.prompts << " (ms)      " << median(predict_p) << "  (masks to the host)\n"
            << "  set_image (ms)             " << median(set_image) << "\n"
            << "  predict 1 prompt (ms)      " << median(predict_one) << "\n"
            << "  peak memory (GiB)          " << peak / double(1 << 30) << "  (weights " << mem.weights / double(1 << 30)
            << " in one allocation, CUDA-graph arena " << mem.graph_arena / double(1 << 30) << ")\n"
            << j.dump() << "\n";
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Throughput and latency of the image encoder and the mask decoder");
  auto a = std::make_shared<Args>();
  add_weights_options(cmd, a->weights);
  cmd->add_option("--image", a->image, "image to use (default: a 1024x1024 synthetic picture)");
  cmd->add_option("--runs", a->runs, "timed runs after two warm-ups")->check(CLI::Range(1, 1000));
  cmd->add_option("--prompts", a->prompts, "single-point multimask prompts decoded per image")->check(CLI::Range(1, 4096));
  cmd->add_option("--batch", a->batch, "images per image-encoder forward")->check(CLI::Range(1, 256));
  cmd->add_option("--trace", a->trace,
                  "write a Chrome/Perfetto trace of the timed runs' GPU kernels, copies and CUDA runtime calls to "
                  "this new file (needs CUPTI)");
  cmd->add_flag("--amg", a->amg, "segment everything: seconds per image of the automatic mask generator");
  cmd->add_option("--images", a->images, "--amg: more images (each timed --runs times)");
  add_generator_options(cmd, a->gen);  // (used with --amg)
  cmd->add_option("--output-mode", a->gen.output_mode, "--amg: binary_mask, coco_rle or uncompressed_rle")
      ->check(CLI::IsMember({"binary_mask", "coco_rle", "uncompressed_rle"}));
  add_backend_options(cmd, a->options);
  return [a] { return run_bench(*a); };
}

}  // namespace samfast::cli
