// `samfast bench`: set_image and predict wall times on this machine, as a table and a JSON line.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "io/image.h"
#include "samfast/predictor.h"

namespace samfast::cli {

Runner add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time set_image and predict (CPU backend)");
  struct Args {
    std::string checkpoint, model = "vit_b", image;
    int runs = 3;
    int prompts = 16;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint; omitted: synthetic weights")->check(CLI::ExistingFile);
  cmd->add_option("--model", a->model, "model for synthetic weights")->check(CLI::IsMember({"vit_b", "vit_l", "vit_h", "tiny"}));
  cmd->add_option("--image", a->image, "image to encode (default: a 1024x1024 synthetic image)");
  cmd->add_option("--runs", a->runs, "timed runs after one warm-up")->check(CLI::Range(1, 1000));
  cmd->add_option("--prompts", a->prompts, "single-point prompts decoded per image (multimask)")->check(CLI::Range(1, 4096));
  return [a] {
    Model model = load_or_synthesize(a->checkpoint, a->model, 0);
    Image img;
    if (!a->image.empty()) {
      img = read_image(a->image);
    } else {
      img.height = img.width = 1024;
      img.rgb.resize(1024 * 1024 * 3);
      for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = (uint8_t)((i * 2654435761u) >> 24);
    }
    std::vector<Prompt> prompts(a->prompts);
    for (int i = 0; i < a->prompts; ++i) {
      prompts[i].points = {{(float)((i * 97) % img.width), (float)((i * 61) % img.height)}};
      prompts[i].labels = {1};
    }
    Predictor predictor(model);
    std::vector<double> enc, one, batch;
    for (int r = 0; r <= a->runs; ++r) {
      double t0 = now_ms();
      predictor.set_image(img);
      double t1 = now_ms();
      predictor.predict(prompts[0], true);
      double t2 = now_ms();
      predictor.predict_batch(prompts, true);
      double t3 = now_ms();
      if (r == 0) continue;  // warm-up
      enc.push_back(t1 - t0), one.push_back(t2 - t1), batch.push_back(t3 - t2);
    }
    auto median = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
    nlohmann::json j = {{"device", "cpu"},
                        {"model", model.config().name()},
                        {"image", std::to_string(img.width) + "x" + std::to_string(img.height)},
                        {"runs", a->runs},
                        {"set_image_ms", median(enc)},
                        {"predict_1_prompt_ms", median(one)},
                        {"predict_batch_ms", median(batch)},
                        {"prompts", a->prompts}};
    std::cout << "model " << j["model"].get<std::string>() << ", image " << j["image"].get<std::string>() << ", median of " << a->runs << " runs\n"
              << "  set_image            " << median(enc) << " ms\n"
              << "  predict (1 prompt)   " << median(one) << " ms\n"
              << "  predict (" << a->prompts << " prompts) " << median(batch) << " ms\n"
              << j.dump() << "\n";
    return 0;
  };
}

}  // namespace samfast::cli
