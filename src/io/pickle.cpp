#include "io/pickle.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "io/checkpoint_internal.h"
#include "io/printable.h"
#include "samfast/error.h"

namespace samfast::pickle {
namespace {

// Limits no real state_dict comes near (SAM ViT-H's data.pkl: 100 KB, 594 tensors, ~21k opcodes,
// ~6k memo entries). Without them a 1 MB data.pkl whose memo hands one large tuple to thousands of
// tensors made the loader copy gigabytes before any shape was checked; with them a crafted
// data.pkl costs at most a few hundred MB and fails naming the limit it hit.
constexpr size_t kMaxStack = size_t{1} << 20;           // stack depth, and MARKs open at once
constexpr size_t kMaxObjects = size_t{1} << 20;         // objects built, ~100 bytes each
constexpr size_t kMaxMemo = size_t{1} << 20;            // memo entries
constexpr size_t kMaxMetadataBytes = size_t{64} << 20;  // strings, container items, sizes and strides
constexpr size_t kMaxEntries = size_t{1} << 16;         // entries of the state_dict
constexpr size_t kMaxGlobalName = 256;                  // the globals a state_dict uses are ~30 bytes

std::string metadata_limit() {
  return "builds more than " + std::to_string(kMaxMetadataBytes >> 20) +
         " MB of strings, containers, sizes and strides (the limit on a state_dict's metadata)";
}

// Every object the unpickler builds lives in one arena and refers to others by plain pointer, so
// self-referencing or deeply nested pickles cannot leak or recurse on destruction.
struct Value {
  enum class Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t integer = 0;          // Int, Bool
  std::string text;             // Str, Bytes; Global: "module.name"; Storage: its key
  const char* dtype = nullptr;  // Storage, and a Global naming a storage class
  std::vector<Value*> items;    // Tuple, List; Dict: key, value, key, value, ...
  std::unique_ptr<TensorRef> tensor;
};

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::Str: return "str";
    case Value::Kind::Bytes: return "bytes";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::List: return "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Global: return "class or function";
    case Value::Kind::Storage: return "storage";
    case Value::Kind::Tensor: return "tensor";
  }
  return "object";
}

// torch.<Name>Storage classes as torch.save names them, with the dtype each holds. Listing the
// unsupported ones too lets the error name the dtype instead of calling the global forbidden.
struct StorageClass {
  const char* name;
  const char* dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", "float32"},        {"HalfStorage", "float16"},          {"BFloat16Storage", "bfloat16"},
    {"DoubleStorage", "float64"},       {"LongStorage", "int64"},            {"IntStorage", "int32"},
    {"ShortStorage", "int16"},          {"CharStorage", "int8"},             {"ByteStorage", "uint8"},
    {"BoolStorage", "bool"},            {"ComplexFloatStorage", "complex64"}, {"ComplexDoubleStorage", "complex128"},
};

constexpr char kOrderedDict[] = "collections.OrderedDict";
constexpr char kRebuildTensor[] = "torch._utils._rebuild_tensor_v2";
constexpr char kRebuildParameter[] = "torch._utils._rebuild_parameter";

class Unpickler {
 public:
  Unpickler(std::span<const uint8_t> data, const std::string& what) : data_(data), what_(what) {}

  const Value* run() {
    while (pos_ < data_.size()) {
      op_pos_ = pos_;
      const uint8_t op = data_[pos_++];
      if (op == '.') {
        if (stack_.empty()) fail("stops with nothing on the stack");
        return stack_.back();
      }
      step(op);
    }
    fail("ends without a STOP opcode (truncated?)");
  }

