// Shared helpers for the addon: errors are built from the JavaScript class that
// src/errors.ts hands over once (setErrorClass), so TypeScript owns the types.
#pragma once
#include <napi.h>
#include <string>

namespace nfqlb {

// Throws NfqlbError(message, code, errnoName) unless an exception is already
// pending. Falls back to a plain Error before setErrorClass has been called.
void ThrowError(Napi::Env env, const char* code, const std::string& message, int err = 0);

// Name of an errno value ("ENOENT"), or "E<number>" for unknown ones.
const char* ErrnoName(int err);

void InitShm(Napi::Env env, Napi::Object exports);
void InitNfqueue(Napi::Env env, Napi::Object exports);
void InitUnixSock(Napi::Env env, Napi::Object exports);

}  // namespace nfqlb
