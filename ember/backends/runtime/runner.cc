// Ember bundle runner: loads model.so with the TVM runtime, reads inputs from .npy files, runs the Relax VM's
// `main`, writes outputs as .npy files and prints latency and its thread count. No Python needed on the device.
//   runner [--device cpu|cuda] model.so OUT_DIR RUNS input0.npy [input1.npy ...]   (OUT_DIR is created if missing)
// It runs once to warm up, then RUNS timed times; RUNS 0 runs once for the outputs only. With --device cuda it
// loads libtvm_runtime_cuda.so (found beside the runner's runtime), copies inputs to GPU 0 and outputs back, and
// times each run up to the GPU's completion.
#include <dlfcn.h>
#include <sched.h>
#include <sys/stat.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ffi = tvm::ffi;

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::malloc(ffi::GetDataSize(*t)); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static const char* kTypes[][2] = {{"<f4", "f32"}, {"<f8", "f64"}, {"<i8", "i64"}, {"<i4", "i32"},
                                  {"|u1", "u8"},  {"|i1", "i8"},  {"|b1", "bool"}, {"<f2", "f16"}};

static DLDataType dtype_of(const std::string& descr) {
  if (descr == "<f4") return {kDLFloat, 32, 1};
  if (descr == "<f8") return {kDLFloat, 64, 1};
  if (descr == "<f2") return {kDLFloat, 16, 1};
  if (descr == "<i8") return {kDLInt, 64, 1};
  if (descr == "<i4") return {kDLInt, 32, 1};
  if (descr == "|i1") return {kDLInt, 8, 1};
  if (descr == "|u1") return {kDLUInt, 8, 1};
  if (descr == "|b1") return {kDLBool, 8, 1};
  throw std::runtime_error("unsupported .npy dtype " + descr);
}

static std::string descr_of(DLDataType t) {
  if (t.code == kDLFloat) return t.bits == 32 ? "<f4" : t.bits == 64 ? "<f8" : "<f2";
  if (t.code == kDLInt) return t.bits == 64 ? "<i8" : t.bits == 32 ? "<i4" : "|i1";
  if (t.code == kDLUInt) return "|u1";
  return "|b1";
}

static ffi::Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, ' ');
  f.read(&header[0], hlen);
  auto field = [&](const std::string& key) {
    size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path + ": no " + key + " in header");
    return p + key.size() + 3;
  };
  size_t d = header.find('\'', field("descr"));
  std::string descr = header.substr(d + 1, header.find('\'', d + 1) - d - 1);
  if (header.find("True", field("fortran_order")) < header.find(',', field("fortran_order")))
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
  size_t s0 = header.find('(', field("shape")), s1 = header.find(')', s0);
  std::vector<int64_t> shape;
  std::stringstream ss(header.substr(s0 + 1, s1 - s0 - 1));
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                           dtype_of(descr), DLDevice{kDLCPU, 0});
  f.read(static_cast<char*>(t.data_ptr()), ffi::GetDataSize(*t.GetDLTensorPtr()));
  if (!f) throw std::runtime_error(path + ": file is shorter than its header says");
  return t;
}

static void write_npy(const std::string& path, const DLTensor* t) {
  std::string shape;
  for (int i = 0; i < t->ndim; ++i) shape += std::to_string(t->shape[i]) + (t->ndim == 1 ? "," : i + 1 < t->ndim ? ", " : "");
  std::string header = "{'descr': '" + descr_of(t->dtype) + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t hlen = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<const char*>(&hlen), 2);
    f << header;
    f.write(static_cast<const char*>(t->data), ffi::GetDataSize(*t));
    if (!f) throw std::runtime_error("cannot write " + path);
  }
  std::rename(tmp.c_str(), path.c_str());
}

// A tensor like `t` on `device`, holding a copy of its data (TVM's own allocation and copy functions).
static ffi::Tensor copy_to(const ffi::Tensor& t, DLDevice device) {
  const DLTensor* dl = t.GetDLTensorPtr();
  if (dl->device.device_type == device.device_type) return t;
  ffi::Tensor out;
  if (device.device_type == kDLCPU) {
    out = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(dl->shape, dl->ndim), dl->dtype, device);
  } else {
    static ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
    ffi::Shape shape(std::vector<int64_t>(dl->shape, dl->shape + dl->ndim));
    out = alloc(shape, dl->dtype, device, ffi::Any()).cast<ffi::Tensor>();
  }
  static ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromTo");
  copy(t, out);
  return out;
}