  size_t metadata_bytes() const { return metadata_bytes_; }

  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(what_ + ": data.pkl " + problem + " (at byte " + std::to_string(op_pos_) + ")");
  }

 private:
  void step(uint8_t op) {
    using K = Value::Kind;
    switch (op) {
      case 0x80: take(1); break;  // PROTO: any version; only the opcodes matter
      case 0x95: take(8); break;  // FRAME: framing is a read-ahead hint
      case '(':
        if (marks_.size() >= kMaxStack) fail("nests too deeply");
        marks_.push_back(stack_.size());
        break;
      case '}': push(make(K::Dict)); break;
      case ']': push(make(K::List)); break;
      case ')': push(make(K::Tuple)); break;
      case 't': push(tuple(pop_mark())); break;
      case 0x85: push(tuple(pop_n(1))); break;
      case 0x86: push(tuple(pop_n(2))); break;
      case 0x87: push(tuple(pop_n(3))); break;
      case 'q': memo_put(static_cast<uint32_t>(le(1))); break;
      case 'r': memo_put(static_cast<uint32_t>(le(4))); break;
      case 0x94: memo_put(static_cast<uint32_t>(memo_.size())); break;
      case 'h': push(memo_get(static_cast<uint32_t>(le(1)))); break;
      case 'j': push(memo_get(static_cast<uint32_t>(le(4)))); break;
      case 'X': push(text(K::Str, le(4))); break;
      case 0x8c: push(text(K::Str, le(1))); break;
      case 0x8d: push(text(K::Str, le(8))); break;
      case 'C': push(text(K::Bytes, le(1))); break;
      case 'B': push(text(K::Bytes, le(4))); break;
      case 'J': push(integer(K::Int, static_cast<int32_t>(static_cast<uint32_t>(le(4))))); break;
      case 'K': push(integer(K::Int, static_cast<int64_t>(le(1)))); break;
      case 'M': push(integer(K::Int, static_cast<int64_t>(le(2)))); break;
      case 0x8a: push(integer(K::Int, long1())); break;
      case 0x88: push(integer(K::Bool, 1)); break;
      case 0x89: push(integer(K::Bool, 0)); break;
      case 'N': push(make(K::None)); break;
      case 'G': take(8), push(make(K::Float)); break;  // a float's value is never needed
      case 's': {
        Value* value = pop();
        Value* key = pop();
        set_items(top(), {key, value});
        break;
      }
      case 'u': {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) fail("has SETITEMS with an odd number of items");
        set_items(top(), items);
        break;
      }
      case 'a': {
        Value* item = pop();
        append(top(), {item});
        break;
      }
      case 'e': {
        std::vector<Value*> items = pop_mark();
        append(top(), items);
        break;
      }
      case 'c': {
        std::string module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: {
        Value* name = pop();
        Value* module = pop();
        if (name->kind != K::Str || module->kind != K::Str) fail("has STACK_GLOBAL with non-string names");
        push(global(module->text, name->text));
        break;
      }
      case 'R': {
        Value* args = pop();
        Value* callable = pop();
        push(reduce(callable, args));
        break;
      }
      // BUILD sets an object's state; for a state_dict that is the OrderedDict's _metadata
      // (module versions), which loading weights does not need.
      case 'b': pop(), top(); break;
      case 'Q': push(persistent_load(pop())); break;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("has opcode ") + hex + ", which a state_dict never uses; refusing to load it");
      }
    }
  }

  const uint8_t* take(uint64_t n) {
    if (n > data_.size() - pos_) fail("ends in the middle of an opcode's argument (truncated?)");
    const uint8_t* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }

  uint64_t le(int n) {
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }

  int64_t long1() {
    const uint64_t n = le(1);
    if (n > 8) fail("has an integer of " + std::to_string(n) + " bytes, too large for a state_dict");
    if (n == 0) return 0;
    uint64_t v = le(static_cast<int>(n));
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }

  std::string line() {
    const auto begin = data_.begin() + static_cast<std::ptrdiff_t>(pos_);
    const auto stop = data_.size() - pos_ > kMaxGlobalName ? begin + kMaxGlobalName : data_.end();
    const auto end = std::find(begin, stop, uint8_t{'\n'});
    if (end == stop && stop != data_.end()) fail("has a GLOBAL name longer than any state_dict uses");
    if (end == data_.end()) fail("ends inside a GLOBAL name (truncated?)");
    std::string s(begin, end);
    pos_ += s.size() + 1;
    return s;
  }

  // Counts what the pickle makes the unpickler copy or allocate beyond the objects themselves.
  void charge(size_t bytes) {
    metadata_bytes_ += bytes;
    if (metadata_bytes_ > kMaxMetadataBytes) fail(metadata_limit());
  }

  Value* make(Value::Kind kind) {
    if (arena_.size() >= kMaxObjects)
      fail("builds more than " + std::to_string(kMaxObjects) + " objects (the limit on a state_dict's pickle)");
    arena_.emplace_back().kind = kind;
    return &arena_.back();
  }
  Value* integer(Value::Kind kind, int64_t v) {
    Value* value = make(kind);
    value->integer = v;
    return value;
  }
  Value* text(Value::Kind kind, uint64_t n) {
    const uint8_t* p = take(n);
    charge(n);
    Value* value = make(kind);
    value->text.assign(reinterpret_cast<const char*>(p), n);
    return value;
  }
  Value* tuple(std::vector<Value*> items) {
    charge(items.size() * sizeof(Value*));
    Value* value = make(Value::Kind::Tuple);
    value->items = std::move(items);
    return value;
  }

  void push(Value* v) {
    if (stack_.size() >= kMaxStack) fail("grows its stack past any state_dict's");
    stack_.push_back(v);
  }
  Value* top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) fail("uses an empty stack (malformed)");
    return stack_.back();
  }
  Value* pop() {
    Value* v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<Value*> pop_n(size_t n) {
    std::vector<Value*> items(n);
    for (size_t i = n; i-- > 0;) items[i] = pop();
    return items;
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("closes a MARK that was never opened (malformed)");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  void memo_put(uint32_t index) {
    Value* value = top();
    const auto [it, added] = memo_.try_emplace(index, value);
    if (!added) {
      it->second = value;
    } else if (memo_.size() > kMaxMemo) {
      fail("stores more than " + std::to_string(kMaxMemo) + " memo entries (the limit on a state_dict's pickle)");
    }
  }
  Value* memo_get(uint32_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) fail("refers to memo entry " + std::to_string(index) + ", which was never stored");
    return it->second;
  }

  void set_items(Value* dict, const std::vector<Value*>& items) {
    if (dict->kind != Value::Kind::Dict) fail(std::string("sets items on a ") + kind_name(dict->kind));
    charge(items.size() * sizeof(Value*));
    dict->items.insert(dict->items.end(), items.begin(), items.end());
  }
  void append(Value* list, const std::vector<Value*>& items) {
    if (list->kind != Value::Kind::List) fail(std::string("appends to a ") + kind_name(list->kind));
    charge(items.size() * sizeof(Value*));
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  Value* global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    charge(full.size());
    Value* value = make(Value::Kind::Global);
    value->text = full;
    if (full == kOrderedDict || full == kRebuildTensor || full == kRebuildParameter) return value;
    if (module == "torch")
      for (const StorageClass& c : kStorageClasses)
        if (name == c.name) {
          value->dtype = c.dtype;
          return value;
        }
    throw Error(what_ + ": pickle asks for global '" + printable(full) +
                "', which a state_dict never needs; refusing to load it");
  }

  std::vector<int64_t> ints(const Value* v, const char* role) {
    if (v->kind != Value::Kind::Tuple) fail(std::string("gives a ") + kind_name(v->kind) + " as " + role);
    if (v->items.size() > detail::kMaxTensorDims)
      fail(std::string("gives ") + role + " of " + std::to_string(v->items.size()) + " dimensions, more than the " +
           std::to_string(detail::kMaxTensorDims) + " allowed (SAM's tensors have at most 4)");
    charge(v->items.size() * sizeof(int64_t));
    std::vector<int64_t> out;
    for (const Value* item : v->items) {
      if (item->kind != Value::Kind::Int) fail(std::string("has a ") + kind_name(item->kind) + " in " + role);
      out.push_back(item->integer);
    }
    return out;
  }

  Value* reduce(const Value* callable, const Value* args) {
    using K = Value::Kind;
    if (callable->kind != K::Global) fail(std::string("calls a ") + kind_name(callable->kind));
    if (args->kind != K::Tuple) fail("calls " + callable->text + " with a " + kind_name(args->kind));
    const std::vector<Value*>& a = args->items;
    if (callable->text == kOrderedDict) {
      if (!a.empty()) fail("builds an OrderedDict from arguments, which torch.save never does");
      return make(K::Dict);
    }
    if (callable->text == kRebuildTensor) {
      if (a.size() != 6 && a.size() != 7)
        fail("calls _rebuild_tensor_v2 with " + std::to_string(a.size()) + " arguments instead of 6 or 7");
      if (a[0]->kind != K::Storage) fail(std::string("rebuilds a tensor from a ") + kind_name(a[0]->kind));
      if (a[1]->kind != K::Int) fail("gives a tensor a storage offset that is not an int");
      charge(sizeof(TensorRef) + a[0]->text.size());
      auto ref = std::make_unique<TensorRef>();
      ref->storage_key = a[0]->text;
      ref->dtype = a[0]->dtype;
      ref->storage_offset = a[1]->integer;
      ref->size = ints(a[2], "a tensor's size");
      ref->stride = ints(a[3], "a tensor's stride");
      if (ref->size.size() != ref->stride.size()) fail("gives a tensor a size and a stride of different lengths");
      Value* value = make(K::Tensor);
      value->tensor = std::move(ref);
      return value;
    }
    if (callable->text == kRebuildParameter) {
      if (a.size() != 3 || a[0]->kind != K::Tensor) fail("calls _rebuild_parameter with unexpected arguments");
      return a[0];  // a Parameter is its tensor plus requires_grad, which loading ignores
    }
    fail("calls " + callable->text + ", which a state_dict never calls");
  }

  // torch.save stores tensor data outside the pickle; the persistent id names the archive entry.
  // torch.save repeats the id for every tensor viewing a storage; each storage is described once.
  Value* persistent_load(const Value* pid) {
    using K = Value::Kind;
    const std::vector<Value*>& p = pid->items;
    if (pid->kind != K::Tuple || p.size() != 5 || p[0]->kind != K::Str || p[0]->text != "storage")
      fail("has a persistent id that is not ('storage', type, key, location, size)");
    if (p[1]->kind != K::Global || !p[1]->dtype) fail("has a storage whose type is not a torch storage class");
    if (p[2]->kind != K::Str || p[3]->kind != K::Str || p[4]->kind != K::Int)
      fail("has a storage whose key, location or size has the wrong type");
    if (const auto it = storages_.find(p[2]->text); it != storages_.end()) {
      if (std::string_view(it->second->dtype) != p[1]->dtype)
        fail("declares storage " + printable(p[2]->text) + " as both " + it->second->dtype + " and " + p[1]->dtype);
      return it->second;
    }
    charge(2 * p[2]->text.size());  // the key, in the storage and in storages_
    Value* storage = make(K::Storage);
    storage->text = p[2]->text;
    storage->dtype = p[1]->dtype;
    storages_.emplace(storage->text, storage);
    return storage;
  }

  std::span<const uint8_t> data_;
  const std::string& what_;
  size_t pos_ = 0, op_pos_ = 0;
  std::deque<Value> arena_;  // a deque never moves what it holds, so pointers into it stay valid
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value*> memo_;
  std::unordered_map<std::string, Value*> storages_;  // by key
  size_t metadata_bytes_ = 0;
};

