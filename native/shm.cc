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

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
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

// ---------------------------------------------------------------------------
// The SIGBUS guard.
//
// Reading a page of a shared mapping that lies beyond the end of its file
// (another process truncated or shrank the shm object) raises SIGBUS, which
// kills the process. The daemon checks a table's size before mapping it and
// re-checks it regularly, but a truncation can always land between a check and
// a read. So every mapping is registered here, and a SIGBUS whose address lies
// in one of them is repaired instead: an anonymous page filled with the
// mapping's fill byte (0xFF for tables: every lookup entry and slot reads -1,
// "no target") is put over the faulting page, the read is retried and returns
// that, and a counter that JavaScript reads per batch is bumped. A SIGBUS
// anywhere else gets the previous handler (or the default action) back.
//
// The range table is a fixed array of atomics so the handler reads it without
// locks; writers hold mappingsLock.
constexpr int kGuardSlots = 1024;
struct GuardSlot {
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<int> fill{0xFF};
};
GuardSlot guardSlots[kGuardSlots];
// [0] SIGBUS faults repaired since start (read by JavaScript through an
// external ArrayBuffer; the handler only does a lock-free atomic add).
alignas(8) int32_t guardCounters[2] = {0, 0};
struct sigaction previousBusAction;
std::atomic<bool> guardInstalled{false};
uintptr_t guardPageSize = 4096;

void OnBus(int sig, siginfo_t* info, void* ctx) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (int i = 0; i < kGuardSlots; i++) {
    const uintptr_t start = guardSlots[i].start.load(std::memory_order_acquire);
    if (start == 0 || addr < start || addr >= guardSlots[i].end.load(std::memory_order_acquire)) continue;
    const uintptr_t pageSize = guardPageSize;
    void* page = reinterpret_cast<void*>(addr & ~(pageSize - 1));
    void* r = mmap(page, pageSize, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) break;
    memset(r, guardSlots[i].fill.load(std::memory_order_relaxed), pageSize);
    __atomic_fetch_add(&guardCounters[0], 1, __ATOMIC_RELAXED);
    return;
  }
  // Not ours: the previous disposition handles the retried access.
  sigaction(SIGBUS, &previousBusAction, nullptr);
  (void)sig;
  (void)ctx;
}

// Called with mappingsLock held.
void GuardRange(void* addr, size_t length, int fill) {
  if (!guardInstalled.load()) {
    guardPageSize = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnBus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previousBusAction) == 0) guardInstalled.store(true);
  }
  for (int i = 0; i < kGuardSlots; i++) {
    if (guardSlots[i].start.load() != 0) continue;
    guardSlots[i].fill.store(fill);
    guardSlots[i].end.store(reinterpret_cast<uintptr_t>(addr) + length);
    guardSlots[i].start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    return;
  }
  // More than kGuardSlots live mappings: this one is unguarded (as before the guard existed).
}

// Called with mappingsLock held, before munmap.
void UnguardRange(void* addr) {
  for (int i = 0; i < kGuardSlots; i++) {
    if (guardSlots[i].start.load() == reinterpret_cast<uintptr_t>(addr)) {
      guardSlots[i].start.store(0, std::memory_order_release);
      guardSlots[i].end.store(0);
      return;
    }
  }
}

void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> guard(mappingsLock);
    if (!m->unmapped) {
      mappings.erase(m->addr);
      UnguardRange(m->addr);
      munmap(m->addr, m->length);
    }
  }
  delete m;
}

