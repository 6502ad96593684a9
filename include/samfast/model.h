// SAM: image encoder, prompt encoder and mask decoder over one backend.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "samfast/config.h"
#include "samfast/precision.h"
#include "samfast/tensor.h"

namespace samfast {

class Ops;

struct ModelOptions {
  std::string device = "auto";  // auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N
  Precision precision = Precision::Auto;  // see samfast/precision.h
  // The prompt encoder's and mask decoder's number format on a GPU: Auto, FP32, BF16 or FP16. Auto
  // is FP16 beside a BF16 or FP8 image encoder (bf16's 8-bit significand in the decoder costs the
  // masks ~0.4 points of IoU against fp32, fp16 runs at the same speed), else the encoder's.
  Precision decoder_precision = Precision::Auto;
  // On a GPU, record the image encoder and the mask decoder as CUDA graphs (per batch and prompt
  // shape, at their second run) and replay them; false runs every kernel launch from the host.
  bool cuda_graphs = true;
};

// Prompts for B masks of one image, in the coordinates of the resized (input_size) image, as
// upstream's predict_torch takes them. Undefined tensors mean "no such prompt".
struct PromptBatch {
  Tensor points;  // (B, N, 2) x, y
  Tensor labels;  // (B, N): 1 foreground, 0 background, -1 padding (not a point)
  Tensor boxes;   // (B, 4) x0, y0, x1, y1
  Tensor masks;   // (B, 1, 4G, 4G) low-res mask logits from an earlier prediction
  // When true, points are already shifted to pixel centres and normalised, (x + 0.5) / S, by the
  // caller: the automatic mask generator computes them in float64 as upstream does for its grids.
  bool points_normalized = false;
  int64_t batch() const;
};

struct PromptEmbeddings {
  Tensor sparse;  // (B, Ns, D), on the host (it joins the decoder's tokens there)
  Tensor dense;   // backend tensor: (B, G, G, D) channel-last, or (1, 1, 1, D) when it is one vector
                  // everywhere (no mask prompt)
};

struct DecoderOutput {  // backend tensors; Model::download brings them to the host
  Tensor low_res_masks;  // (B, M, 4G, 4G) logits
  Tensor iou;            // (B, M)
};

class Model {
 public:
  // Loads a .pth (PyTorch zip) or .safetensors checkpoint; the config is inferred from its shapes.
  static Model load(const std::string& path, const ModelOptions& options = {});
  // A model from named fp32 tensors (validated against the config inferred from them; a tensor
  // holding NaN or Inf is refused by name, as a checkpoint's is).
  static Model from_tensors(std::vector<std::pair<std::string, Tensor>> tensors, const ModelOptions& options = {});
  // Random weights in upstream's parameter layout: masks from such a model are meaningless.
  static std::vector<std::pair<std::string, Tensor>> synthetic_tensors(const SamConfig& cfg, uint64_t seed);

  const SamConfig& config() const { return cfg_; }
  const std::string& device() const { return device_; }        // "cpu" or "cuda:0 (NVIDIA H100 ...)"
  Precision precision() const { return precision_; }  // what Auto became: FP32 on the CPU, BF16 on a GPU
  Precision decoder_precision() const { return decoder_precision_; }  // never Auto
  // Non-empty when the backend differs from what was asked, e.g. "no CUDA GPU found: running on the CPU".
  const std::string& backend_note() const { return backend_note_; }
  int64_t parameter_count() const;
  const std::vector<std::pair<std::string, Tensor>>& tensors() const { return tensors_; }