const Value* dict_get(const Value* dict, const std::string& key) {
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2)
    if (dict->items[i]->kind == Value::Kind::Str && dict->items[i]->text == key) return dict->items[i + 1];
  return nullptr;
}

bool holds_only_tensors(const Value* dict) {
  for (size_t i = 1; i < dict->items.size(); i += 2)
    if (dict->items[i]->kind != Value::Kind::Tensor) return false;
  return true;
}

}  // namespace

std::vector<std::pair<std::string, TensorRef>> read_state_dict(std::span<const uint8_t> pkl,
                                                               const std::string& what) {
  Unpickler unpickler(pkl, what);
  const Value* dict = unpickler.run();
  if (dict->kind != Value::Kind::Dict)
    throw Error(what + ": data.pkl holds a " + kind_name(dict->kind) + ", not a state_dict (a dict of tensors)");
  // Training scripts often save {"model": state_dict, "optimizer": ..., "epoch": ...}.
  if (!holds_only_tensors(dict))
    for (const char* wrapper : {"state_dict", "model"})
      if (const Value* inner = dict_get(dict, wrapper); inner && inner->kind == Value::Kind::Dict) {
        dict = inner;
        break;
      }
  const size_t entries = dict->items.size() / 2;
  if (entries > kMaxEntries)
    throw Error(what + ": data.pkl's state_dict has " + std::to_string(entries) + " entries, more than the " +
                std::to_string(kMaxEntries) + " allowed (SAM ViT-H has 594)");
  // As in Python, a name set twice keeps its first position and its last value, so a pickle that
  // repeats one name thousands of times yields one tensor. Copies out count against the budget too.
  std::vector<std::pair<std::string, TensorRef>> out;
  std::unordered_map<std::string_view, size_t> position;  // views of the unpickler's strings
  size_t bytes = unpickler.metadata_bytes();
  for (size_t i = 0; i < dict->items.size(); i += 2) {
    const Value* key = dict->items[i];
    const Value* value = dict->items[i + 1];
    if (key->kind != Value::Kind::Str)
      throw Error(what + ": the state_dict has a " + kind_name(key->kind) + " key; tensor names must be strings");
    if (value->kind != Value::Kind::Tensor)
      throw Error(what + ": state_dict entry '" + printable(key->text) + "' is a " + kind_name(value->kind) +
                  ", not a tensor");
    const TensorRef& ref = *value->tensor;
    const auto [at, added] = position.try_emplace(key->text, out.size());
    bytes += (added ? key->text.size() : 0) + ref.storage_key.size() + (ref.size.size() + ref.stride.size()) * sizeof(int64_t);
    if (bytes > kMaxMetadataBytes) throw Error(what + ": data.pkl " + metadata_limit());
    if (added) {
      out.emplace_back(key->text, ref);
    } else {
      out[at->second].second = ref;
    }
  }
  return out;
}