// The device `name` names; for a GPU, loads the TVM runtime module that provides it first.
static DLDevice open_device(const std::string& name) {
  if (name == "cpu") return DLDevice{kDLCPU, 0};
  if (name != "cuda") throw std::runtime_error("unknown --device " + name + " (cpu or cuda)");
  if (!dlopen("libtvm_runtime_cuda.so", RTLD_NOW | RTLD_GLOBAL))
    throw std::runtime_error(std::string("cannot load the TVM CUDA runtime: ") + dlerror());
  return DLDevice{kDLCUDA, 0};
}

// One TVM thread per physical core this process may run on, unless TVM_NUM_THREADS or OMP_NUM_THREADS is set
// (as Ember's Python runtime does; TVM's own default on x86 is half the logical CPUs, all of them elsewhere).
static void size_thread_pool() {
  if (std::getenv("TVM_NUM_THREADS") || std::getenv("OMP_NUM_THREADS")) return;
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::string package = "cpu", core = std::to_string(cpu);  // a CPU whose topology is unreadable counts alone
    std::ifstream(dir + "physical_package_id") >> package;
    std::ifstream(dir + "core_id") >> core;
    cores.insert({package, core});
  }
  if (!cores.empty()) setenv("TVM_NUM_THREADS", std::to_string(cores.size()).c_str(), 1);
}

int main(int argc, char** argv) {
  std::string device_name = "cpu";
  if (argc > 2 && std::string(argv[1]) == "--device") {
    device_name = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc < 4) {
    std::cerr << "usage: runner [--device cpu|cuda] model.so OUT_DIR RUNS [input.npy ...]\n";
    return 2;
  }
  size_thread_pool();
  try {
    DLDevice device = open_device(device_name);
    if (::mkdir(argv[2], 0777) != 0 && errno != EEXIST) throw std::runtime_error(std::string("cannot create ") + argv[2]);
    std::string model = argv[1];
    if (model.find('/') == std::string::npos) model = "./" + model;  // dlopen searches the library path otherwise
    ffi::Module lib = ffi::Module::LoadFromFile(model);
    ffi::Module vm = (*lib->GetFunction("vm_load_executable"))().cast<ffi::Module>();
    if (device.device_type == kDLCPU) {
      (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, 2);
    } else {  // the device, then the host CPU the VM keeps shapes and scalars on; 2 = pooled allocator
      (*vm->GetFunction("vm_initialization"))(static_cast<int>(device.device_type), device.device_id, 2,
                                              static_cast<int>(kDLCPU), 0, 2);
    }
    ffi::Function run = *vm->GetFunction("main");
    ffi::Function sync = ffi::Function::GetGlobalRequired("runtime.Device_StreamSync");
    std::vector<ffi::Tensor> inputs;
    for (int i = 4; i < argc; ++i) inputs.push_back(copy_to(read_npy(argv[i]), device));
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Any out;
    std::vector<double> ms;
    int runs = std::max(0, std::atoi(argv[3]));
    for (int r = 0; r < runs + 1; ++r) {
      auto start = std::chrono::steady_clock::now();
      run.CallPacked(args.data(), static_cast<int32_t>(args.size()), &out);
      if (device.device_type != kDLCPU) sync(device, 0);
      if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::vector<ffi::Tensor> outputs;
    if (auto arr = out.try_cast<ffi::Array<ffi::Tensor>>()) {
      for (const ffi::Tensor& t : *arr) outputs.push_back(copy_to(t, DLDevice{kDLCPU, 0}));
    } else {
      outputs.push_back(copy_to(out.cast<ffi::Tensor>(), DLDevice{kDLCPU, 0}));
    }
    for (size_t i = 0; i < outputs.size(); ++i)
      write_npy(std::string(argv[2]) + "/output" + std::to_string(i) + ".npy", outputs[i].GetDLTensorPtr());
    std::sort(ms.begin(), ms.end());
    int threads = ffi::Function::GetGlobalRequired("runtime.NumThreads")().cast<int>();
    if (ms.empty()) {
      std::printf("runs 0 outputs %zu threads %d\n", outputs.size(), threads);
    } else {
      std::printf("runs %zu median_ms %.3f min_ms %.3f max_ms %.3f outputs %zu threads %d\n", ms.size(),
                  ms[ms.size() / 2], ms.front(), ms.back(), outputs.size(), threads);
    }
  } catch (const std::exception& e) {
    std::cerr << "runner: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
