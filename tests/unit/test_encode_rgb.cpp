// The image encoder fed the bytes of resized images (Model::encode_rgb, the predictor's path: the
// backend normalizes and pads) against encode_image of normalize_and_pad's fp32 tensors, on the CPU
// backend with the tiny config: the same embeddings, bit for bit; and the inputs it refuses.
#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/model.h"
#include "samfast/predictor.h"
#include "samfast/transforms.h"

namespace samfast {
namespace {

Image random_image(int h, int w, uint32_t seed) {
  Image im;
  im.height = h, im.width = w;
  im.rgb.resize(size_t(h) * w * 3);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t((i * 2654435761u + seed * 40503u) >> 24);
  return im;
}

void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape, want.shape) << what;
  EXPECT_EQ(std::memcmp(got.data, want.data, sizeof(float) * want.numel()), 0) << what;
}

class EncodeRgb : public ::testing::Test {
 protected:
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model model = Model::from_tensors(Model::synthetic_tensors(cfg, 3), {.device = "cpu", .precision = Precision::FP32});
  const int S = cfg.img_size;
  // A wide and a tall image, prepared as the predictor prepares them (resized bytes).
  const std::vector<EncoderInput> inputs = {Predictor::prepare(random_image(600, 900, 1), S),
                                            Predictor::prepare(random_image(700, 350, 2), S)};

  // The same images as the encoder's fp32 input, normalized and padded on the host.
  EncoderInput as_floats(const EncoderInput& in) const {
    EncoderInput f;
    f.image = normalize_and_pad(in.resized, S);
    f.original_size = in.original_size, f.input_size = in.input_size;
    return f;
  }
};

TEST_F(EncodeRgb, PredictorMatchesTheFp32Path) {
  ASSERT_FALSE(inputs[0].resized.rgb.empty());
  ASSERT_FALSE(inputs[0].image.defined());
  Predictor bytes(model), floats(model), mixed(model);
  bytes.set_images(inputs);
  floats.set_images(std::vector<EncoderInput>{as_floats(inputs[0]), as_floats(inputs[1])});
  mixed.set_images(std::vector<EncoderInput>{inputs[0], as_floats(inputs[1])});  // (the fp32 path for both)
  for (int i = 0; i < 2; ++i) {
    const std::string what = "image " + std::to_string(i);
    expect_same_bits(bytes.image_embedding(i), floats.image_embedding(i), what);
    expect_same_bits(mixed.image_embedding(i), floats.image_embedding(i), what + " (mixed batch)");
    EXPECT_EQ(bytes.input_size(i), floats.input_size(i)) << what;
    EXPECT_EQ(bytes.original_size(i), floats.original_size(i)) << what;
  }
  Predictor one(model);  // set_image(Image): prepare, then the byte path
  one.set_image(random_image(700, 350, 2));
  expect_same_bits(one.image_embedding(0), floats.image_embedding(1), "set_image");
}

TEST_F(EncodeRgb, RefusesWhatIsNotImageBytes) {
  Tensor rgb = Tensor::empty({1, S, S, 3}, DType::U8), extent = Tensor::empty({1, 2, S}, DType::U8);
  std::memset(rgb.ptr<uint8_t>(), 0, size_t(rgb.numel()));
  std::memset(extent.ptr<uint8_t>(), 1, size_t(extent.numel()));
  EXPECT_NO_THROW(model.encode_rgb(rgb, extent));
  EXPECT_THROW(model.encode_rgb(Tensor::zeros({1, S, S, 3}), extent), Error);              // floats
  EXPECT_THROW(model.encode_rgb(rgb, Tensor::empty({1, 2, S - 1}, DType::U8)), Error);       // extent's side
  EXPECT_THROW(model.encode_rgb(Tensor::empty({1, S, S, 4}, DType::U8), extent), Error);     // 4 channels
  EXPECT_THROW(model.encode_image(Tensor::empty({1, 3, S, S}, DType::U8)), Error);          // bytes as floats
  EXPECT_THROW(model.upload(Tensor::empty({1, 4}, DType::U8)), Error);                       // a binary mask
  // A prepared image whose bytes do not match its sizes, or larger than the encoder's input.
  EncoderInput bad = inputs[0];
  bad.input_size.first += 1;
  Predictor p(model);
  EXPECT_THROW(p.set_images(std::vector<EncoderInput>{bad}), InvalidArgument);
  bad = inputs[0];
  bad.resized.rgb.pop_back();
  EXPECT_THROW(p.set_images(std::vector<EncoderInput>{bad}), InvalidArgument);
  // Prepared for another encoder size, or sizes that do not resize into each other: masks at the
  // wrong scale (2318 of 9216 pixels differed), never an error before.
  EXPECT_THROW(p.set_image(Predictor::prepare(random_image(600, 900, 1), S / 2)), InvalidArgument);
  bad = inputs[0];
  bad.original_size = {4000, 3};
  EXPECT_THROW(p.set_images(std::vector<EncoderInput>{bad}), InvalidArgument);
  EXPECT_FALSE(p.is_image_set());
  EXPECT_THROW(Predictor::join({&p, nullptr}), InvalidArgument);
  // A Predictor or MaskGenerator keeps a reference to its model: a temporary one does not compile.
  static_assert(!std::is_constructible_v<Predictor, Model&&>);
  static_assert(!std::is_constructible_v<MaskGenerator, Model&&>);
}

}  // namespace
}  // namespace samfast