namespace {

class PickleWriter {
 public:
  void op(char c) { out_ += c; }
  void u8(uint32_t v) { out_ += static_cast<char>(v & 0xFF); }
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) u8(static_cast<uint32_t>(v >> (8 * i)));
  }
  void raw(const std::string& s) { out_ += s; }
  void str(const std::string& s) {
    op('X');
    le(s.size(), 4);
    out_ += s;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K'), le(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op('M'), le(static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J'), le(static_cast<uint64_t>(v), 4);
    } else {  // LONG1: shortest little-endian two's complement
      int n = 1;
      while (n < 8 && (v >> (8 * n - 1)) != 0 && (v >> (8 * n - 1)) != -1) ++n;
      op('\x8a'), le(static_cast<uint64_t>(n), 1), le(static_cast<uint64_t>(v), n);
    }
  }
  void tuple_of(const std::vector<int64_t>& values) {
    static const char kSmallTuple[] = {')', '\x85', '\x86', '\x87'};
    if (values.size() > 3) op('(');
    for (int64_t v : values) integer(v);
    op(values.size() > 3 ? 't' : kSmallTuple[values.size()]);
  }
  // Repeated objects go through the memo as Python's pickler does: emitted once, then fetched.
  template <class Emit>
  void memoized(uint32_t slot, Emit emit) {
    if (slot < stored_.size() && stored_[slot]) {
      op('h'), le(slot, 1);
      return;
    }
    emit();
    op('q'), le(slot, 1);
    if (stored_.size() <= slot) stored_.resize(slot + 1);
    stored_[slot] = true;
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::vector<bool> stored_;
};

