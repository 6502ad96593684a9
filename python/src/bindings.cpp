// samfast._samfast: the library's public API (include/samfast/) for Python, through nanobind. The
// Python package (python/samfast/) gives it upstream segment_anything's names; this file only moves
// arrays in and out, releases the GIL while the library computes, and maps errors to exceptions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "samfast/amg.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/model.h"
#include "samfast/predictor.h"
#include "samfast/rle.h"
#include "samfast/transforms.h"

namespace nb = nanobind;
using namespace nb::literals;
using namespace samfast;

namespace {

// Host arrays as the library wants them: C-contiguous, of one dtype (the Python layer converts first).
using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using ByteArray = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;
using IntArray = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;

// A model and the lock that lets one computation at a time use it: the backend's buffers, its CUDA
// graphs and its stream belong to the model, so predictors of one model on several threads take turns.
struct ModelHandle {
  explicit ModelHandle(Model m) : model(std::move(m)) {}
  Model model;
  mutable std::mutex mu;
};
using ModelPtr = std::shared_ptr<ModelHandle>;

// The library computes with the GIL released and the model locked.
struct Computing {
  explicit Computing(const ModelHandle& m) : lock(m.mu) {}
  nb::gil_scoped_release no_gil;  // (released before the lock is taken, so that waiting holds no GIL)
  std::unique_lock<std::mutex> lock;
};

ModelOptions options_of(const std::string& device, const std::string& precision, bool cuda_graphs,
                        const std::string& decoder_precision) {
  ModelOptions o;
  o.device = device;
  o.precision = parse_precision(precision);
  o.decoder_precision = parse_precision(decoder_precision);
  o.cuda_graphs = cuda_graphs;
  return o;
}

Tensor tensor_from(const FloatArray& a) {
  Shape shape;
  for (size_t i = 0; i < a.ndim(); ++i) shape.push_back((int64_t)a.shape(i));
  Tensor t = Tensor::empty(shape);
  if (a.size()) std::memcpy(t.data, a.data(), a.size() * sizeof(float));
  return t;
}

Image image_from(const ByteArray& a) {
  if (a.ndim() != 3 || a.shape(2) != 3 || a.shape(0) == 0 || a.shape(1) == 0)
    throw InvalidArgument("expected an image as a (H, W, 3) uint8 array, got " + std::to_string(a.ndim()) +
                          " dimensions" + (a.ndim() == 3 ? " of shape (" + std::to_string(a.shape(0)) + ", " +
                                                               std::to_string(a.shape(1)) + ", " +
                                                               std::to_string(a.shape(2)) + ")"
                                                         : std::string()));
  if ((int64_t)a.shape(0) * (int64_t)a.shape(1) > kMaxImagePixels)
    throw InvalidArgument("image of " + std::to_string(a.shape(1)) + "x" + std::to_string(a.shape(0)) +
                          " pixels is past the limit of " + std::to_string(kMaxImagePixels));
  Image img;
  img.height = (int)a.shape(0), img.width = (int)a.shape(1);
  img.rgb.assign(a.data(), a.data() + a.size());
  return img;
}

int cuda_device_index(const std::string& device) {  // "cuda:1 (NVIDIA ...)" -> 1
  return device.rfind("cuda:", 0) == 0 ? std::stoi(device.substr(5)) : 0;
}

// A tensor as an array that shares its storage (no copy): numpy on the host; on the GPU an array the
// caller hands to torch through DLPack. uint8 masks come out as bool for numpy (0/1 bytes are valid
// bools) and as uint8 for torch (whose DLPack import before 2.x has no bool; the caller views them).
template <class Framework = nb::numpy>
nb::ndarray<Framework> share(const Tensor& t, const std::string& device = "cpu") {
  std::vector<size_t> shape(t.shape.begin(), t.shape.end());
  constexpr bool kBool = std::is_same_v<Framework, nb::numpy>;
  nb::dlpack::dtype dtype = t.dtype == DType::U8     ? (kBool ? nb::dtype<bool>() : nb::dtype<uint8_t>())
                            : t.dtype == DType::BF16 ? nb::dlpack::dtype{(uint8_t)nb::dlpack::dtype_code::Bfloat, 16, 1}
                            : t.dtype == DType::F16  ? nb::dlpack::dtype{(uint8_t)nb::dlpack::dtype_code::Float, 16, 1}
                                                     : nb::dtype<float>();
  nb::capsule owner(new Tensor(t), [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  const bool on_gpu = !t.on_host();
  return nb::ndarray<Framework>(t.data, shape.size(), shape.data(), owner, nullptr, dtype,
                                on_gpu ? nb::device::cuda::value : nb::device::cpu::value,
                                on_gpu ? cuda_device_index(device) : 0);
}

// A new host array that owns `values` (moved in, no copy), seen as `shape` of Elem.
template <class Elem, class Vec>
nb::ndarray<nb::numpy, Elem> own(Vec values, std::vector<size_t> shape) {
  auto* keep = new Vec(std::move(values));
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Vec*>(p); });
  return nb::ndarray<nb::numpy, Elem>(reinterpret_cast<Elem*>(keep->data()), shape.size(), shape.data(), owner);
}

nb::ndarray<nb::numpy, bool> bool_mask(std::vector<uint8_t> bytes, int h, int w) {
  return own<bool>(std::move(bytes), {(size_t)h, (size_t)w});
}

nb::ndarray<nb::numpy, uint8_t> rgb_array(Image img) {
  return own<uint8_t>(std::move(img.rgb), {(size_t)img.height, (size_t)img.width, 3});
}

Prompt prompt_from(std::optional<FloatArray> points, std::optional<IntArray> labels,
                   std::optional<FloatArray> box, std::optional<FloatArray> mask_input, int image) {
  Prompt p;
  p.image = image;
  if (points.has_value() != labels.has_value())
    throw InvalidArgument("point_labels must be supplied with point_coords");
  if (points) {
    if (points->ndim() != 2 || points->shape(1) != 2)
      throw InvalidArgument("point_coords must be (N, 2), got " + std::to_string(points->ndim()) + " dimensions");
    if (labels->ndim() != 1 || labels->shape(0) != points->shape(0))
      throw InvalidArgument("point_labels must be (N,) for " + std::to_string(points->shape(0)) + " points");
    p.empty_point_array = points->shape(0) == 0;
    for (size_t i = 0; i < points->shape(0); ++i) {
      p.points.push_back({points->data()[2 * i], points->data()[2 * i + 1]});
      p.labels.push_back(labels->data()[i]);
    }
  }
  if (box) {
    if (box->size() != 4) throw InvalidArgument("box must hold 4 numbers (x0, y0, x1, y1), got " + std::to_string(box->size()));
    p.box = std::array<float, 4>{box->data()[0], box->data()[1], box->data()[2], box->data()[3]};
  }
  if (mask_input) p.mask_input = tensor_from(*mask_input);
  return p;
}

nb::tuple prediction_tuple(const Prediction& r) { return nb::make_tuple(share(r.masks), share(r.iou), share(r.low_res_masks)); }

struct PredictorHandle {
  explicit PredictorHandle(ModelPtr m) : model(std::move(m)), predictor(model->model) {}
  PredictorHandle(ModelPtr m, Predictor p) : model(std::move(m)), predictor(std::move(p)) {}
  ModelPtr model;
  Predictor predictor;
};

struct GeneratorHandle {
  GeneratorHandle(ModelPtr m, MaskGeneratorOptions o) : model(std::move(m)), generator(model->model, std::move(o)) {}
  ModelPtr model;
  MaskGenerator generator;
};

using GridArray = nb::ndarray<const double, nb::c_contig, nb::device::cpu>;

MaskGeneratorOptions generator_options(int points_per_side, int points_per_batch, double pred_iou_thresh,
                                       double stability_score_thresh, double stability_score_offset, double box_nms_thresh,
                                       int crop_n_layers, double crop_nms_thresh, double crop_overlap_ratio,
                                       int crop_n_points_downscale_factor,
                                       const std::optional<std::vector<GridArray>>& point_grids, int min_mask_region_area,
                                       const std::string& output_mode, double mask_threshold) {
  MaskGeneratorOptions o;
  o.points_per_side = points_per_side, o.points_per_batch = points_per_batch;
  o.pred_iou_thresh = pred_iou_thresh, o.stability_score_thresh = stability_score_thresh;
  o.stability_score_offset = stability_score_offset, o.box_nms_thresh = box_nms_thresh;
  o.crop_n_layers = crop_n_layers, o.crop_nms_thresh = crop_nms_thresh;
  o.crop_overlap_ratio = crop_overlap_ratio, o.crop_n_points_downscale_factor = crop_n_points_downscale_factor;
  if (point_grids)
    for (const GridArray& g : *point_grids) {
      if (g.ndim() != 2 || g.shape(1) != 2) throw InvalidArgument("each point grid must be (N, 2)");
      auto& grid = o.point_grids.emplace_back();
      for (size_t i = 0; i < g.shape(0); ++i) grid.push_back({g.data()[2 * i], g.data()[2 * i + 1]});
    }
  o.min_mask_region_area = min_mask_region_area, o.output_mode = output_mode, o.mask_threshold = mask_threshold;
  return o;
}
#define GENERATOR_ARGS                                                                                          \
  "points_per_side"_a, "points_per_batch"_a, "pred_iou_thresh"_a, "stability_score_thresh"_a,                  \
      "stability_score_offset"_a, "box_nms_thresh"_a, "crop_n_layers"_a, "crop_nms_thresh"_a,                  \
      "crop_overlap_ratio"_a, "crop_n_points_downscale_factor"_a, "point_grids"_a.none(), "min_mask_region_area"_a, \
      "output_mode"_a, "mask_threshold"_a

// One record as upstream's dict: segmentation in the output mode's form, plain Python numbers.
nb::dict record_dict(MaskRecord& r, const std::string& output_mode) {
  nb::dict d;
  nb::list size;
  size.append(r.height), size.append(r.width);
  if (output_mode == "binary_mask") {
    d["segmentation"] = bool_mask(std::move(r.mask), r.height, r.width);
  } else {
    nb::dict rle;
    rle["size"] = size;
    if (output_mode == "coco_rle") {
      rle["counts"] = r.coco_counts;
    } else {
      nb::list counts;
      for (uint32_t c : r.rle_counts) counts.append(c);
      rle["counts"] = counts;
    }
    d["segmentation"] = rle;
  }
  d["area"] = r.area;
  nb::list bbox, crop;
  for (int v : r.bbox) bbox.append(v);
  for (int v : r.crop_box) crop.append(v);
  d["bbox"] = bbox;
  d["predicted_iou"] = (double)r.predicted_iou;
  nb::list point, points;
  point.append(r.point_coords[0]), point.append(r.point_coords[1]);
  points.append(point);
  d["point_coords"] = points;
  d["stability_score"] = (double)r.stability_score;
  d["crop_box"] = crop;
  return d;
}

// Raises `type` with a message that may name a file whose name is not UTF-8 (a Linux name is bytes):
// those bytes as \xNN, where PyErr_SetString would fail to decode the message and lose it.
void set_error(PyObject* type, const char* what) {
  PyObject* text = PyUnicode_DecodeUTF8(what, (Py_ssize_t)std::strlen(what), "backslashreplace");
  if (!text) return;  // (out of memory: that error stays set)
  PyErr_SetObject(type, text);
  Py_DECREF(text);
}

}  // namespace

