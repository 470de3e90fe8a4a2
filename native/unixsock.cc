// Abstract unix stream sockets addressed as nfqlb addresses them: sun_path is
// a NUL followed by the name, and the address length is
// offsetof(sun_path) + 1 + strlen(name), without padding. Node's net module
// pads abstract names with NULs to the full 108 bytes, which makes them a
// different address that nfqlb, socat and Python cannot reach.
//
// The functions only make the socket and hand its descriptor to JavaScript,
// which gives it to Node (net.Server / net.Socket); from then on Node owns it
// and closes it. A failure is returned, not thrown: { errno, syscall }.
#include "common.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace nfqlb {

namespace {

Napi::Value Failure(Napi::Env env, int err, const char* syscall) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("errno", Napi::Number::New(env, err));
  result.Set("syscall", Napi::String::New(env, syscall));
  return result;
}

Napi::Value Success(Napi::Env env, int fd) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  return result;
}

// Fills `sa`/`len` from info[0], a Buffer holding the name's bytes (1..107).
bool AbstractAddress(const Napi::CallbackInfo& info, struct sockaddr_un* sa, socklen_t* len) {
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(info.Env(), "the socket name must be a Buffer").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Buffer<char> name = info[0].As<Napi::Buffer<char>>();
  size_t n = name.Length();
  if (n == 0 || n > sizeof(sa->sun_path) - 1) {
    Napi::TypeError::New(info.Env(), "the socket name must be 1-107 bytes").ThrowAsJavaScriptException();
    return false;
  }
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  sa->sun_path[0] = 0;
  memcpy(sa->sun_path + 1, name.Data(), n);
  *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + 1 + n);
  return true;
}

int StreamSocket() { return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

// unixListen(name: Buffer, backlog: number): { fd } or { errno, syscall }.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un sa;
  socklen_t len;
  if (!AbstractAddress(info, &sa, &len)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "unixListen(name, backlog)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int backlog = info[1].As<Napi::Number>().Int32Value();
  int fd = StreamSocket();
  if (fd < 0) return Failure(env, errno, "socket");
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), len) != 0) {
    int err = errno;
    close(fd);
    return Failure(env, err, "bind");
  }
  if (listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    return Failure(env, err, "listen");
  }
  return Success(env, fd);
}

// unixConnect(name: Buffer): { fd } (connected) or { errno, syscall }.
// Non-blocking: a full listen backlog gives EAGAIN rather than a wait.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un sa;
  socklen_t len;
  if (!AbstractAddress(info, &sa, &len)) return env.Undefined();
  int fd = StreamSocket();
  if (fd < 0) return Failure(env, errno, "socket");
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<struct sockaddr*>(&sa), len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    close(fd);
    return Failure(env, err, "connect");
  }
  return Success(env, fd);
}

}  // namespace

void InitUnixSock(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
}

}  // namespace nfqlb