  // ref: modeling/image_encoder.py ImageEncoderViT.forward.
  // image: host (B, 3, S, S) normalized and padded -> backend tensor (B, G, G, out_chans) channel-last.
  // on_block, if set, sees each block's output (B, G, G, E) as a backend tensor (parity tests).
  Tensor encode_image(const Tensor& image, const std::function<void(int, const Tensor&)>& on_block = {}) const;
  // The same from the bytes of resized images, normalized and padded by the backend (the
  // predictor's path: a GPU receives a quarter of the bytes, and the host does no float pass).
  // rgb: host uint8 (B, S, S, 3), image b resized (resize_pil_bilinear) into its top-left (h_b, w_b)
  // corner; extent: host uint8 (B, 2, S), extent[b, 0, y] = y < h_b, extent[b, 1, x] = x < w_b.
  // Equal to encode_image of normalize_and_pad's tensors, value for value.
  Tensor encode_rgb(const Tensor& rgb, const Tensor& extent) const;
  // ref: modeling/prompt_encoder.py PromptEncoder.forward
  PromptEmbeddings encode_prompts(const PromptBatch& prompts) const;
  // Host (1, G, G, D): the dense positional encoding of the embedding grid (get_dense_pe).
  const Tensor& dense_positional_encoding() const { return dense_pe_host_; }
  // Sam.postprocess_masks on the backend: low-res logits (B, C, 4G, 4G) -> (B, C, H, W) fp32 logits,
  // or uint8 0/1 masks when binarize; on the host, or left in backend memory when to_host is false.
  Tensor postprocess_masks(const Tensor& low_res, std::pair<int, int> input_size, std::pair<int, int> original_size,
                           bool binarize, bool to_host = true) const;
  // A backend tensor as a host fp32 tensor (uint8 masks stay uint8).
  Tensor download(const Tensor& x) const;
  // A host tensor in backend memory (the decoder's), e.g. an image embedding.
  Tensor upload(const Tensor& host) const;
  // A batch of images for encode_image in the image encoder's memory, e.g. placed there before a timing.
  Tensor upload_images(const Tensor& host) const;
  // Waits for the backend's queued work (GPU work is asynchronous; downloads wait by themselves).
  void synchronize() const;
  // Peak device memory held by the backend so far (0 on the CPU).
  int64_t peak_memory_bytes() const;
  // Device memory for encoding `batch` images at a time and decoding `prompts` single-point
  // multimask prompts an image (as samfast bench does; other prompt shapes, and post-processing to
  // the original size, take more): runs the encoder (on image bytes, as the predictor feeds it) and
  // the decoder on zeros until their CUDA graphs are recorded, so that the weights' allocation, the
  // graph arena and the peak are made and known before the first image. Zeros on the CPU.
  struct MemoryPlan {
    int64_t weights = 0, graph_arena = 0, peak = 0;
  };
  MemoryPlan plan_memory(int64_t batch, int64_t prompts) const;
  // Device memory held now: the weights' allocation and how much of it is filled, the CUDA-graph
  // arena and how many recordings share it (zeros on the CPU).
  struct MemoryUse {
    int64_t weights = 0, weights_filled = 0, graph_arena = 0, graphs_in_arena = 0;
  };
  MemoryUse memory_use() const;
  // ref: modeling/mask_decoder.py MaskDecoder.forward. embedding (1 or B, G, G, D).
  DecoderOutput decode_masks(const Tensor& embedding, const PromptEmbeddings& prompts, bool multimask_output) const;
  // The ragged form: B prompts over several images, decoded in one pass (no loop over the images).
  // embeddings (I, G, G, D) from one encode_image of I images; prompt b belongs to image
  // image_of_prompt[b] (any counts per image, any order). Outputs are in prompt order. Prompts that
  // all name one image decode as with that image's embedding alone.
  DecoderOutput decode_masks(const Tensor& embeddings, const std::vector<int64_t>& image_of_prompt,
                             const PromptEmbeddings& prompts, bool multimask_output) const;
  // The backend the prompt encoder, the mask decoder and post-processing run on, and where image
  // embeddings live (for pipeline code that needs ops beyond the model's own).
  Ops& backend() const { return *ops_; }

 private:
  Model() = default;
  // from_tensors without the scan for NaN and Inf (load's readers check each tensor as they decode it).
  static Model from_finite_tensors(std::vector<std::pair<std::string, Tensor>> tensors, const ModelOptions& options);
  const Tensor& w(const std::string& name) const;   // weight in backend memory
  const Tensor& hw(const std::string& name) const;  // weight on the host
  Tensor positional_encoding(const Tensor& coords01) const;  // (..., 2) in [0,1] -> (..., D)
  // The encoder on normalized, padded pixels (B, 3, S, S) in backend memory (run_recorded's
  // computation).
  Tensor encode_pixels(const Tensor& pixels, const std::function<void(int, const Tensor&)>& on_block) const;
  // At load: the encoder blocks' LayerNorm -> Linear pairs, as encode_pixels passes them, to the
  // encoder's backend (Ops::prepare_layer_norm_linear).
  void prepare_encoder_blocks() const;
  // decode_masks on one embedding, on the backend's lane `lane` (Ops::run_recorded_on_lane: the
  // caller joins the lanes before reading the outputs).
  DecoderOutput decode_on_lane(const Tensor& embedding, const PromptEmbeddings& prompts, bool multimask_output,
                               int lane) const;
  // The ragged decode as one decode per image (mask_decoder.cpp says when).
  DecoderOutput decode_per_image(const Tensor& embeddings, const std::vector<int64_t>& image_of_prompt,
                                 const PromptEmbeddings& prompts, bool multimask_output) const;
  // The mask decoder on uploaded tokens (B, 1 + M + Ns, D) (run_recorded's computation).
  DecoderOutput decode_tokens(const Tensor& tokens, const Tensor& embedding, const Tensor& dense,
                              bool multimask_output) const;
  Tensor compute_dense_positional_encoding() const;
  // The mask decoder's cross attentions with their projections multiplied together (host fp32,
  // named "<attention>.folded.*"), and its output heads as one block-diagonal MLP
  // ("mask_decoder.output_heads.*"); see mask_decoder.cpp.
  std::vector<std::pair<std::string, Tensor>> folded_decoder_weights() const;

  SamConfig cfg_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::map<std::string, Tensor> host_by_name_, by_name_;
  std::shared_ptr<Ops> ops_;      // prompt encoder, mask decoder, post-processing
  std::shared_ptr<Ops> enc_ops_;  // image encoder: ops_, or a sibling in another precision
  std::string device_, backend_note_;
  Precision precision_ = Precision::FP32, decoder_precision_ = Precision::FP32;
  Tensor dense_pe_host_, dense_pe_;
};

}  // namespace samfast