NB_MODULE(_samfast, m) {
  m.doc() = "samfast's C++ engine (see the samfast package for segment_anything's names)";

  // Errors: bad input -> ValueError (an image past the pixel limit: ImageTooLarge, a ValueError of its
  // own, for a server's 413), device memory -> MemoryError, anything else samfast -> RuntimeError.
  static PyObject* image_too_large = PyErr_NewException("samfast._samfast.ImageTooLarge", PyExc_ValueError, nullptr);
  m.attr("ImageTooLarge") = nb::borrow(image_too_large);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ImageTooLarge& e) {
      set_error(image_too_large, e.what());
    } catch (const InvalidArgument& e) {
      set_error(PyExc_ValueError, e.what());
    } catch (const OutOfMemory& e) {
      set_error(PyExc_MemoryError, e.what());
    } catch (const Error& e) {
      set_error(PyExc_RuntimeError, e.what());
    }
  });

  m.def("precision_names", [] { return std::vector<std::string>(precision_names().begin(), precision_names().end()); });

  nb::class_<ModelHandle>(m, "Model", "A SAM model on one device (weights uploaded once).")
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::string& device, const std::string& precision, bool cuda_graphs,
             const std::string& decoder_precision) {
            ModelOptions o = options_of(device, precision, cuda_graphs, decoder_precision);
            nb::gil_scoped_release no_gil;
            return std::make_shared<ModelHandle>(Model::load(path.string(), o));
          },
          "path"_a, "device"_a = "auto", "precision"_a = "auto", "cuda_graphs"_a = true, "decoder_precision"_a = "auto",
          "Loads a .pth or .safetensors SAM checkpoint; the model type is read off its tensor shapes.")
      .def_static(
          "from_arrays",
          [](const std::vector<std::string>& names, const std::vector<FloatArray>& arrays, const std::string& device,
             const std::string& precision, bool cuda_graphs, const std::string& decoder_precision) {
            if (names.size() != arrays.size()) throw InvalidArgument("from_arrays: names and arrays differ in count");
            std::vector<std::pair<std::string, Tensor>> tensors;
            for (size_t i = 0; i < names.size(); ++i) tensors.emplace_back(names[i], tensor_from(arrays[i]));
            ModelOptions o = options_of(device, precision, cuda_graphs, decoder_precision);
            nb::gil_scoped_release no_gil;
            return std::make_shared<ModelHandle>(Model::from_tensors(std::move(tensors), o));
          },
          "names"_a, "arrays"_a, "device"_a = "auto", "precision"_a = "auto", "cuda_graphs"_a = true, "decoder_precision"_a = "auto",
          "A model from named float32 arrays in upstream's state_dict layout (validated against the config "
          "their shapes imply).")
      .def_static(
          "synthetic",
          [](const std::string& name, uint64_t seed, const std::string& device, const std::string& precision,
             bool cuda_graphs, const std::string& decoder_precision) {
            ModelOptions o = options_of(device, precision, cuda_graphs, decoder_precision);
            SamConfig cfg = SamConfig::preset(name);
            nb::gil_scoped_release no_gil;
            return std::make_shared<ModelHandle>(Model::from_tensors(Model::synthetic_tensors(cfg, seed), o));
          },
          "name"_a, "seed"_a = 0, "device"_a = "auto", "precision"_a = "auto", "cuda_graphs"_a = true, "decoder_precision"_a = "auto",
          "Random weights in upstream's layout for vit_b, vit_l, vit_h or tiny: its masks are meaningless.")
      .def(
          "to_device",
          [](const ModelHandle& h, const std::string& device, const std::string& precision, bool cuda_graphs,
             const std::string& decoder_precision) {
            ModelOptions o = options_of(device, precision, cuda_graphs, decoder_precision);
            nb::gil_scoped_release no_gil;
            return std::make_shared<ModelHandle>(Model::from_tensors(h.model.tensors(), o));
          },
          "device"_a, "precision"_a = "auto", "cuda_graphs"_a = true, "decoder_precision"_a = "auto",
          "The same weights on another device or precision.")
      .def_prop_ro("device", [](const ModelHandle& h) { return h.model.device(); })
      .def_prop_ro("precision", [](const ModelHandle& h) { return std::string(to_string(h.model.precision())); })
      .def_prop_ro("decoder_precision",
                   [](const ModelHandle& h) { return std::string(to_string(h.model.decoder_precision())); })
      .def_prop_ro("backend_note", [](const ModelHandle& h) { return h.model.backend_note(); })
      .def_prop_ro("model_type", [](const ModelHandle& h) { return h.model.config().name(); })
      .def_prop_ro("img_size", [](const ModelHandle& h) { return h.model.config().img_size; })
      .def_prop_ro("low_res_size", [](const ModelHandle& h) { return 4 * h.model.config().grid(); })
      .def_prop_ro("parameter_count", [](const ModelHandle& h) { return h.model.parameter_count(); })
      .def("state_arrays",
           [](const ModelHandle& h) {
             std::vector<std::pair<std::string, nb::ndarray<nb::numpy>>> out;
             for (const auto& [n, t] : h.model.tensors()) out.emplace_back(n, share(t));
             return out;
           },
           "The weights as (name, float32 array) pairs sharing the model's host copy (read them, do not write).")
      .def(
          "memory_use",
          [](const ModelHandle& h) {
            const Model::MemoryUse use = h.model.memory_use();
            nb::dict d;
            d["weights"] = use.weights, d["weights_filled"] = use.weights_filled;
            d["graph_arena"] = use.graph_arena, d["graphs_in_arena"] = use.graphs_in_arena;
            d["peak"] = h.model.peak_memory_bytes();
            return d;
          },
          "Device memory in bytes: the weights' allocation, the CUDA-graph arena, the peak so far (zeros on the CPU).")
      .def("synchronize", [](const ModelHandle& h) {
        Computing c(h);
        h.model.synchronize();
      });

  nb::class_<EncoderInput>(m, "PreparedImage", "An image resized for the encoder (host memory; the backend normalizes and pads it).")
      .def_prop_ro("original_size", [](const EncoderInput& in) { return in.original_size; })
      .def_prop_ro("input_size", [](const EncoderInput& in) { return in.input_size; });
  m.def(
      "prepare_image",
      [](const ModelHandle& h, ByteArray rgb) {
        Image img = image_from(rgb);
        nb::gil_scoped_release no_gil;  // (host work only: needs no model lock)
        return Predictor::prepare(img, h.model.config().img_size);
      },
      "model"_a, "image"_a,
      "The host half of set_image for an RGB (H, W, 3) uint8 image, run without the model's lock: "
      "Predictor.set_prepared_images then runs the encoder on a batch of them.");

  nb::class_<PredictorHandle>(m, "Predictor", "Set an image once, then predict masks for prompts.")
      .def(nb::init<ModelPtr>(), "model"_a)
      .def(
          "set_image",
          [](PredictorHandle& p, ByteArray rgb) {
            Image img = image_from(rgb);
            Computing c(*p.model);
            p.predictor.set_image(img);
          },
          "image"_a, "An RGB (H, W, 3) uint8 image: resized, normalized and run through the image encoder.")
      .def(
          "set_prepared_image",
          [](PredictorHandle& p, FloatArray resized, std::pair<int, int> original_size) {
            EncoderInput in;
            in.image = normalize_and_pad(tensor_from(resized), p.model->model.config().img_size);
            in.input_size = {(int)resized.shape(resized.ndim() - 2), (int)resized.shape(resized.ndim() - 1)};
            in.original_size = original_size;
            if (original_size.first <= 0 || original_size.second <= 0)
              throw InvalidArgument("original_image_size must be positive (h, w)");
            Computing c(*p.model);
            p.predictor.set_image(in);
          },
          "transformed_image"_a, "original_image_size"_a,
          "An image already resized (1, 3, h, w) float32 in 0..255, as upstream's set_torch_image takes it.")
      .def(
          "set_images",
          [](PredictorHandle& p, const std::vector<ByteArray>& rgbs) {
            std::vector<Image> imgs;
            for (const ByteArray& a : rgbs) imgs.push_back(image_from(a));
            Computing c(*p.model);
            p.predictor.set_images(imgs);
          },
          "images"_a, "Several RGB images through the encoder in one batch; prompts then name their image.")
      .def(
          "set_prepared_images",
          [](PredictorHandle& p, const std::vector<const EncoderInput*>& inputs) {
            std::vector<EncoderInput> batch;
            for (const EncoderInput* in : inputs) batch.push_back(*in);  // (tensors shared, not copied)
            Computing c(*p.model);
            p.predictor.set_images(batch);
          },
          "images"_a, "Images from prepare_image through the encoder in one batch (a server's dynamic batch).")
      .def(
          "select",
          [](const PredictorHandle& p, int image) {
            Computing c(*p.model);
            return PredictorHandle(p.model, p.predictor.select(image));
          },
          "image"_a, "One image of set_images as a predictor of its own (its embedding copied out).")
      .def_static(
          "join",
          [](const std::vector<const PredictorHandle*>& parts) {
            if (parts.empty()) throw InvalidArgument("join: no predictors");
            std::vector<const Predictor*> ps;
            for (const PredictorHandle* h : parts) {
              if (h->model != parts[0]->model) throw InvalidArgument("join: the predictors belong to different models");
              ps.push_back(&h->predictor);
            }
            Computing c(*parts[0]->model);
            return PredictorHandle(parts[0]->model, Predictor::join(ps));
          },
          "predictors"_a,
          "The images of several predictors, in order, as one predictor: prompts on all of them decode in one "
          "ragged predict_batch.")
      .def(
          "to_host",
          [](PredictorHandle& p) {
            Computing c(*p.model);
            p.predictor.to_host();
          },
          "Moves the image embedding to host memory (frees its device memory).")
      .def(
          "to_device",
          [](PredictorHandle& p) {
            Computing c(*p.model);
            p.predictor.to_device();
          },
          "Moves a host-held image embedding back to the model's device (predict needs it there).")
      .def_prop_ro("on_device", [](const PredictorHandle& p) { return p.predictor.on_device(); })
      .def_prop_ro("is_image_set", [](const PredictorHandle& p) { return p.predictor.is_image_set(); })
      .def_prop_ro("image_count", [](const PredictorHandle& p) { return p.predictor.image_count(); })
      .def("original_size", [](const PredictorHandle& p, int image) { return p.predictor.original_size(image); }, "image"_a = 0)
      .def("input_size", [](const PredictorHandle& p, int image) { return p.predictor.input_size(image); }, "image"_a = 0)
      .def(
          "image_embedding",
          [](const PredictorHandle& p, int image) {
            Tensor e;
            {
              Computing c(*p.model);
              e = p.predictor.image_embedding(image);
            }
            return share(e);
          },
          "image"_a = 0)
      .def(
          "predict",
          [](const PredictorHandle& p, std::optional<FloatArray> points,
             std::optional<IntArray> labels, std::optional<FloatArray> box,
             std::optional<FloatArray> mask_input, bool multimask_output, bool return_logits, int image) {
            Prompt prompt = prompt_from(points, labels, box, mask_input, image);
            Prediction r;
            {
              Computing c(*p.model);
              r = p.predictor.predict(prompt, multimask_output, return_logits);
            }
            return prediction_tuple(r);
          },
          "point_coords"_a.none(), "point_labels"_a.none(), "box"_a.none(), "mask_input"_a.none(),
          "multimask_output"_a = true, "return_logits"_a = false, "image"_a = 0,
          "One prompt in original-image pixels -> (masks (C, H, W), scores (C,), low-res logits (C, L, L)).")
      .def(
          "predict_batch",
          [](const PredictorHandle& p, const std::vector<std::optional<FloatArray>>& points,
             const std::vector<std::optional<IntArray>>& labels, const std::vector<std::optional<FloatArray>>& boxes,
             const std::vector<std::optional<FloatArray>>& mask_inputs, const std::vector<int>& images,
             bool multimask_output, bool return_logits) {
            const size_t n = images.size();
            if (points.size() != n || labels.size() != n || boxes.size() != n || mask_inputs.size() != n)
              throw InvalidArgument("predict_batch: the prompt lists differ in length");
            std::vector<Prompt> batch;
            for (size_t i = 0; i < n; ++i) batch.push_back(prompt_from(points[i], labels[i], boxes[i], mask_inputs[i], images[i]));
            std::vector<Prediction> results;
            {
              Computing c(*p.model);
              results = p.predictor.predict_batch(batch, multimask_output, return_logits);
            }
            nb::list out;
            for (const Prediction& r : results) out.append(prediction_tuple(r));
            return out;
          },
          "point_coords"_a, "point_labels"_a, "boxes"_a, "mask_inputs"_a, "images"_a, "multimask_output"_a = true,
          "return_logits"_a = false, "Many prompts (parallel lists, None for absent parts) decoded together.")
      .def(
          "decode_on_device",
          [](const PredictorHandle& p, std::optional<FloatArray> points, std::optional<FloatArray> labels,
             std::optional<FloatArray> boxes, std::optional<FloatArray> masks, bool multimask_output, bool binarize) {
            PromptBatch batch;
            if (points) batch.points = tensor_from(*points), batch.labels = tensor_from(*labels);
            if (boxes) batch.boxes = tensor_from(*boxes);
            if (masks) batch.masks = tensor_from(*masks);
            const Model& model = p.model->model;
            Tensor out_masks, low_res, iou;
            {
              Computing c(*p.model);
              DecoderOutput dec = p.predictor.decode(batch, multimask_output);
              out_masks = model.postprocess_masks(dec.low_res_masks, p.predictor.input_size(), p.predictor.original_size(),
                                                  binarize, /*to_host=*/false);
              low_res = dec.low_res_masks, iou = dec.iou;
              // The arrays go to torch, whose stream knows nothing of the library's: the work is
              // finished before they are handed over (a wait on the device, no copy to the host).
              model.synchronize();
            }
            const std::string& dev = model.device();
            return nb::make_tuple(share<nb::pytorch>(out_masks, dev), share<nb::pytorch>(iou, dev),
                                  share<nb::pytorch>(low_res, dev));
          },
          "points"_a.none(), "labels"_a.none(), "boxes"_a.none(), "masks"_a.none(), "multimask_output"_a,
          "binarize"_a,
          "upstream's predict_torch: prompts in input-size coordinates (host float32), outputs as torch tensors "
          "on the model's device, shared with the library (no copy).");

  nb::class_<GeneratorHandle>(m, "MaskGenerator", "Segment everything: masks for a grid of points over the image.")
      .def(
          "__init__",
          [](GeneratorHandle* self, ModelPtr model, int points_per_side, int points_per_batch, double pred_iou_thresh,
             double stability_score_thresh, double stability_score_offset, double box_nms_thresh, int crop_n_layers,
             double crop_nms_thresh, double crop_overlap_ratio, int crop_n_points_downscale_factor,
             std::optional<std::vector<GridArray>> point_grids, int min_mask_region_area, const std::string& output_mode,
             double mask_threshold) {
            new (self) GeneratorHandle(
                std::move(model), generator_options(points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                                                    stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
                                                    crop_overlap_ratio, crop_n_points_downscale_factor, point_grids,
                                                    min_mask_region_area, output_mode, mask_threshold));
          },
          "model"_a, GENERATOR_ARGS)
      .def_static(
          "validate",
          [](int points_per_side, int points_per_batch, double pred_iou_thresh, double stability_score_thresh,
             double stability_score_offset, double box_nms_thresh, int crop_n_layers, double crop_nms_thresh,
             double crop_overlap_ratio, int crop_n_points_downscale_factor, std::optional<std::vector<GridArray>> point_grids,
             int min_mask_region_area, const std::string& output_mode, double mask_threshold) {
            MaskGenerator::validate(generator_options(points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                                                      stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
                                                      crop_overlap_ratio, crop_n_points_downscale_factor, point_grids,
                                                      min_mask_region_area, output_mode, mask_threshold));
          },
          GENERATOR_ARGS, "The constructor's checks of the options, without a model.")
      .def(
          "generate",
          [](GeneratorHandle& g, ByteArray rgb, std::function<void(int, int)> progress, const EncoderInput* prepared) {
            Image img = image_from(rgb);
            if (prepared && prepared->original_size != std::pair<int, int>{img.height, img.width})
              throw InvalidArgument("generate: the prepared image is of another size than the image");
            // Between crops: the caller's progress, and Ctrl-C (a KeyboardInterrupt stops the image).
            auto between_crops = [&](int done, int total) {
              nb::gil_scoped_acquire gil;
              if (PyErr_CheckSignals() != 0) throw nb::python_error();
              if (progress) progress(done, total);
            };
            std::vector<MaskRecord> records;
            GenerateTimings timings;
            {
              Computing c(*g.model);
              records = g.generator.generate(img, &timings, prepared, between_crops);
            }
            nb::list out;
            for (MaskRecord& r : records) out.append(record_dict(r, g.generator.options().output_mode));
            nb::dict t;
            t["preprocess_ms"] = timings.preprocess_ms, t["encoder_ms"] = timings.encoder_ms;
            t["decoder_ms"] = timings.decoder_ms, t["postprocess_ms"] = timings.postprocess_ms;
            t["candidates"] = timings.candidates;
            return nb::make_tuple(out, t);
          },
          "image"_a, "progress"_a.none() = nb::none(), "prepared"_a.none() = nb::none(),
          "Records in upstream's order and form, and where the time went. prepared, if given, is "
          "prepare_image of this image, made ahead (on another thread while the previous image computes).");

  // The C++ side of bench/python_overhead.py: the same call as predict / generate, repeated in a C++
  // loop, so that the Python layer's cost is measured against the library's in one process.
  m.def(
      "_time_predict",
      [](const PredictorHandle& p, FloatArray points, IntArray labels, bool multimask_output, int runs) {
        const Prompt prompt = prompt_from(points, labels, std::nullopt, std::nullopt, 0);
        Computing c(*p.model);
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < runs; ++i) p.predictor.predict(prompt, multimask_output, false);
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / runs;
      },
      "predictor"_a, "point_coords"_a, "point_labels"_a, "multimask_output"_a, "runs"_a,
      "Mean microseconds of Predictor::predict (masks to the host), timed in C++.");
  m.def(
      "_time_generate",
      [](GeneratorHandle& g, ByteArray rgb, int runs) {
        const Image img = image_from(rgb);
        Computing c(*g.model);
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < runs; ++i) g.generator.generate(img);
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / runs;
      },
      "generator"_a, "image"_a, "runs"_a, "Mean milliseconds of MaskGenerator::generate, timed in C++.");

  // Helpers of upstream's utils/amg.py and utils/transforms.py.
  m.def(
      "mask_to_rle",
      [](ByteArray mask) {
        if (mask.ndim() != 2) throw InvalidArgument("mask_to_rle: expected a (H, W) mask");
        nb::gil_scoped_release no_gil;
        return mask_to_rle(mask.data(), (int)mask.shape(0), (int)mask.shape(1)).counts;
      },
      "mask"_a, "Uncompressed RLE counts of a (H, W) mask (column-major runs, as pycocotools).");
  m.def(
      "mask_to_coco_rle",
      [](ByteArray mask) {
        if (mask.ndim() != 2) throw InvalidArgument("mask_to_coco_rle: expected a (H, W) mask");
        nb::gil_scoped_release no_gil;  // (no list of counts through Python: a noisy mask has ~10^5 runs)
        return rle_to_coco_string(mask_to_rle(mask.data(), (int)mask.shape(0), (int)mask.shape(1)));
      },
      "mask"_a, "A (H, W) mask as the counts string of COCO's compressed RLE (pycocotools' encode).");
  m.def(
      "masks_to_coco_rle",
      [](const std::vector<ByteArray>& batches) {
        std::vector<MaskView> views;
        for (const ByteArray& b : batches) {
          if (b.ndim() != 3) throw InvalidArgument("masks_to_coco_rle: expected (N, H, W) masks");
          const size_t plane = b.shape(1) * b.shape(2);
          for (size_t i = 0; i < b.shape(0); ++i) views.push_back({b.data() + i * plane, (int)b.shape(1), (int)b.shape(2)});
        }
        std::vector<std::string> flat;
        {
          nb::gil_scoped_release no_gil;
          flat = masks_to_coco_strings(views);
        }
        std::vector<std::vector<std::string>> out;
        size_t k = 0;
        for (const ByteArray& b : batches) {
          out.emplace_back(flat.begin() + k, flat.begin() + k + b.shape(0));
          k += b.shape(0);
        }
        return out;
      },
      "masks"_a,
      "Each (N, H, W) array of masks as its N COCO RLE counts strings; all the masks on several threads at once.");
  m.def(
      "mask_to_label_studio_rle",
      [](ByteArray mask) {
        if (mask.ndim() != 2) throw InvalidArgument("mask_to_label_studio_rle: expected a (H, W) mask");
        std::vector<uint8_t> rle;
        {
          nb::gil_scoped_release no_gil;
          rle = mask_to_label_studio_rle(mask.data(), (int)mask.shape(0), (int)mask.shape(1));
        }
        return nb::bytes(reinterpret_cast<const char*>(rle.data()), rle.size());
      },
      "mask"_a, "A (H, W) mask (non-zero inside) as Label Studio's brush RLE bytes (label_studio_converter's mask2rle).");
  m.def(
      "rle_to_mask",
      [](std::vector<uint32_t> counts, int h, int w) { return bool_mask(rle_to_mask(Rle{h, w, std::move(counts)}), h, w); },
      "counts"_a, "height"_a, "width"_a);
  m.def("rle_to_coco_string", [](std::vector<uint32_t> counts, int h, int w) { return rle_to_coco_string(Rle{h, w, std::move(counts)}); },
        "counts"_a, "height"_a, "width"_a, "pycocotools' compressed counts string.");
  m.def(
      "remove_small_regions",
      [](ByteArray mask, double area_thresh, bool holes) {
        if (mask.ndim() != 2) throw InvalidArgument("remove_small_regions: expected a (H, W) mask");
        const int h = (int)mask.shape(0), w = (int)mask.shape(1);
        std::vector<uint8_t> bytes(mask.data(), mask.data() + mask.size());
        const bool changed = remove_small_regions(bytes, h, w, area_thresh, holes);
        return nb::make_tuple(bool_mask(std::move(bytes), h, w), changed);
      },
      "mask"_a, "area_thresh"_a, "holes"_a);
  m.def(
      "build_all_layer_point_grids",
      [](int n_per_side, int n_layers, int scale_per_layer) {
        nb::list out;
        for (auto& grid : build_all_layer_point_grids(n_per_side, n_layers, scale_per_layer)) {
          const size_t n = grid.size();
          out.append(own<double>(std::move(grid), {n, 2}));
        }
        return out;
      },
      "n_per_side"_a, "n_layers"_a, "scale_per_layer"_a);
  m.def("preprocess_shape", &preprocess_shape, "oldh"_a, "oldw"_a, "long_side_length"_a);
  m.def(
      "resize_image",
      [](ByteArray rgb, int h, int w) {
        Image in = image_from(rgb);
        Image out;
        {
          nb::gil_scoped_release no_gil;
          out = resize_pil_bilinear(in, h, w);
        }
        return rgb_array(std::move(out));
      },
      "image"_a, "height"_a, "width"_a, "PIL's bilinear resize of an RGB uint8 image, bit-exact.");
  m.def(
      "encode_png_gray",
      [](ByteArray gray) {
        if (gray.ndim() != 2) throw InvalidArgument("encode_png_gray: expected a (H, W) uint8 array");
        std::string png;
        {
          nb::gil_scoped_release no_gil;
          png = encode_png_gray((int)gray.shape(0), (int)gray.shape(1),
                                std::vector<uint8_t>(gray.data(), gray.data() + gray.size()));
        }
        return nb::bytes(png.data(), png.size());
      },
      "gray"_a, "A (H, W) uint8 array as PNG bytes.");
  m.def(
      "read_image",
      [](const std::filesystem::path& path, bool exif_orientation, int64_t max_pixels) {
        if (max_pixels <= 0) throw InvalidArgument("max_pixels must be positive, got " + std::to_string(max_pixels));
        Image img;
        {
          nb::gil_scoped_release no_gil;
          img = read_image(path.string(), std::min(max_pixels, kMaxImagePixels),
                           exif_orientation ? ExifOrientation::apply : ExifOrientation::ignore);
        }
        return rgb_array(std::move(img));
      },
      "path"_a, "exif_orientation"_a = true, "max_pixels"_a = kMaxImagePixels,
      "An image file as RGB (H, W, 3) uint8; a JPEG's EXIF orientation applied (as cv2.imread) unless "
      "exif_orientation is False (as PIL's Image.open). An image of more than max_pixels pixels (at most "
      "2^28) raises ImageTooLarge (a ValueError) from its header, before it is decoded.");
}
