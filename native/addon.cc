// Entry point of the addon. The addon only maps shared memory and moves packets
// between netlink and JavaScript; every decision is made in TypeScript.
#include "common.h"

#include <cerrno>
#include <cstring>

namespace nfqlb {

namespace {
struct AddonData {
  Napi::FunctionReference errorClass;
};
}  // namespace

const char* ErrnoName(int err) {
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT)
    E(EBUSY) E(EEXIST) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE)
    E(EFBIG) E(ENOSPC) E(EROFS) E(ENAMETOOLONG) E(ENOSYS) E(ENOBUFS) E(EOPNOTSUPP)
    E(EADDRINUSE) E(EPROTONOSUPPORT) E(EAFNOSUPPORT)
#undef E
    default: {
      static thread_local char buf[24];
      snprintf(buf, sizeof(buf), "E%d", err);
      return buf;
    }
  }
}

void ThrowError(Napi::Env env, const char* code, const std::string& message, int err) {
  if (env.IsExceptionPending()) return;
  std::string text = message;
  if (err != 0) {
    text += ": ";
    text += strerror(err);
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data == nullptr || data->errorClass.IsEmpty()) {
    Napi::Error e = Napi::Error::New(env, text);
    e.Set("code", Napi::String::New(env, code));
    e.ThrowAsJavaScriptException();
    return;
  }
  Napi::Value errnoName = err != 0 ? Napi::Value(Napi::String::New(env, ErrnoName(err))) : env.Undefined();
  Napi::Object e = data->errorClass.New({Napi::String::New(env, text), Napi::String::New(env, code), errnoName});
  if (env.IsExceptionPending()) return;
  Napi::Error(env, e).ThrowAsJavaScriptException();
}

namespace {
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, "setErrorClass(ctor) needs a constructor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  data->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  InitShm(env, exports);
  InitNfqueue(env, exports);
  InitUnixSock(env, exports);
  return exports;
}

}  // namespace nfqlb

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return nfqlb::Init(env, exports); }

NODE_API_MODULE(nfqlb_native, InitAddon)
