// `samfast everything`: the automatic mask generator over an image, a folder or a glob, writing
// upstream scripts/amg.py's layout: per image a folder of mask PNGs plus metadata.csv
// (binary_mask), or one JSON of records (coco_rle / uncompressed_rle). What it promises (README,
// "What samfast guarantees"): outputs appear atomically (written under temporary names, then
// renamed), so a re-run skips finished images and redoes one cut off by a crash, a kill or a full
// disk; one run at a time holds the output folder; nothing is written or removed outside it, and
// nothing in it but samfast's own outputs of the image at hand. An unreadable image is reported
// and skipped; the exit status is 1 if any image failed.
#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
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

#include "commands.h"
#include "options.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/overlay.h"
#include "samfast/rle.h"
#include "samfast/safe_file.h"

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
  static const std::set<std::string> known = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".pgm", ".ppm", ".pnm",
                                                ".webp", ".tif", ".tiff"};
  return known.count(e) > 0;
}

// FILE -> that file; DIR -> its entries with image extensions that are not folders (not recursive,
// like amg.py), sorted; a pattern with * ? [ -> its matches that are not folders, sorted. Entries
// that cannot be read (a symlink loop, a FIFO) are listed too: reading them fails, and the run
// reports that image and goes on.
std::vector<fs::path> list_inputs(const std::string& input) {
  std::vector<fs::path> out;
  std::error_code ec;
  auto not_a_folder = [](const fs::path& p) {
    std::error_code ignored;
    return !fs::is_directory(p, ignored);
  };
  if (has_glob_chars(input) && !fs::exists(fs::symlink_status(input, ec))) {
    glob_t g{};
    const int rc = ::glob(input.c_str(), 0, nullptr, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (not_a_folder(g.gl_pathv[i])) out.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    if (out.empty()) throw Error("--input " + input + ": no files match the pattern");
  } else if (fs::is_directory(input, ec)) {
    for (fs::directory_iterator it(input, ec), end; !ec && it != end; it.increment(ec))
      if (image_extension(it->path()) && not_a_folder(it->path())) out.push_back(it->path());
    if (ec) throw Error("--input " + input + ": cannot list the folder: " + ec.message());
    if (out.empty()) throw Error("--input " + input + ": the folder holds no image files (.jpg, .png, ...)");
  } else if (fs::exists(fs::symlink_status(input, ec))) {
    out.emplace_back(input);
  } else {
    throw Error("--input " + input + ": no such file or folder");
  }
  std::sort(out.begin(), out.end());
  return out;
}

// An image's output name, as amg.py makes it: os.path.splitext(basename)[0]. Python keeps leading
// dots in the root ("..jpg" stays "..jpg"), where std::filesystem's stem would give "." (the output
// folder itself) or ".." (its parent).
std::string output_name(const fs::path& in) {
  const std::string name = in.filename().string();
  const size_t first = name.find_first_not_of('.'), dot = name.rfind('.');
  if (first == std::string::npos || dot == std::string::npos || dot < first) return name;
  return name.substr(0, dot);
}

// Why `base` cannot name outputs in the folder ("" if it can).
std::string unsafe_output_name(const std::string& base) {
  if (base.empty() || base == "." || base == ".." || base.find('/') != std::string::npos)
    return "its name gives no usable output name";
  if (base.rfind(kTempPrefix, 0) == 0 || base == FolderLock::kFileName)
    return "its output name '" + base + "' is reserved for samfast's own files (rename the image)";
  return "";
}

// Whether `target` is what samfast wrote for an image: a real folder of N.png files and
// metadata.csv (binary_mask), or a regular file holding a JSON array of records, as samfast and
// amg.py write it (`[]` or `[{"segmentation"...`). Anything else there is the user's and is never
// replaced or removed.
bool is_our_output(const fs::path& target, bool binary) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(target, ec);
  if (!binary) {
    if (!fs::is_regular_file(st)) return false;
    std::ifstream f(target, std::ios::binary);
    std::string head(64, '\0');
    f.read(head.data(), std::streamsize(head.size()));
    head.resize(size_t(f.gcount()));
    std::erase_if(head, [](unsigned char c) { return std::isspace(c); });
    return head == "[]" || head.starts_with("[{\"segmentation\"");
  }
  if (!fs::is_directory(st) || !fs::is_regular_file(fs::symlink_status(target / "metadata.csv", ec))) return false;
  for (fs::directory_iterator it(target, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool mask_png = name.size() > 4 && name.ends_with(".png") &&
                          std::all_of(name.begin(), name.end() - 4, [](unsigned char c) { return std::isdigit(c); });
    if (!(mask_png || name == "metadata.csv") || !fs::is_regular_file(it->symlink_status(ec))) return false;
  }
  return !ec;
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
  WeightsChoice weights;
  std::string input, output, output_mode = "binary_mask";
  bool overlay = false, overwrite = false;
  std::string exif = "apply";
  MaskGeneratorOptions gen;
  ModelOptions options;
};

std::string fmt_duration(double s) {
  const int t = int(std::lround(s));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

// How one image's outputs are put in place: the mask folder (binary_mask) or JSON file is the
// image's "done" mark; the overlay, when asked for, is renamed into place after it, so an overlay
// is only ever samfast's beside the image's finished outputs (an image without its overlay is redone).
struct ImageOutputs {
  fs::path target, overlay;  // overlay empty when not asked for
  bool binary;
};

// Writes one image's outputs under temporary names, then renames them into place; a failure (a
// full disk) leaves nothing behind and the image not done. An earlier output of the image (only
// ever one that is_our_output, and its overlay) is replaced.
void write_outputs(const ImageOutputs& o, const std::vector<MaskRecord>& masks, const std::string& mode, const Image& img) {
  StagedFiles files;
  if (!o.binary)
    files.add(o.target, records_json(masks, mode).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (!o.overlay.empty()) {
    std::vector<std::vector<uint8_t>> owned;
    std::vector<const uint8_t*> ptrs;
    for (const MaskRecord& m : masks) {
      if (o.binary) {
        ptrs.push_back(m.mask.data());
      } else {
        owned.push_back(rle_to_mask(Rle{m.height, m.width, m.rle_counts}));
        ptrs.push_back(owned.back().data());
      }
    }
    files.add(o.overlay, encode_png_rgb(make_overlay(img, ptrs, {}, {}, {})));
  }
  if (!o.binary) {
    files.commit();
    return;
  }
  const fs::path tmp = temp_path_for(o.target);
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  try {
    for (size_t i = 0; i < masks.size(); ++i) {
      std::vector<uint8_t> gray(masks[i].mask.size());
      for (size_t p = 0; p < gray.size(); ++p) gray[p] = masks[i].mask[p] ? 255 : 0;
      write_file_atomically(tmp / (std::to_string(i) + ".png"), encode_png_gray(img.height, img.width, gray));
    }
    write_file_atomically(tmp / "metadata.csv", metadata_csv(masks));
    // A folder cannot be renamed over a folder: the old one steps aside first (a kill between the
    // two renames leaves the image not done, and the next run redoes it).
    const fs::path old = o.target.parent_path() / (std::string(kTempPrefix) + std::to_string(getpid()) + ".old");
    const bool replacing = fs::exists(fs::symlink_status(o.target));
    if (replacing) fs::rename(o.target, old);
    fs::rename(tmp, o.target);
    if (replacing) fs::remove_all(old);
    files.commit();
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
}

int run_everything(Args a) {
  // Everything that can be refused is refused before the output folder is made or the model loads.
  a.gen.output_mode = a.output_mode;
  MaskGenerator::validate(a.gen);
  if (!a.weights.checkpoint.empty()) require_regular_file(a.weights.checkpoint, "checkpoint");
  const std::vector<fs::path> inputs = list_inputs(a.input);
  const fs::path out_dir(a.output);
  check_output_folder(out_dir, "--output");
  const bool binary = a.output_mode == "binary_mask";
  const bool tty = isatty(fileno(stderr));
  if (const int64_t crops = MaskGenerator::crop_count(a.gen); crops > 1)
    std::cerr << "everything: --crop-n-layers " << a.gen.crop_n_layers << " asks for " << crops
              << " crops (encoder passes) an image\n";

  fs::create_directories(out_dir);
  const FolderLock lock(out_dir);
  remove_temporaries(out_dir, /*all=*/true);  // the lock is ours: every temporary is a dead run's

  // What each input gets, decided before any work so that the next image to process is known and
  // can be decoded on another thread while the current one is on the GPU.
  enum class Plan { Run, Refused, Done };
  std::vector<Plan> plan(inputs.size(), Plan::Run);
  std::vector<std::string> why(inputs.size());
  std::vector<ImageOutputs> outputs(inputs.size());
  std::map<std::string, fs::path> claimed;  // output file name -> the input that has it
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::string base = output_name(inputs[k]);
    if (why[k] = unsafe_output_name(base); !why[k].empty()) {
      plan[k] = Plan::Refused;
      continue;
    }
    ImageOutputs& o = outputs[k];
    o = {out_dir / (binary ? base : base + ".json"), a.overlay ? out_dir / (base + ".overlay.png") : fs::path(), binary};
    for (const fs::path& f : {o.target, o.overlay})
      if (!f.empty())
        if (auto [it, fresh] = claimed.emplace(f.filename().string(), inputs[k]); !fresh && why[k].empty())
          why[k] = "its output name '" + f.filename().string() + "' is taken by " + it->second.filename().string() + " (rename one)";
    std::error_code ec;
    const bool target_there = fs::exists(fs::symlink_status(o.target, ec));
    const bool overlay_there = !o.overlay.empty() && fs::exists(fs::symlink_status(o.overlay, ec));
    auto not_ours = [](const fs::path& f) { return f.string() + " exists and is not samfast's output (move it away)"; };
    if (!why[k].empty())
      plan[k] = Plan::Refused;
    else if (target_there && !is_our_output(o.target, binary))
      plan[k] = Plan::Refused, why[k] = not_ours(o.target);
    else if (overlay_there && !(target_there && fs::is_regular_file(fs::symlink_status(o.overlay, ec))))
      plan[k] = Plan::Refused, why[k] = not_ours(o.overlay);  // (ours only beside its finished image)
    else if (target_there && !a.overwrite && (o.overlay.empty() || overlay_there))
      plan[k] = Plan::Done;
  }
  auto next_to_run = [&](size_t from) {
    while (from < inputs.size() && plan[from] != Plan::Run) ++from;
    return from;
  };
  Model model = load_model(a.weights, a.options);
  const MaskGenerator generator(model, a.gen);

  // The next image is decoded, resized and normalized on another thread while this one runs.
  struct Loaded {
    Image img;
    EncoderInput input;
  };
  auto decode_async = [&, S = model.config().img_size, exif = exif_choice(a.exif)](size_t k) {
    return std::async(std::launch::async, [path = inputs[k].string(), S, exif] {
      Loaded l{read_image(path, kMaxImagePixels, exif), {}};
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
    const std::string tag = "[" + std::to_string(k + 1) + "/" + std::to_string(inputs.size()) + "] " + in.filename().string();
    auto report = [&](const std::string& line) {
      if (tty) std::cerr << "\r\033[K";
      std::cerr << for_terminal(tag + ": " + line) << "\n";
    };
    if (plan[k] == Plan::Refused) {
      report("FAILED: " + why[k]);
      ++failed;
      continue;
    }
    if (plan[k] == Plan::Done) {
      if (!tty) report("skipped (" + outputs[k].target.string() + " exists; --overwrite redoes it)");
      ++skipped;
      continue;
    }
    std::future<Loaded> current = std::move(prefetched);
    if (size_t n = next_to_run(k + 1); n < inputs.size()) prefetched = decode_async(n);
    try {
      const double t0 = now_ms();
      const Loaded loaded = current.get();  // rethrows a decoding error of this image
      GenerateTimings tm;
      // Crops are encoder passes of their own: with many, say how far the image has got.
      double last_note = t0;
      auto progress = [&](int crops_done, int crops_total) {
        if (crops_total < 2 || crops_done == crops_total || now_ms() - last_note < 2000) return;
        last_note = now_ms();
        std::cerr << (tty ? "\r\033[K" : "") << for_terminal(tag) << ": crop " << crops_done << "/" << crops_total << (tty ? "" : "\n")
                  << std::flush;
      };
      const std::vector<MaskRecord> masks = generator.generate(loaded.img, &tm, &loaded.input, progress);
      write_outputs(outputs[k], masks, a.output_mode, loaded.img);
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
                      for_terminal(in.filename().string()).c_str(), line);
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
  add_weights_options(cmd, a->weights);
  cmd->add_option("--input", a->input, "an image, a folder of images, or a glob pattern (quote it)")->required();
  cmd->add_option("--output", a->output, "output folder (created if missing)")->required();
  cmd->add_option("--output-mode", a->output_mode, "binary_mask (PNGs + metadata.csv), coco_rle or uncompressed_rle (JSON)")
      ->check(CLI::IsMember({"binary_mask", "coco_rle", "uncompressed_rle"}));
  cmd->add_flag("--overlay", a->overlay, "also write NAME.overlay.png with every mask coloured over the image");
  cmd->add_flag("--overwrite", a->overwrite, "redo images whose outputs exist (default: skip them, resuming a run)");
  add_generator_options(cmd, a->gen);
  add_exif_option(cmd, a->exif);
  add_backend_options(cmd, a->options);
  return [a] { return run_everything(*a); };
}

}  // namespace samfast::cli
