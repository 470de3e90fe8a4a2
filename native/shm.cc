// POSIX shared memory: the Maglev tables and the trace settings live in
// /dev/shm so that `nfqlb activate` changes a running daemon without talking to
// it. A mapping is handed to JavaScript as an external ArrayBuffer over the
// mmap; the munmap happens either in shmUnmap (which also detaches the buffer so
// no view can reach unmapped memory) or when the buffer is collected.
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <string>
#include <unordered_map>

namespace nfqlb {

namespace {

struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};

// Live mappings by address, so shmUnmap can find the record that the buffer's
// finalizer will later free. Guarded because worker threads share the addon.
std::mutex mappingsLock;
std::unordered_map<void*, Mapping*> mappings;

void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> guard(mappingsLock);
    if (!m->unmapped) {
      mappings.erase(m->addr);
      munmap(m->addr, m->length);
    }
  }
  delete m;
}

bool GetName(const Napi::CallbackInfo& info, std::string* name) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "shm name must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *name = info[0].As<Napi::String>().Utf8Value();
  // shm_open wants "/name"; a name with '/' inside would reach another path.
  if (name->empty() || name->find('/') != std::string::npos || name->size() > 255) {
    Napi::TypeError::New(info.Env(), "shm name must be 1-255 bytes without '/'").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// shmMap(name, mode, size): mode 0 = read-only, 1 = read-write, 2 = create or
// truncate to `size` bytes (read-write, 0600). Returns an ArrayBuffer over the
// whole object. Throws NFQLB_ERR_SHM_OPEN / _MAP with the errno name.
Napi::Value ShmMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!GetName(info, &name)) return env.Undefined();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "shmMap(name, mode, size)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int mode = info[1].As<Napi::Number>().Int32Value();
  int64_t size = info[2].As<Napi::Number>().Int64Value();
  if (mode < 0 || mode > 2 || size < 0) {
    Napi::TypeError::New(env, "shmMap: bad mode or size").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = "/" + name;
  int flags = mode == 0 ? O_RDONLY : (mode == 1 ? O_RDWR : (O_RDWR | O_CREAT));
  int fd = shm_open(path.c_str(), flags, 0600);
  if (fd < 0) {
    int err = errno;
    ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot open shared memory '" + name + "'", err);
    return env.Undefined();
  }
  if (mode == 2 && ftruncate(fd, size) != 0) {
    int err = errno;
    close(fd);
    ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot size shared memory '" + name + "'", err);
    return env.Undefined();
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot stat shared memory '" + name + "'", err);
    return env.Undefined();
  }
  size_t length = static_cast<size_t>(st.st_size);
  if (length == 0) {
    close(fd);
    return Napi::ArrayBuffer::New(env, 0);
  }
  int prot = mode == 0 ? PROT_READ : (PROT_READ | PROT_WRITE);
  void* addr = mmap(nullptr, length, prot, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (addr == MAP_FAILED) {
    ThrowError(env, "NFQLB_ERR_SHM_MAP", "cannot map shared memory '" + name + "'", err);
    return env.Undefined();
  }
  Mapping* m = new Mapping{addr, length, false};
  {
    std::lock_guard<std::mutex> guard(mappingsLock);
    mappings[addr] = m;
  }
  return Napi::ArrayBuffer::New(env, addr, length, FinalizeMapping, m);
}

// shmUnmap(buffer): unmaps now and detaches the buffer (its views become empty).
Napi::Value ShmUnmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "shmUnmap(buffer) needs an ArrayBuffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* addr = ab.Data();
  if (addr == nullptr) return Napi::Boolean::New(env, false);
  std::lock_guard<std::mutex> guard(mappingsLock);
  auto it = mappings.find(addr);
  if (it == mappings.end()) return Napi::Boolean::New(env, false);
  Mapping* m = it->second;
  mappings.erase(it);
  ab.Detach();
  munmap(m->addr, m->length);
  m->unmapped = true;
  return Napi::Boolean::New(env, true);
}

// shmUnlink(name): true when removed, false when it did not exist.
Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!GetName(info, &name)) return env.Undefined();
  std::string path = "/" + name;
  if (shm_unlink(path.c_str()) == 0) return Napi::Boolean::New(env, true);
  int err = errno;
  if (err == ENOENT) return Napi::Boolean::New(env, false);
  ThrowError(env, "NFQLB_ERR_SHM_UNLINK", "cannot remove shared memory '" + name + "'", err);
  return env.Undefined();
}

// shmSize(name): byte size of the object, or -1 when it does not exist.
Napi::Value ShmSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!GetName(info, &name)) return env.Undefined();
  std::string path = "/" + name;
  int fd = shm_open(path.c_str(), O_RDONLY, 0);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Napi::Number::New(env, -1);
    ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot open shared memory '" + name + "'", err);
    return env.Undefined();
  }
  struct stat st;
  int rc = fstat(fd, &st);
  int err = errno;
  close(fd);
  if (rc != 0) {
    ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot stat shared memory '" + name + "'", err);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmMap", Napi::Function::New(env, ShmMap));
  exports.Set("shmUnmap", Napi::Function::New(env, ShmUnmap));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink));
  exports.Set("shmSize", Napi::Function::New(env, ShmSize));
}

}  // namespace nfqlb
