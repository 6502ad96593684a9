// `samfast everything`: the automatic mask generator over an image, a folder or a glob, writing
// upstream scripts/amg.py's layout: per image a folder of mask PNGs plus metadata.csv
// (binary_mask), or one JSON of records (coco_rle / uncompressed_rle). Outputs appear atomically
// (written under a temporary name, then renamed), so a re-run skips finished images and redoes an
// image cut off by a crash or Ctrl-C. An unreadable image is reported and skipped; the exit status
// is 1 if any image failed.
#include <glob.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "commands.h"
#include "io/image.h"
#include "pipeline/overlay.h"
#include "pipeline/rle.h"
#include "samfast/error.h"
#include "samfast/mask_generator.h"

namespace samfast::cli {
namespace {
namespace fs = std::filesystem;

// Python's repr of a float (what amg.py's str(x) writes): shortest round-trip digits, fixed notation
// for decimal exponents -4..15 (always with a fractional part), else d.ddde+XX.
std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, end);  // [-]d[.ddd]e[+-]XX
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string sign = s[0] == '-' ? "-" : "", digits;
  for (size_t i = sign.size(); i < e; ++i)
    if (s[i] != '.') digits += s[i];
  if (exp < -4 || exp >= 16) {
    std::string m = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    char ex[8];
    std::snprintf(ex, sizeof ex, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return sign + m + ex;
  }
  if (exp < 0) return sign + "0." + std::string(size_t(-exp - 1), '0') + digits;
  if (int(digits.size()) <= exp + 1) return sign + digits + std::string(size_t(exp + 1 - digits.size()), '0') + ".0";
  return sign + digits.substr(0, size_t(exp + 1)) + "." + digits.substr(size_t(exp + 1));
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool image_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return (char)std::tolower(c); });
  static const std::set<std::string> known = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".pgm", ".ppm", ".pnm"};
  return known.count(e) > 0;
}

// FILE -> that file; DIR -> its files with image extensions (not recursive, like amg.py), sorted;
// a pattern with * ? [ -> its matches, sorted.
std::vector<fs::path> list_inputs(const std::string& input) {
  std::vector<fs::path> out;
  if (has_glob_chars(input) && !fs::exists(input)) {
    glob_t g{};
    const int rc = ::glob(input.c_str(), 0, nullptr, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (fs::is_regular_file(g.gl_pathv[i])) out.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    if (out.empty()) throw Error("--input " + input + ": no files match the pattern");
  } else if (fs::is_directory(input)) {
    for (const auto& e : fs::directory_iterator(input))
      if (e.is_regular_file() && image_extension(e.path())) out.push_back(e.path());
    if (out.empty()) throw Error("--input " + input + ": the folder holds no image files (.jpg, .png, ...)");
  } else if (fs::exists(input)) {
    out.emplace_back(input);
  } else {
    throw Error("--input " + input + ": no such file or folder");
  }
  std::sort(out.begin(), out.end());
  return out;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) throw Error("cannot write " + path.string());
}

std::string metadata_csv(const std::vector<MaskRecord>& masks) {
  // ref: scripts/amg.py write_masks_to_folder (no newline after the last row, as there)
  std::string s =
      "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
      "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h";
  for (size_t i = 0; i < masks.size(); ++i) {
    const MaskRecord& m = masks[i];
    s += "\n" + std::to_string(i) + "," + std::to_string(m.area);
    for (int v : m.bbox) s += "," + std::to_string(v);
    s += "," + py_float(m.point_coords[0]) + "," + py_float(m.point_coords[1]);
    s += "," + py_float(m.predicted_iou) + "," + py_float(m.stability_score);
    for (int v : m.crop_box) s += "," + std::to_string(v);
  }
  return s;
}

nlohmann::ordered_json records_json(const std::vector<MaskRecord>& masks, const std::string& mode) {
  // ref: SamAutomaticMaskGenerator.generate's records, as amg.py json.dump()s them
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const MaskRecord& m : masks) {
    nlohmann::ordered_json seg;
    seg["size"] = {m.height, m.width};
    if (mode == "coco_rle")
      seg["counts"] = m.coco_counts;
    else
      seg["counts"] = m.rle_counts;
    nlohmann::ordered_json r;
    r["segmentation"] = seg;
    r["area"] = m.area;
    r["bbox"] = m.bbox;
    r["predicted_iou"] = double(m.predicted_iou);
    r["point_coords"] = {{m.point_coords[0], m.point_coords[1]}};
    r["stability_score"] = double(m.stability_score);
    r["crop_box"] = m.crop_box;
    out.push_back(std::move(r));
  }
  return out;
}

