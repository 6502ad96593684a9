// The options and helpers several samfast commands share.
#include "options.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <iostream>

#include "samfast/error.h"

namespace samfast::cli {

std::string device_summary(const Model& m) {
  const std::string decoder = m.decoder_precision() == m.precision() ? "" : " (decoder " + to_string(m.decoder_precision()) + ")";
  return m.device() + ", " + to_string(m.precision()) + decoder + (m.backend_note().empty() ? "" : " (" + m.backend_note() + ")");
}

std::string for_terminal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto escape = [&out](unsigned char c) {
    static const char* hex = "0123456789abcdef";
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      escape(c);
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9f) {  // U+0080..U+009F: C1 controls (CSI among them)
      escape(c), escape(static_cast<unsigned char>(s[++i]));
    } else {
      out += char(c);
    }
  }
  return out;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void add_exif_option(CLI::App* cmd, std::string& exif) {
  cmd->add_option("--exif", exif, "apply (default: turn JPEGs as their EXIF orientation says, as OpenCV's imread does) "
                  "or ignore (use the stored pixels, as PIL's Image.open does)")
      ->check(CLI::IsMember({"apply", "ignore"}));
}

ExifOrientation exif_choice(const std::string& exif) {
  return exif == "ignore" ? ExifOrientation::ignore : ExifOrientation::apply;
}

void add_backend_options(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option("--device", options.device, "auto (a CUDA GPU if there is one), cpu, cuda or cuda:N");
  cmd->add_option_function<std::string>(
         "--precision", [&options](const std::string& p) { options.precision = parse_precision(p); },
         "auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16, fp16, fp8 (a GPU: bf16 with the image encoder's "
         "Linear layers in fp8: faster, less exact), or int8 (the CPU: fp32 with those layers in int8: faster, less exact)")
      ->check(CLI::IsMember(precision_names()));
  cmd->add_option_function<std::string>(
         "--decoder-precision", [&options](const std::string& p) { options.decoder_precision = parse_precision(p); },
         "the prompt encoder's and mask decoder's: auto (fp16 beside a bf16 or fp8 image encoder: closer masks at the same "
         "speed; else the encoder's), fp32, bf16 or fp16 (a GPU)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp16"}));
  cmd->add_flag_callback("--no-graphs", [&options] { options.cuda_graphs = false; },
                         "on a GPU, launch every kernel from the host instead of replaying CUDA graphs of the encoder and decoder");
}

void add_generator_options(CLI::App* cmd, MaskGeneratorOptions& g) {
  cmd->add_option("--points-per-side", g.points_per_side, "points sampled along one side of the image")->capture_default_str();
  cmd->add_option("--points-per-batch", g.points_per_batch, "points decoded together (memory against speed)")->capture_default_str();
  cmd->add_option("--pred-iou-thresh", g.pred_iou_thresh, "keep masks whose predicted IoU is above this")->capture_default_str();
  cmd->add_option("--stability-score-thresh", g.stability_score_thresh, "keep masks at least this stable")->capture_default_str();
  cmd->add_option("--stability-score-offset", g.stability_score_offset, "logit offset of the stability score")->capture_default_str();
  cmd->add_option("--box-nms-thresh", g.box_nms_thresh, "box IoU above which duplicates are removed")->capture_default_str();
  cmd->add_option("--crop-n-layers", g.crop_n_layers, "layers of image crops (0: the whole image only)")->capture_default_str();
  cmd->add_option("--crop-nms-thresh", g.crop_nms_thresh, "box IoU for removing duplicates between crops")->capture_default_str();
  cmd->add_option("--crop-overlap-ratio", g.crop_overlap_ratio, "overlap of neighbouring crops")->capture_default_str();
  cmd->add_option("--crop-n-points-downscale-factor", g.crop_n_points_downscale_factor,
                  "points per side shrink by this factor in each crop layer")->capture_default_str();
  cmd->add_option("--min-mask-region-area", g.min_mask_region_area,
                  "remove islands and holes smaller than this many pixels (0: off)")->capture_default_str();
}

void check_output_folder(const std::filesystem::path& dir, const std::string& flag) {
  namespace fs = std::filesystem;
  if (dir.empty()) throw Error(flag + " is empty: name a folder");
  const std::string named = flag + " " + dir.string();
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) throw Error(named + " exists and is not a folder");
    if (::access(dir.c_str(), W_OK | X_OK) != 0) throw Error(named + " is not writable: " + std::strerror(errno));
    return;
  }
  if (fs::exists(fs::symlink_status(dir, ec))) throw Error(named + " is a symlink to nothing (or a symlink loop)");
  fs::path parent = fs::absolute(dir).parent_path();
  while (!fs::exists(fs::symlink_status(parent, ec)) && parent != parent.parent_path()) parent = parent.parent_path();
  if (!fs::is_directory(parent, ec)) throw Error(named + " cannot be created: " + parent.string() + " is not a folder");
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    throw Error(named + " cannot be created in " + parent.string() + ": " + std::strerror(errno));
}

void add_weights_options(CLI::App* cmd, WeightsChoice& w) {
  cmd->add_option("--checkpoint", w.checkpoint, "SAM checkpoint (.pth or .safetensors); omitted: synthetic random weights")
      ->check(CLI::ExistingFile);
  cmd->add_option("--model", w.model, "model for synthetic weights when no checkpoint is given: vit_b, vit_l, vit_h, tiny")
      ->check(CLI::IsMember({"vit_b", "vit_l", "vit_h", "tiny"}));
  add_seed_option(cmd, w.seed, "seed of the synthetic weights");
}

void add_seed_option(CLI::App* cmd, uint64_t& seed, const std::string& help) {
  const CLI::Validator whole_number(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        return error == std::errc() && stop == end && !text.empty() ? "" : "'" + text + "' is not a whole number 0..2^64-1";
      },
      "UINT64");
  cmd->add_option("--seed", seed, help)->check(whole_number);
}

Model load_model(const WeightsChoice& w, const ModelOptions& options) {
  if (!w.checkpoint.empty()) return Model::load(w.checkpoint, options);
  std::cerr << "WARNING: no --checkpoint given: using a SYNTHETIC " << w.model << " model with RANDOM weights (seed "
            << w.seed << ").\nWARNING: its masks are MEANINGLESS; pass --checkpoint sam_vit_b_01ec64.pth (or l/h) for real ones.\n";
  return Model::from_tensors(Model::synthetic_tensors(SamConfig::preset(w.model), w.seed), options);
}

}  // namespace samfast::cli

