// SamPredictor: set an image once, then predict masks for prompts in original-image pixels.
// ref: segment_anything/predictor.py
#pragma once
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "samfast/image.h"
#include "samfast/model.h"

namespace samfast {

struct Prompt {
  // At most kMaxPoints points: SAM is trained with a few clicks, the decoder's time and memory grow
  // with the square of a prompt's tokens (on two CPU cores 3,000 points take ~4 s, and 100,000 did
  // not finish in 5 minutes), and the GPU decoder keeps a prompt's tokens in shared memory (~870
  // fit in an H200's 227 KB a block, ~360 in the 99 KB of consumer GPUs).
  static constexpr size_t kMaxPoints = 256;
  std::vector<std::array<float, 2>> points;  // (x, y) in original-image pixels
  std::vector<int> labels;                   // 1 foreground, 0 background, -1 ignored
  std::optional<std::array<float, 4>> box;   // x0, y0, x1, y1 in original-image pixels
  Tensor mask_input;                         // (1, 4G, 4G) low-res logits from an earlier predict, optional
  int image = 0;                             // which image of set_images() (0 after set_image)
  // Upstream tells an empty point array (point_coords of shape (0, 2)) from none: without a box it
  // decodes the empty one with its "not a point" token. true: points were given, none of them.
  bool empty_point_array = false;
};

// An image made ready for the encoder: the host half of set_image, which can run on another thread
// while the GPU works on the previous image. prepare() gives the image resized (PIL-exact) to
// input_size, as bytes: the backend normalizes and pads it (Model::encode_rgb). Or the encoder's
// input itself, normalized and padded on the host (normalize_and_pad: an image given as floats).
struct EncoderInput {
  Image resized;                                                // (input_size) uint8 RGB, or empty
  Tensor image;                                                 // host (1, 3, S, S) fp32, or undefined
  std::pair<int, int> original_size{0, 0}, input_size{0, 0};  // (h, w)
};

struct Prediction {
  Tensor masks;          // (C, H, W): uint8 0/1 (upstream: bool), or fp32 logits when return_logits (C = 3 with multimask, else 1)
  Tensor iou;            // (C): predicted IoU per mask
  Tensor low_res_masks;  // (C, 4G, 4G) logits, to feed back as mask_input
};

class Predictor {
 public:
  explicit Predictor(const Model& model) : model_(model) {}  // (the model must outlive it)
  explicit Predictor(const Model&&) = delete;               // (a temporary would not)

  // ref: SamPredictor.set_image (RGB). Resizes (PIL-exact), normalizes, pads, runs the encoder.
  void set_image(const Image& rgb);
  // The same in two halves: prepare (host only, thread-safe) and set_image on its result.
  static EncoderInput prepare(const Image& rgb, int img_size);
  void set_image(const EncoderInput& input);
  // Several images through the encoder in one batch. Prompts then name their image (Prompt::image),
  // and predict_batch decodes the prompts of all the images together (any number per image).
  void set_images(const std::vector<Image>& rgbs);
  void set_images(const std::vector<EncoderInput>& inputs);
  bool is_image_set() const { return embedding_.defined(); }
  // One image of a set_images() batch as a predictor of its own (its embedding copied out), so that
  // a cache can keep and drop the images of one encoder batch one by one.
  Predictor select(int image) const;
  // The images of several predictors of one model, in order, as one predictor (their embeddings
  // copied together): prompts on all of them then decode in one ragged predict_batch, as a server
  // does with the clicks of many clients on many images.
  static Predictor join(const std::vector<const Predictor*>& parts);
  // The embedding moved to host memory (its backend memory freed) and back; predict needs it on the
  // backend. Host-held predictors are a cache's second tier: a later click costs an upload, not an encode.
  void to_host();
  void to_device();
  bool on_device() const { return is_image_set() && !embedding_host_; }
  int image_count() const { return (int)original_sizes_.size(); }
  // (1, 256, G, G) like SamPredictor.get_image_embedding.
  Tensor image_embedding(int image = 0) const;
  std::pair<int, int> original_size(int image = 0) const { return original_sizes_.at(checked(image)); }
  std::pair<int, int> input_size(int image = 0) const { return input_sizes_.at(checked(image)); }

  // Throws samfast::Error for a prompt that predict() would refuse on an image of this size: points
  // or a box outside it, more than Prompt::kMaxPoints points, bad labels, a mask_input that is not
  // (1, L, L) fp32 on the host. Needs no model, so a client can check prompts before loading one
  // (L: 256 for every SAM v1 model).
  static void check_prompt(const Prompt& prompt, int height, int width, int64_t low_res_side = 256);

  // ref: SamPredictor.predict. Throws samfast::Error for prompts outside the image, bad labels,
  // a mask_input of the wrong shape, or no image set.
  Prediction predict(const Prompt& prompt, bool multimask_output = true, bool return_logits = false) const;
  // Many prompt sets for the current image. Prompts of the same form (point count, box, mask) are
  // decoded together, in batches of at most max_decode_batch() prompts; results come back in the
  // order given. The predictions of one batch are views into shared buffers (no copies): keeping
  // one keeps its batch's buffers alive.
  std::vector<Prediction> predict_batch(const std::vector<Prompt>& prompts, bool multimask_output = true,
                                        bool return_logits = false) const;
  // Prompts already in input-size coordinates (upstream's predict_torch) -> backend tensors, no
  // post-processing and no host round trip. One image set.
  DecoderOutput decode(const PromptBatch& prompts, bool multimask_output) const;
  // The largest decoder batch predict_batch runs: a decode's working memory grows with its prompts
  // (~25 MB a prompt on the CPU in fp32, a few on a GPU in fp16) and the buffer pools keep each
  // batch size's, so that many prompts at once cannot exhaust memory; on the CPU 8 a batch is also
  // the fastest a prompt (BENCHMARKS.md, CPU).
  int64_t max_decode_batch() const;

 private:
  void check(const Prompt& p) const;
  size_t checked(int image) const;  // image as an index, or an Error
  const Model& model_;
  Tensor embedding_;  // (I, G, G, 256) channel-last
  bool embedding_host_ = false;  // embedding_ is a host fp32 copy (to_host)
  std::vector<std::pair<int, int>> original_sizes_, input_sizes_;  // (h, w) per image
};

}  // namespace samfast