// Registers and wraps a fresh mapping.
Napi::Value WrapMapping(Napi::Env env, void* addr, size_t length, int fill) {
  Mapping* m = new Mapping{addr, length, false};
  {
    std::lock_guard<std::mutex> guard(mappingsLock);
    mappings[addr] = m;
    GuardRange(addr, length, fill);
  }
  return Napi::ArrayBuffer::New(env, addr, length, FinalizeMapping, m);
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

// What an object in /dev/shm is when it is not a regular file, or nullptr.
const char* NotRegularKind(mode_t m) {
  if (S_ISREG(m)) return nullptr;
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device node";
  if (S_ISLNK(m)) return "a symbolic link";
  return "not a regular file";
}

// shm_open that cannot block and opens only regular files. Anyone who can
// write /dev/shm can put a FIFO, socket or device node under a table's name:
// a plain open of a FIFO waits for a writer (the daemon froze on it), and
// opening a device can have effects of its own. So: lstat first (a device is
// never opened), then O_NONBLOCK (a FIFO swapped in meanwhile returns at
// once), then fstat of what was really opened. Returns the fd, or -1 with
// *err = errno, or -1 with *err = 0 and *kind naming what is there.
int OpenShmRegular(const std::string& name, int flags, mode_t mode, int* err, const char** kind) {
  *err = 0;
  *kind = nullptr;
  std::string file = "/dev/shm/" + name;
  struct stat st;
  if (lstat(file.c_str(), &st) == 0) {
    *kind = NotRegularKind(st.st_mode);
    if (*kind != nullptr) return -1;
  } else if (errno != ENOENT || (flags & O_CREAT) == 0) {
    *err = errno;
    return -1;
  }
  std::string path = "/" + name;
  int fd = shm_open(path.c_str(), flags | O_NONBLOCK, mode);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  if (fstat(fd, &st) != 0 || (*kind = NotRegularKind(st.st_mode)) != nullptr) {
    if (*kind == nullptr) *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

// The errno nfqlb's plain shm_open() (and what follows it) meets on such an
// object, so the CLI can word the failure as nfqlb does; 0 for a FIFO, on
// which nfqlb blocks instead, and our own words are clearer.
int NotRegularErrno(const char* kind) {
  std::string k = kind;
  if (k == "a directory") return EISDIR;
  if (k == "a socket") return ENXIO;
  if (k == "a symbolic link") return ELOOP;
  if (k == "a device node") return ENODEV;
  return 0;
}

// Throws what OpenShmRegular reported: NFQLB_ERR_NOT_FILE for an object that
// is not a regular file, else NFQLB_ERR_SHM_OPEN with the errno.
void ThrowOpenError(Napi::Env env, const std::string& name, int err, const char* kind) {
  if (kind != nullptr) {
    ThrowError(env, "NFQLB_ERR_NOT_FILE",
               "cannot open shared memory '" + name + "' (/dev/shm/" + name + " is " + kind +
                   ", not a shm object; it was not opened: remove it)",
               NotRegularErrno(kind));
    return;
  }
  ThrowError(env, "NFQLB_ERR_SHM_OPEN", "cannot open shared memory '" + name + "'", err);
}

// shmMap(name, mode, size[, fill]): mode 0 = read-only, 1 = read-write, 2 =
// create or truncate to `size` bytes (read-write, 0600). Returns an
// ArrayBuffer over the whole object. `fill` (default 0xFF) is what a page
// reads as after the object shrank under the mapping (see the SIGBUS guard).
// Throws NFQLB_ERR_SHM_OPEN / _MAP with the errno name.
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
  int fill = info.Length() > 3 && info[3].IsNumber() ? (info[3].As<Napi::Number>().Int32Value() & 0xFF) : 0xFF;
  if (mode < 0 || mode > 2 || size < 0) {
    Napi::TypeError::New(env, "shmMap: bad mode or size").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int flags = mode == 0 ? O_RDONLY : (mode == 1 ? O_RDWR : (O_RDWR | O_CREAT));
  int openErr;
  const char* kind;
  int fd = OpenShmRegular(name, flags, 0600, &openErr, &kind);
  if (fd < 0) {
    ThrowOpenError(env, name, openErr, kind);
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
  return WrapMapping(env, addr, length, fill);
}

// fdMap(fd, writable, length): maps the first `length` bytes of an open file,
// after checking with fstat that the file has them (a mapping past the end
// would raise SIGBUS on first read). The fd stays the caller's. Throws
// NFQLB_ERR_SHM_MAP (with the errno, or EOVERFLOW-like text when the file is
// shorter than `length`).
Napi::Value FdMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsBoolean() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "fdMap(fd, writable, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  bool writable = info[1].As<Napi::Boolean>().Value();
  int64_t length = info[2].As<Napi::Number>().Int64Value();
  if (fd < 0 || length <= 0) {
    Napi::TypeError::New(env, "fdMap: bad fd or length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowError(env, "NFQLB_ERR_SHM_MAP", "cannot stat the table file", errno);
    return env.Undefined();
  }
  if (st.st_size < length) {
    ThrowError(env, "NFQLB_ERR_SHM_MAP",
               "fdMap: the file has " + std::to_string(st.st_size) + " bytes, " + std::to_string(length) + " asked for");
    return env.Undefined();
  }
  void* addr = mmap(nullptr, static_cast<size_t>(length), writable ? (PROT_READ | PROT_WRITE) : PROT_READ, MAP_SHARED,
                    fd, 0);
  if (addr == MAP_FAILED) {
    ThrowError(env, "NFQLB_ERR_SHM_MAP", "cannot map the table file", errno);
    return env.Undefined();
  }
  return WrapMapping(env, addr, static_cast<size_t>(length), 0xFF);
}

// fdSize(fd): st_size of an open file, or -errno when fstat fails. One
// syscall, no allocation: cheap enough for a per-batch or per-tick check.
Napi::Value FdSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "fdSize(fd)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct stat st;
  if (fstat(info[0].As<Napi::Number>().Int32Value(), &st) != 0) return Napi::Number::New(env, -errno);
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

// shmGuardCounters(): an Int32Array over the guard's counters ([0]: SIGBUS
// faults repaired), shared with the signal handler; read it, never write it.
Napi::Value ShmGuardCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, guardCounters, sizeof(guardCounters));
  return Napi::Int32Array::New(env, 2, ab, 0);
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
  UnguardRange(m->addr);
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
  int openErr;
  const char* kind;
  int fd = OpenShmRegular(name, O_RDONLY, 0, &openErr, &kind);
  if (fd < 0) {
    if (kind == nullptr && openErr == ENOENT) return Napi::Number::New(env, -1);
    ThrowOpenError(env, name, openErr, kind);
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
  exports.Set("fdMap", Napi::Function::New(env, FdMap));
  exports.Set("fdSize", Napi::Function::New(env, FdSize));
  exports.Set("shmGuardCounters", Napi::Function::New(env, ShmGuardCounters));
}

}  // namespace nfqlb