struct Args {
  std::string checkpoint, model = "vit_b", input, output, output_mode = "binary_mask";
  uint64_t seed = 0;
  bool overlay = false, overwrite = false;
  MaskGeneratorOptions gen;
  ModelOptions options;
};

std::string fmt_duration(double s) {
  const int t = int(std::lround(s));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

int run_everything(Args a) {
  a.gen.output_mode = a.output_mode;
  const std::vector<fs::path> inputs = list_inputs(a.input);
  if (fs::exists(a.output) && !fs::is_directory(a.output)) throw Error("--output " + a.output + " exists and is not a folder");
  fs::create_directories(a.output);
  const fs::path out_dir(a.output);
  // Leftovers of an interrupted run: our own temporary names, whose process (the pid in the name) is
  // gone; a run still going in the same folder keeps its own.
  for (const auto& e : fs::directory_iterator(out_dir)) {
    const std::string name = e.path().filename().string(), prefix = ".samfast-tmp-";
    if (name.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && pid != getpid() && ::kill(pid_t(pid), 0) == 0) continue;
    fs::remove_all(e.path());
  }

  Model model = load_or_synthesize(a.checkpoint, a.model, a.seed, a.options);
  const MaskGenerator generator(model, a.gen);  // validates the options before any image
  const bool binary = a.output_mode == "binary_mask";
  const bool tty = isatty(fileno(stderr));

  // What each input gets, decided before any work so that the next image to process is known and
  // can be decoded on another thread while the current one is on the GPU.
  enum class Plan { Run, Duplicate, Done };
  std::vector<Plan> plan(inputs.size(), Plan::Run);
  std::vector<std::string> owner(inputs.size());
  std::map<std::string, fs::path> claimed;  // output name -> the input that has it
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::string base = inputs[k].stem().string();
    if (auto [it, fresh] = claimed.emplace(base, inputs[k]); !fresh)
      plan[k] = Plan::Duplicate, owner[k] = it->second.filename().string();
    else if (fs::exists(out_dir / (binary ? base : base + ".json")) && !a.overwrite)
      plan[k] = Plan::Done;
  }
  auto next_to_run = [&](size_t from) {
    while (from < inputs.size() && plan[from] != Plan::Run) ++from;
    return from;
  };
  // The next image is decoded, resized and normalized on another thread while this one runs.
  struct Loaded {
    Image img;
    EncoderInput input;
  };
  auto decode_async = [&, S = model.config().img_size](size_t k) {
    return std::async(std::launch::async, [path = inputs[k].string(), S] {
      Loaded l{read_image(path), {}};
      l.input = Predictor::prepare(l.img, S);
      return l;
    });
  };
  std::future<Loaded> prefetched;
  if (size_t first = next_to_run(0); first < inputs.size()) prefetched = decode_async(first);

  int done = 0, skipped = 0, failed = 0;
  const double t_start = now_ms();
  for (size_t k = 0; k < inputs.size(); ++k) {
    const fs::path& in = inputs[k];
    const std::string base = in.stem().string();
    const fs::path target = out_dir / (binary ? base : base + ".json");
    const std::string tag = "[" + std::to_string(k + 1) + "/" + std::to_string(inputs.size()) + "] " + in.filename().string();
    auto report = [&](const std::string& line) {
      if (tty) std::cerr << "\r\033[K";
      std::cerr << tag << ": " << line << "\n";
    };
    if (plan[k] == Plan::Duplicate) {
      report("FAILED: its output name '" + base + "' is taken by " + owner[k] + " (rename one)");
      ++failed;
      continue;
    }
    if (plan[k] == Plan::Done) {
      if (!tty) report("skipped (" + target.string() + " exists; --overwrite redoes it)");
      ++skipped;
      continue;
    }
    std::future<Loaded> current = std::move(prefetched);
    if (size_t n = next_to_run(k + 1); n < inputs.size()) prefetched = decode_async(n);
    try {
      const double t0 = now_ms();
      const Loaded loaded = current.get();  // rethrows a decoding error of this image
      const Image& img = loaded.img;
      GenerateTimings tm;
      const std::vector<MaskRecord> masks = generator.generate(img, &tm, &loaded.input);
      const fs::path tmp = out_dir / (".samfast-tmp-" + std::to_string(getpid()) + "-" + base);
      if (binary) {
        fs::create_directories(tmp);
        for (size_t i = 0; i < masks.size(); ++i) {
          std::vector<uint8_t> gray(masks[i].mask.size());
          for (size_t p = 0; p < gray.size(); ++p) gray[p] = masks[i].mask[p] ? 255 : 0;
          write_png_gray((tmp / (std::to_string(i) + ".png")).string(), img.height, img.width, gray);
        }
        write_text(tmp / "metadata.csv", metadata_csv(masks));
      } else {
        write_text(tmp, records_json(masks, a.output_mode).dump());
      }
      if (a.overlay) {
        std::vector<std::vector<uint8_t>> owned;
        std::vector<const uint8_t*> ptrs;
        for (const MaskRecord& m : masks) {
          if (binary) {
            ptrs.push_back(m.mask.data());
          } else {
            Rle r{m.height, m.width, m.rle_counts};
            owned.push_back(rle_to_mask(r));
          }
        }
        for (const auto& m : owned) ptrs.push_back(m.data());
        const fs::path ov = out_dir / (base + ".overlay.png"), ov_tmp = out_dir / (".samfast-tmp-" + std::to_string(getpid()) + "-" + base + ".png");
        write_png_rgb(ov_tmp.string(), make_overlay(img, ptrs, {}, {}, {}));
        fs::rename(ov_tmp, ov);
      }
      if (fs::exists(target)) fs::remove_all(target);  // --overwrite
      fs::rename(tmp, target);
      ++done;
      const double secs = (now_ms() - t0) / 1000.0;
      const double rate = done / ((now_ms() - t_start) / 1000.0);
      const size_t left = inputs.size() - k - 1;
      char line[256];
      std::snprintf(line, sizeof line, "%zu masks in %.2f s (encoder %.0f ms, decoder %.0f ms, post %.0f ms)", masks.size(),
                    secs, tm.encoder_ms, tm.decoder_ms, tm.postprocess_ms);
      if (tty) {
        char bar[256];
        std::snprintf(bar, sizeof bar, "\r\033[K[%zu/%zu] %3d%%  %.2f img/s  ETA %s  %s: %s", k + 1, inputs.size(),
                      int(100.0 * double(k + 1) / double(inputs.size())), rate, fmt_duration(double(left) / rate).c_str(),
                      in.filename().string().c_str(), line);
        std::cerr << bar << std::flush;
      } else {
        report(line);
      }
    } catch (const std::exception& e) {
      report(std::string("FAILED: ") + e.what());
      ++failed;
    }
  }
  if (tty) std::cerr << "\n";
  std::cout << "everything: " << done << " done, " << skipped << " skipped (already done), " << failed << " failed; "
            << a.output << " (" << device_summary(model) << ")\n";
  return failed > 0 ? 1 : 0;
}

}  // namespace

