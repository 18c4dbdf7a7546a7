// clsp_features ENCODER IMAGES.npy FEATURES.npy: encode images with a TorchScript encoder exported by
// `clsp export --torchscript`, after the checks the Python runtime makes on metadata.json (`--help` for the formats).
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] = "usage: clsp_features ENCODER IMAGES.npy FEATURES.npy (--help: formats)\n";
constexpr char kHelp[] = R"(usage: clsp_features ENCODER IMAGES.npy FEATURES.npy

Encode images with the encoder that `clsp export CONFIG --torchscript` wrote.
  ENCODER       its folder (<output_dir>/export/torchscript/encoder) or the model.pt in it. The metadata.json
                beside it is checked first, as the Python runtime does: a TorchScript encoder, the model file's
                SHA-256, and the torch version it was exported with (this runner links libtorch )" TORCH_VERSION R"().
  IMAGES.npy    uint8 [N, H, W, C] (channels last, 0-255), H = W = metadata "model.image_size" and
                C = "model.channels": the runner computes (x / 255 - mean) / std per channel with the recorded
                "model.mean" and "model.std" and feeds float32 [N, C, H, W]. Or float32 [N, C, H, W] already
                normalised that way, fed as it is. Little-endian, C order (numpy.save of a numpy array).
  FEATURES.npy  float32 [N, D]: the encoder's features (before the projector, not L2-normalised).
Errors are one line on stderr; exit status 2 for a wrong input or artifact, 1 for a failure inside libtorch.
)";
constexpr int64_t kBatch = 256;  // images per forward pass

// A wrong input or artifact: reported in one line with exit status 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string first_line(std::string_view text) { return std::string(text.substr(0, text.find('\n'))); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) throw InputError(path.string() + ": cannot read it");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---- JSON (RFC 8259), enough for metadata.json -------------------------------------------------------------------

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> items;         // array elements, or object values
  std::vector<std::string> keys;   // object keys: keys[i] names items[i]

  const Json* get(std::string_view key) const {
    if (type != Type::Object) return nullptr;
    auto found = std::find(keys.begin(), keys.end(), key);
    return found == keys.end() ? nullptr : &items[found - keys.begin()];
  }
};

class JsonParser {
 public:
  JsonParser(std::string_view text, std::string origin) : text_(text), origin_(std::move(origin)) {}

  Json document() {
    Json value = parse_value();
    skip_space();
    if (pos_ != text_.size()) fail("text after the end");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(origin_ + ": not valid JSON (" + what + " at byte " + std::to_string(pos_) + ")");
  }

  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  char peek() {
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end");
    return text_[pos_];
  }

  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  bool take(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  // After an element: true on ',', false on `close`.
  bool another(char close) {
    char c = peek();
    ++pos_;
    if (c == ',') return true;
    if (c != close) fail(std::string("expected ',' or '") + close + "'");
    return false;
  }

  Json parse_value() {
    Json value;
    char c = peek();
    if (c == '{') {
      ++pos_;
      value.type = Json::Type::Object;
      if (peek() == '}') {
        ++pos_;
        return value;
      }
      do {
        value.keys.push_back(parse_string());
        expect(':');
        value.items.push_back(parse_value());
      } while (another('}'));
    } else if (c == '[') {
      ++pos_;
      value.type = Json::Type::Array;
      if (peek() == ']') {
        ++pos_;
        return value;
      }
      do {
        value.items.push_back(parse_value());
      } while (another(']'));
    } else if (c == '"') {
      value.type = Json::Type::String;
      value.string = parse_string();
    } else if (take("true") || take("false")) {
      value.type = Json::Type::Bool;
      value.boolean = c == 't';
    } else if (take("null")) {
    } else {
      value.type = Json::Type::Number;
      value.number = parse_number();
    }
    return value;
  }

  double parse_number() {  // also NaN and +-Infinity, which Python's json writes
    if (take("NaN")) return NAN;
    if (take("Infinity")) return INFINITY;
    if (take("-Infinity")) return -INFINITY;
    size_t end = text_.find_first_not_of("+-0123456789.eE", pos_);
    std::string literal(text_.substr(pos_, end - pos_));
    char* stop = nullptr;
    double number = std::strtod(literal.c_str(), &stop);
    if (literal.empty() || stop != literal.c_str() + literal.size()) fail("not a value");
    pos_ += literal.size();
    return number;
  }

  uint32_t hex4() {
    if (pos_ + 4 > text_.size()) fail("short \\u escape");
    uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      char h = text_[pos_++];
      if (!std::isxdigit(static_cast<unsigned char>(h))) fail("bad \\u escape");
      code = code * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
    }
    return code;
  }

