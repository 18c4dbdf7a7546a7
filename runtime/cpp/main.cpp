// clsp_features MODEL.pt IMAGES.npy FEATURES.npy
//
// Encode a batch of images with a TorchScript encoder exported by `clsp export --torchscript`.
// IMAGES.npy: float32 [N, C, H, W], already normalised with the encoder's mean/std (metadata.json, "model").
// FEATURES.npy: float32 [N, D]. Only little-endian, C-order float32 .npy files are read.
#include <torch/script.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// The .npy header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 16, 16), }
Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  char magic[6];
  in.read(magic, 6);
  if (std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error(path + ": not a .npy file");
  uint8_t version[2];
  in.read(reinterpret_cast<char*>(version), 2);
  uint32_t header_len = 0;
  if (version[0] == 1) {
    uint16_t len16;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  in.read(header.data(), header_len);
  if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": expected little-endian float32 in C order, header " + header);
  Array array;
  auto open = header.find('(', header.find("'shape'"));
  std::stringstream dims(header.substr(open + 1, header.find(')', open) - open - 1));
  for (std::string dim; std::getline(dims, dim, ',');)
    if (dim.find_first_not_of(' ') != std::string::npos) array.shape.push_back(std::stoll(dim));
  int64_t count = 1;
  for (auto d : array.shape) count *= d;
  array.data.resize(count);
  in.read(reinterpret_cast<char*>(array.data.data()), count * sizeof(float));
  if (in.gcount() != static_cast<std::streamsize>(count * sizeof(float))) throw std::runtime_error(path + ": truncated");
  return array;
}

void write_npy(const std::string& path, const torch::Tensor& tensor) {
  auto t = tensor.contiguous().to(torch::kFloat32);
  std::string shape;
  for (auto d : t.sizes()) shape += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // pad so that the data starts at a multiple of 64
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
  if (!out) throw std::runtime_error(path + ": cannot write");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: clsp_features MODEL.pt IMAGES.npy FEATURES.npy\n";
    return 2;
  }
  try {
    torch::jit::script::Module encoder = torch::jit::load(argv[1]);
    encoder.eval();
    Array images = read_npy(argv[2]);
    if (images.shape.size() != 4) throw std::runtime_error(std::string(argv[2]) + ": expected [N, C, H, W]");
    torch::Tensor input = torch::from_blob(images.data.data(), images.shape, torch::kFloat32);
    torch::InferenceMode guard;
    torch::Tensor features = encoder.forward({input}).toTensor();
    write_npy(argv[3], features);
    std::cout << "features " << features.sizes() << " -> " << argv[3] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