Runner add_everything(CLI::App& app) {
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("everything", "Segment everything: masks for a whole image (or a folder) from a point grid");
  cmd->add_option("--checkpoint", a->checkpoint, "SAM checkpoint (.pth or .safetensors); without it, random weights")
      ->check(CLI::ExistingFile);
  cmd->add_option("--model", a->model, "model for synthetic weights when no --checkpoint: vit_b, vit_l, vit_h, tiny")
      ->check(CLI::IsMember({"vit_b", "vit_l", "vit_h", "tiny"}));
  cmd->add_option("--seed", a->seed, "seed of the synthetic weights");
  cmd->add_option("--input", a->input, "an image, a folder of images, or a glob pattern (quote it)")->required();
  cmd->add_option("--output", a->output, "output folder (created if missing)")->required();
  cmd->add_option("--output-mode", a->output_mode, "binary_mask (PNGs + metadata.csv), coco_rle or uncompressed_rle (JSON)")
      ->check(CLI::IsMember({"binary_mask", "coco_rle", "uncompressed_rle"}));
  cmd->add_flag("--overlay", a->overlay, "also write NAME.overlay.png with every mask coloured over the image");
  cmd->add_flag("--overwrite", a->overwrite, "redo images whose outputs exist (default: skip them, resuming a run)");
  MaskGeneratorOptions& g = a->gen;
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
  add_backend_options(cmd, a->options);
  return [a] { return run_everything(*a); };
}

}  // namespace samfast::cli
