// Shared helpers for the addon: errors are built from the JavaScript class that
// src/base/errors.ts hands over once (setErrorClass), so TypeScript owns the types.
#pragma once
#include <napi.h>
#include <string>

namespace nfqlb {

// NfqlbError(message + ": " + strerror(err), code, err): says what failed and
// the errno (a positive number; TypeScript names it). No advice to users here:
// src/ wraps these errors with what to do.
Napi::Value MakeError(Napi::Env env, const char* code, const std::string& message, int err = 0);

// Throws MakeError(...) unless an exception is already pending.
void ThrowError(Napi::Env env, const char* code, const std::string& message, int err = 0);

void InitShm(Napi::Env env, Napi::Object exports);
void InitNfqueue(Napi::Env env, Napi::Object exports);
void InitUnixSock(Napi::Env env, Napi::Object exports);
void InitTun(Napi::Env env, Napi::Object exports);
void InitStopWatchdog(Napi::Env env, Napi::Object exports);

}  // namespace nfqlb