enum MemoSlot : uint32_t { kSlotOrderedDict, kSlotRebuild, kSlotStorageTag, kSlotFloatStorage, kSlotCpu };
constexpr size_t kSetItemsBatch = 1000;  // Python's pickler batches SETITEMS by this many

}  // namespace

std::string write_state_dict(const std::vector<TensorToWrite>& tensors) {
  PickleWriter w;
  w.op('\x80'), w.u8(2);
  auto ordered_dict = [&] { w.memoized(kSlotOrderedDict, [&] { w.raw("ccollections\nOrderedDict\n"); }); };
  ordered_dict();
  w.op(')'), w.op('R');
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i % kSetItemsBatch == 0) w.op('(');
    const std::vector<int64_t>& shape = tensors[i].shape;
    std::vector<int64_t> stride(shape.size());
    int64_t running = 1, numel = 1;
    for (size_t d = shape.size(); d-- > 0;) {
      stride[d] = running;
      running *= std::max<int64_t>(shape[d], 1);  // torch gives empty dims the strides of size 1
      numel *= shape[d];
    }
    w.str(tensors[i].name);
    w.memoized(kSlotRebuild, [&] { w.raw("ctorch._utils\n_rebuild_tensor_v2\n"); });
    w.op('(');
    w.op('(');  // persistent id: ('storage', FloatStorage, key, location, numel)
    w.memoized(kSlotStorageTag, [&] { w.str("storage"); });
    w.memoized(kSlotFloatStorage, [&] { w.raw("ctorch\nFloatStorage\n"); });
    w.str(std::to_string(i));
    w.memoized(kSlotCpu, [&] { w.str("cpu"); });
    w.integer(numel);
    w.op('t'), w.op('Q');
    w.integer(0);  // storage offset
    w.tuple_of(shape);
    w.tuple_of(stride);
    w.op('\x89');  // requires_grad=False
    ordered_dict();
    w.op(')'), w.op('R');  // backward_hooks=OrderedDict()
    w.op('t'), w.op('R');
    if (i % kSetItemsBatch == kSetItemsBatch - 1 || i + 1 == tensors.size()) w.op('u');
  }
  w.op('.');
  return w.take();
}

}  // namespace samfast::pickle