  static void append_utf8(std::string& out, uint32_t code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated string");
      switch (char e = text_[pos_++]) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t code = hex4();
          if (code >= 0xD800 && code < 0xDC00 && take("\\u")) {  // a surrogate pair: one code point
            uint32_t low = hex4();
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::string_view text_;
  std::string origin_;
  size_t pos_ = 0;
};

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------------------------------------------

// floor(root-th root of n * 2^(32 * root)) mod 2^32: the first 32 bits of the fraction of n's square (root 2) or
// cube (root 3) root, the way FIPS 180-4 defines the initial hash values and round constants.
uint32_t root_fraction_bits(uint32_t n, int root) {
  using u128 = unsigned __int128;
  u128 target = static_cast<u128>(n) << (32 * root);
  auto power = [root](u128 x) { return root == 2 ? x * x : x * x * x; };
  u128 x = static_cast<u128>(std::pow(static_cast<long double>(n), 1.0L / root) * 4294967296.0L);
  while (power(x) > target) --x;
  while (power(x + 1) <= target) ++x;
  return static_cast<uint32_t>(x);
}

std::vector<uint32_t> first_primes(size_t count) {
  std::vector<uint32_t> primes;
  for (uint32_t n = 2; primes.size() < count; ++n)
    if (std::none_of(primes.begin(), primes.end(), [n](uint32_t p) { return n % p == 0; })) primes.push_back(n);
  return primes;
}

class Sha256 {
 public:
  Sha256() {
    auto primes = first_primes(64);
    for (size_t i = 0; i < 8; ++i) state_[i] = root_fraction_bits(primes[i], 2);
    for (size_t i = 0; i < 64; ++i) k_[i] = root_fraction_bits(primes[i], 3);
  }

  void update(const unsigned char* data, size_t size) {
    length_ += size;
    while (size > 0) {
      size_t n = std::min(size, block_.size() - filled_);
      std::copy(data, data + n, block_.begin() + filled_);
      filled_ += n, data += n, size -= n;
      if (filled_ == block_.size()) compress(), filled_ = 0;
    }
  }

  std::string hex_digest() {  // call once, after the last update
    uint64_t bits = length_ * 8;
    unsigned char pad = 0x80;
    update(&pad, 1);
    pad = 0;
    while (filled_ != 56) update(&pad, 1);
    for (int shift = 56; shift >= 0; shift -= 8) {
      unsigned char byte = static_cast<unsigned char>(bits >> shift);
      update(&byte, 1);
    }
    std::ostringstream hex;
    for (uint32_t word : state_) hex << std::hex << std::setw(8) << std::setfill('0') << word;
    return hex.str();
  }

 private:
  void compress() {
    std::array<uint32_t, 64> w{};
    for (int t = 0; t < 16; ++t)
      w[t] = uint32_t(block_[4 * t]) << 24 | uint32_t(block_[4 * t + 1]) << 16 | uint32_t(block_[4 * t + 2]) << 8 |
             uint32_t(block_[4 * t + 3]);
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = std::rotr(w[t - 15], 7) ^ std::rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = std::rotr(w[t - 2], 17) ^ std::rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = state_;
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 = h + (std::rotr(e, 6) ^ std::rotr(e, 11) ^ std::rotr(e, 25)) + ((e & f) ^ (~e & g)) + k_[t] + w[t];
      uint32_t t2 = (std::rotr(a, 2) ^ std::rotr(a, 13) ^ std::rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    std::array<uint32_t, 8> next{a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) state_[i] += next[i];
  }

  std::array<uint32_t, 8> state_{};
  std::array<uint32_t, 64> k_{};
  std::array<unsigned char, 64> block_{};
  size_t filled_ = 0;
  uint64_t length_ = 0;
};

std::string file_sha256(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  Sha256 digest;
  std::vector<char> chunk(1 << 20);
  while (in.read(chunk.data(), chunk.size()) || in.gcount() > 0)
    digest.update(reinterpret_cast<const unsigned char*>(chunk.data()), static_cast<size_t>(in.gcount()));
  return digest.hex_digest();
}

// ---- the exported encoder ----------------------------------------------------------------------------------------

struct ExportedEncoder {
  fs::path model;
  int64_t image_size = 0;
  int64_t channels = 0;
  std::vector<float> mean, std;
};

class Metadata {
 public:
  explicit Metadata(const fs::path& path)
      : path_(path.string()), root_(JsonParser(read_file(path), path_).document()) {}

  const Json& field(std::string_view dotted) const {
    const Json* node = &root_;
    for (size_t start = 0; start <= dotted.size();) {
      size_t end = std::min(dotted.find('.', start), dotted.size());
      node = node->get(dotted.substr(start, end - start));
      if (node == nullptr) fail(dotted, "is missing");
      start = end + 1;
    }
    return *node;
  }

  std::string text(std::string_view dotted) const {
    const Json& node = field(dotted);
    if (node.type != Json::Type::String) fail(dotted, "is not a string");
    return node.string;
  }

  int64_t count(std::string_view dotted) const {
    const Json& node = field(dotted);
    if (node.type != Json::Type::Number || node.number < 1 || node.number != std::floor(node.number))
      fail(dotted, "is not a positive integer");
    return static_cast<int64_t>(node.number);
  }

  std::vector<float> numbers(std::string_view dotted, size_t size) const {
    const Json& node = field(dotted);
    std::vector<float> values;
    for (const Json& item : node.items)
      if (item.type == Json::Type::Number) values.push_back(static_cast<float>(item.number));
    if (node.type != Json::Type::Array || values.size() != node.items.size() || values.size() != size)
      fail(dotted, "is not a list of " + std::to_string(size) + " numbers");
    return values;
  }

 private:
  [[noreturn]] void fail(std::string_view dotted, const std::string& what) const {
    throw InputError(path_ + ": \"" + std::string(dotted) + "\" " + what +
                     "; not a metadata.json of this clsp version: run `clsp export CONFIG --torchscript --resume` again");
  }

  std::string path_;
  Json root_;
};

std::string release(const std::string& version) { return version.substr(0, version.find('+')); }

// The encoder in `given` (an export folder or the model file in one), refused unless its metadata.json describes a
// TorchScript encoder, the file's SHA-256 matches it and it was exported with this runner's torch release.
ExportedEncoder open_export(const fs::path& given) {
  const std::string fix = "run `clsp export CONFIG --torchscript --resume` and give <output_dir>/export/torchscript/encoder";
  if (!fs::exists(given)) throw InputError(given.string() + ": no such folder or file; " + fix);
  fs::path folder = fs::is_directory(given) ? given : given.parent_path();
  if (folder.empty()) folder = ".";
  fs::path sidecar = folder / "metadata.json";
  if (!fs::is_regular_file(sidecar)) throw InputError(sidecar.string() + ": missing (not a clsp export); " + fix);
  Metadata metadata(sidecar);
  metadata.text("key");  // every sidecar clsp export writes has its cache key
  std::string format = metadata.text("format"), kind = metadata.text("kind"), file = metadata.text("file");
  if (format != "torchscript")
    throw InputError(folder.string() + ": holds the " + format + " export, not TorchScript; " + fix);
  if (kind != "encoder") throw InputError(folder.string() + ": holds the " + kind + ", not the encoder; " + fix);
  // a file name inside the folder, never a path: a tampered sidecar must not point the runner elsewhere
  if (file != "model.pt")
    throw InputError(sidecar.string() + ": field 'file' is \"" + file + "\", not \"model.pt\"; " + fix);
  if (!fs::is_directory(given) && given.filename() != file)
    throw InputError(given.string() + ": not the model file its metadata.json names (" + file + "); give the folder");
  ExportedEncoder encoder;
  encoder.model = folder / file;
  if (!fs::is_regular_file(encoder.model) || file_sha256(encoder.model) != metadata.text("artifact_sha256"))
    throw InputError(encoder.model.string() + ": missing, truncated or corrupt (SHA-256 differs from metadata.json); " +
                     fix);
  std::string exported_with = metadata.text("keyed_versions.torch");
  if (release(exported_with) != TORCH_VERSION)
    throw InputError(folder.string() + ": exported with torch " + exported_with + " but this runner links libtorch " +
                     TORCH_VERSION + "; export again with torch " + TORCH_VERSION +
                     " or build the runner against libtorch " + release(exported_with));
  encoder.image_size = metadata.count("model.image_size");
  encoder.channels = metadata.count("model.channels");
  encoder.mean = metadata.numbers("model.mean", encoder.channels);
  encoder.std = metadata.numbers("model.std", encoder.channels);
  return encoder;
}

// ---- .npy files --------------------------------------------------------------------------------------------------

struct Npy {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<char> data;
};

// The value after 'key': in a .npy header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 16, 16), }
std::string header_value(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  size_t start = header.find(':', at) + 1;
  while (start < header.size() && header[start] == ' ') ++start;
  if (start < header.size() && (header[start] == '\'' || header[start] == '"'))
    return header.substr(start + 1, header.find(header[start], start + 1) - start - 1);
  if (start < header.size() && header[start] == '(')
    return header.substr(start + 1, header.find(')', start) - start - 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

Npy read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) throw InputError(path + ": cannot read it");
  char magic[8] = {};
  in.read(magic, 8);
  if (!in || std::string_view(magic, 6) != "\x93NUMPY")
    throw InputError(path + ": not a .npy file; save the images with numpy.save");
  uint32_t header_size = 0;
  if (magic[6] == 1) {
    unsigned char size[2] = {};
    in.read(reinterpret_cast<char*>(size), 2);
    header_size = size[0] | size[1] << 8;
  } else {
    unsigned char size[4] = {};
    in.read(reinterpret_cast<char*>(size), 4);
    header_size = size[0] | size[1] << 8 | size[2] << 16 | uint32_t(size[3]) << 24;
  }
  std::string header(header_size, ' ');
  in.read(header.data(), header_size);
  if (!in) throw InputError(path + ": truncated .npy header");
  Npy npy;
  npy.descr = header_value(header, "descr");
  if (header_value(header, "fortran_order") != "False")
    throw InputError(path + ": saved in Fortran order; save numpy.ascontiguousarray(images)");
  std::stringstream dims(header_value(header, "shape"));
  for (std::string dim; std::getline(dims, dim, ',');)
    if (dim.find_first_not_of(' ') != std::string::npos) npy.shape.push_back(std::stoll(dim));
  size_t item = npy.descr == "|u1" ? 1 : npy.descr == "<f4" ? 4 : 0;
  if (item == 0)
    throw InputError(path + ": dtype " + npy.descr +
                     "; give uint8 [N, H, W, C] images or float32 [N, C, H, W] normalised ones");
  int64_t count = 1;
  for (int64_t d : npy.shape) count *= d;
  npy.data.resize(static_cast<size_t>(count) * item);
  in.read(npy.data.data(), static_cast<std::streamsize>(npy.data.size()));
  if (in.gcount() != static_cast<std::streamsize>(npy.data.size()))
    throw InputError(path + ": truncated (" + std::to_string(in.gcount()) + " of " + std::to_string(npy.data.size()) +
                     " data bytes)");
  return npy;
}

void write_npy(const fs::path& path, const torch::Tensor& tensor) {
  auto t = tensor.contiguous().to(torch::kFloat32);
  std::string shape;
  for (auto d : t.sizes()) shape += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // pad so that the data starts at a multiple of 64
  header += '\n';
  fs::path partial = path;
  partial += ".partial";
  {
    std::ofstream out(partial, std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    uint16_t size = static_cast<uint16_t>(header.size());
    char size_bytes[2] = {static_cast<char>(size & 0xFF), static_cast<char>(size >> 8)};
    out.write(size_bytes, 2);
    out << header;
    out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
    if (!out) throw InputError(path.string() + ": cannot write it");
  }
  fs::rename(partial, path);  // a reader never sees a half-written file
}

// The images of `path` as the encoder's normalised float32 [N, C, S, S].
torch::Tensor load_images(const std::string& path, const ExportedEncoder& encoder) {
  Npy npy = read_npy(path);
  const int64_t s = encoder.image_size, c = encoder.channels;
  const bool bytes = npy.descr == "|u1";
  const std::string dtype = bytes ? "uint8 " : "float32 ";
  const std::vector<int64_t> wanted = bytes ? std::vector<int64_t>{s, s, c} : std::vector<int64_t>{c, s, s};
  if (npy.shape.size() != 4 || !std::equal(wanted.begin(), wanted.end(), npy.shape.begin() + 1) || npy.shape[0] < 1)
    throw InputError(path + ": " + dtype + shape_text(npy.shape) + " but the encoder takes " + dtype + "[N, " +
                     shape_text(wanted).substr(1) + (bytes ? " (NHWC)" : " (NCHW, normalised)") + ", N >= 1");
  if (!bytes) return torch::from_blob(npy.data.data(), npy.shape, torch::kFloat32).clone();
  torch::Tensor x = torch::from_blob(npy.data.data(), npy.shape, torch::kUInt8).permute({0, 3, 1, 2});
  x = x.to(torch::kFloat32).div(255);  // as clsp's normalise_images, op for op
  torch::Tensor mean = torch::tensor(encoder.mean).view({1, c, 1, 1});
  torch::Tensor std = torch::tensor(encoder.std).view({1, c, 1, 1});
  return ((x - mean) / std).contiguous();
}

torch::Tensor encode(const ExportedEncoder& encoder, const torch::Tensor& images) {
  torch::jit::script::Module module = torch::jit::load(encoder.model.string());
  module.eval();
  torch::InferenceMode guard;
  std::vector<torch::Tensor> features;
  for (int64_t start = 0; start < images.size(0); start += kBatch)
    features.push_back(module.forward({images.slice(0, start, start + kBatch).contiguous()}).toTensor());
  return torch::cat(features);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << kHelp;
    return 0;
  }
  if (args.size() != 3) {
    std::cerr << kUsage;
    return 2;
  }
  try {
    ExportedEncoder encoder = open_export(args[0]);
    torch::Tensor images = load_images(args[1], encoder);
    torch::Tensor features = encode(encoder, images);
    write_npy(args[2], features);
    std::cout << "features " << features.sizes() << " -> " << args[2] << "\n";
  } catch (const InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: libtorch: " << first_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << first_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}
