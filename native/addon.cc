// Entry point of the addon. The addon only maps shared memory and moves packets
// between netlink and JavaScript; every decision is made in TypeScript.
#include "common.h"

#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace nfqlb {

namespace {
struct AddonData {
  Napi::FunctionReference errorClass;
};
}  // namespace

// The error object for (message, code, errno): always built by the class
// src/base/errors.ts hands over (setErrorClass), which names the errno in
// TypeScript. loadAddon() hands it over before anything else runs; a caller
// that requires the .node file directly and skips that gets a TypeError
// saying so, with the failure it would have reported.
Napi::Value MakeError(Napi::Env env, const char* code, const std::string& message, int err) {
  std::string text = message;
  if (err != 0) {
    text += ": ";
    text += strerror(err);
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data == nullptr || data->errorClass.IsEmpty()) {
    return Napi::TypeError::New(env, std::string("setErrorClass() was not called; ") + code + ": " + text).Value();
  }
  Napi::Value errnoValue = err != 0 ? Napi::Value(Napi::Number::New(env, err)) : env.Undefined();
  return data->errorClass.New({Napi::String::New(env, text), Napi::String::New(env, code), errnoValue});
}

void ThrowError(Napi::Env env, const char* code, const std::string& message, int err) {
  if (env.IsExceptionPending()) return;
  Napi::Value e = MakeError(env, code, message, err);
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

// Names the calling thread (comm, 15 bytes at most) so that per-thread CPU in
// /proc/PID/task/*/stat, top -H and perf tell the packet threads apart.
Napi::Value SetThreadName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "setThreadName(name) needs a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  name.resize(std::min<size_t>(name.size(), 15));
  return Napi::Boolean::New(env, prctl(PR_SET_NAME, name.c_str(), 0, 0, 0) == 0);
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("setThreadName", Napi::Function::New(env, SetThreadName));
  InitShm(env, exports);
  InitNfqueue(env, exports);
  InitUnixSock(env, exports);
  InitTun(env, exports);
  InitStopWatchdog(env, exports);
  return exports;
}

}  // namespace nfqlb

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return nfqlb::Init(env, exports); }

NODE_API_MODULE(nfqlb_native, InitAddon)
