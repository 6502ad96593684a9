// `samfast segment`: prompts -> mask PNGs, an overlay PNG, low-res logits and a JSON summary.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "options.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/npy.h"
#include "samfast/overlay.h"
#include "samfast/predictor.h"
#include "samfast/safe_file.h"

namespace samfast::cli {
namespace {

// Decimal numbers as Python's float() reads them (spaces around, a leading +; no hex, no empty item: "10,10,"
// is a mistake), rounded to float as upstream's float32 prompts are (1e-40 is a number, 1e39 is not).
std::vector<float> parse_numbers(const std::string& text, const std::string& flag, size_t min_n, size_t max_n) {
  std::vector<float> v;
  for (size_t start = 0;;) {
    const size_t comma = std::min(text.find(',', start), text.size());
    std::string item = text.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const char* first = item.data() + (item.starts_with('+') ? 1 : 0);
    double x = 0;
    const auto [end, ec] = std::from_chars(first, item.data() + item.size(), x);
    if (item.empty() || ec == std::errc::invalid_argument || end != item.data() + item.size())
      throw Error(flag + " '" + text + "': '" + item + "' is not a number");
    if (!std::isfinite(x)) throw Error(flag + " '" + text + "': '" + item + "' is not a finite number");
    if (ec == std::errc::result_out_of_range || std::abs(x) > std::numeric_limits<float>::max())
      throw Error(flag + " '" + text + "': '" + item + "' is out of range");
    v.push_back(static_cast<float>(x));
    if (comma == text.size()) break;
    start = comma + 1;
  }
  if (v.size() < min_n || v.size() > max_n)
    throw Error(flag + " '" + text + "': expected " + (min_n == max_n ? std::to_string(min_n) : std::to_string(min_n) + " or " + std::to_string(max_n)) +
                " comma-separated numbers");
  return v;
}

struct Args {
  WeightsChoice weights;
  std::string image, mask_input, out;
  std::optional<std::string> box;  // (given empty: an error, not "no box")
  std::vector<std::string> points;
  bool multimask = false, overwrite = false;
  std::string exif = "apply";
  ModelOptions options;
};

// Everything that can be refused is checked before the model loads and before --out is created:
// prompts, the mask input, the image, and every output name.
int run_segment(const Args& a) {
  Prompt prompt;
  for (const std::string& p : a.points) {
    auto v = parse_numbers(p, "--point", 2, 3);
    const float label = v.size() == 3 ? v[2] : 1.f;
    if (label != 0.f && label != 1.f) throw Error("--point '" + p + "': the label must be 1 (foreground) or 0 (background)");
    prompt.points.push_back({v[0], v[1]});
    prompt.labels.push_back((int)label);
  }
  if (a.box) {
    auto v = parse_numbers(*a.box, "--box", 4, 4);
    prompt.box = std::array<float, 4>{v[0], v[1], v[2], v[3]};
  }
  if (prompt.points.empty() && !prompt.box) throw Error("give at least one --point x,y[,label] or a --box x0,y0,x1,y1");
  if (!a.mask_input.empty()) prompt.mask_input = read_npy(a.mask_input);

  namespace fs = std::filesystem;
  const fs::path out(a.out);
  // Every name a run may write, so that a single-mask run never leaves an earlier run's mask_1.png
  // and mask_2.png beside its result.json: without --overwrite they refuse the run, with it they go.
  std::vector<std::string> outputs = {"overlay.png", "result.json", "low_res_logits.npy"};
  for (int i = 0; i < 3; ++i) outputs.push_back("mask_" + std::to_string(i) + ".png");
  check_output_folder(out, "--out");
  for (const auto& f : outputs) {
    if (fs::exists(fs::symlink_status(out / f)) && !a.overwrite)
      throw Error((out / f).string() + " already exists (pass --overwrite to replace outputs)");
    require_replaceable(out / f);
  }

  Image img = read_image(a.image, kMaxImagePixels, exif_choice(a.exif));  // before the model: a bad image fails fast
  Predictor::check_prompt(prompt, img.height, img.width);
  double t0 = now_ms();
  Model model = load_model(a.weights, a.options);
  double t1 = now_ms();
  Predictor predictor(model);
  predictor.set_image(img);
  double t2 = now_ms();
  Prediction pred = predictor.predict(prompt, a.multimask);
  double t3 = now_ms();

  // All outputs are written under temporary names and renamed into place together: a failed write
  // (a full disk) leaves the folder as it was.
  fs::create_directories(out);
  remove_temporaries(out, /*all=*/false);
  StagedFiles files;
  const int64_t C = pred.masks.dim(0), H = pred.masks.dim(1), W = pred.masks.dim(2), L = pred.low_res_masks.dim(1);
  nlohmann::json masks = nlohmann::json::array();
  std::vector<std::vector<uint8_t>> bits(C, std::vector<uint8_t>(H * W));
  for (int64_t c = 0; c < C; ++c) {
    std::vector<uint8_t> gray(H * W);
    int64_t area = 0;
    for (int64_t i = 0; i < H * W; ++i) {
      bits[c][i] = pred.masks.ptr<uint8_t>()[c * H * W + i];
      gray[i] = bits[c][i] ? 255 : 0;
      area += bits[c][i];
    }
    const std::string name = "mask_" + std::to_string(c) + ".png";
    files.add(out / name, encode_png_gray((int)H, (int)W, gray));
    masks.push_back({{"file", name}, {"predicted_iou", pred.iou.data[c]}, {"area", area}});
  }
  const int64_t best = std::max_element(pred.iou.data, pred.iou.data + C) - pred.iou.data;
  Tensor best_logits = Tensor::empty({1, L, L});
  std::copy(pred.low_res_masks.data + best * L * L, pred.low_res_masks.data + (best + 1) * L * L, best_logits.data);
  files.add(out / "low_res_logits.npy", [&](std::ostream& f) { write_npy(f, best_logits); });
  std::vector<std::array<float, 4>> boxes;
  if (prompt.box) boxes.push_back(*prompt.box);
  files.add(out / "overlay.png", encode_png_rgb(make_overlay(img, {bits[best].data()}, prompt.points, prompt.labels, boxes)));

  nlohmann::json result = {
      {"image", a.image},
      {"width", W},
      {"height", H},
      {"checkpoint", a.weights.checkpoint.empty() ? "synthetic (random weights: masks are meaningless)" : a.weights.checkpoint},
      {"model", model.config().name()},
      {"device", model.device()},
      {"precision", to_string(model.precision())},
      {"decoder_precision", to_string(model.decoder_precision())},
      {"multimask_output", a.multimask},
      {"best_mask", best},
      {"masks", masks},
      {"timings_ms", {{"load", t1 - t0}, {"set_image", t2 - t1}, {"predict", t3 - t2}}}};
  files.add(out / "result.json", result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  files.commit();
  for (int64_t c = C; c < 3; ++c) fs::remove(out / ("mask_" + std::to_string(c) + ".png"));  // (regular files: checked above)
  std::cerr << "wrote " << C << " mask(s), overlay.png and result.json to " << a.out << " (set_image "
            << (int)(t2 - t1) << " ms, predict " << (int)(t3 - t2) << " ms on " << device_summary(model) << ")\n";
  return 0;
}

}  // namespace

Runner add_segment(CLI::App& app) {
  auto* cmd = app.add_subcommand("segment", "Segment an image from point / box / mask prompts");
  auto a = std::make_shared<Args>();
  add_weights_options(cmd, a->weights);
  cmd->add_option("--image", a->image, "input image (JPEG, PNG, ...)")->required();
  cmd->add_option("--point", a->points, "x,y[,label] in image pixels; label 1 = foreground (default), 0 = background");
  cmd->add_option("--box", a->box, "x0,y0,x1,y1 in image pixels");
  cmd->add_option("--mask-input", a->mask_input, "low-res logits .npy (1, 256, 256) from an earlier run")->check(CLI::ExistingFile);
  cmd->add_flag("--multimask", a->multimask, "return 3 masks instead of 1");
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_flag("--overwrite", a->overwrite, "replace existing outputs in --out");
  add_exif_option(cmd, a->exif);
  add_backend_options(cmd, a->options);
  return [a] { return run_segment(*a); };
}

}  // namespace samfast::cli
