// The tun device that out-of-order fragments are re-injected through (--tun).
//
// Three calls, no policy: what a device is, opening an existing one, and a
// batch write. src/addon/tun.ts decides what is acceptable and words the advice.
//
//   netdevInfo(name)  { index, mtu, up } of a network device in this process's
//                     namespace; throws NfqlbError NFQLB_ERR_TUN with ENODEV
//                     when there is none.
//   tunOpen(name)     fd of /dev/net/tun attached (TUNSETIFF IFF_TUN|IFF_NO_PI)
//                     to the EXISTING device `name`: TUNSETIFF on a free name
//                     would create a device, so a missing one is refused first.
//                     The fd is a plain number, valid in every thread; a device
//                     without multi_queue takes one fd at a time (EBUSY).
//   tunClose(fd)      closes it.
//   tunWriteBatch(fd, bytes, offsets, lengths, count[, errnoOut])
//                     writes packet i = bytes[offsets[i], offsets[i]+lengths[i])
//                     with one write() each (a tun write is one packet) and
//                     returns how many were written; a failed write is skipped
//                     and its errno left in errnoOut[0] (Int32Array). Never
//                     throws for a failed write: the packet path must not.
#include "common.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace nfqlb {

namespace {

// Fills `ifr` with info[0], a device name of 1..IFNAMSIZ-1 bytes.
bool DeviceName(const Napi::CallbackInfo& info, struct ifreq* ifr, std::string* name) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "the device name must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *name = info[0].As<Napi::String>().Utf8Value();
  if (name->empty() || name->size() >= IFNAMSIZ || name->find('\0') != std::string::npos) {
    Napi::TypeError::New(info.Env(), "the device name must be 1-15 bytes").ThrowAsJavaScriptException();
    return false;
  }
  memset(ifr, 0, sizeof(*ifr));
  memcpy(ifr->ifr_name, name->data(), name->size());
  return true;
}

Napi::Value NetdevInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct ifreq ifr;
  std::string name;
  if (!DeviceName(info, &ifr, &name)) return env.Undefined();
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) {
    ThrowError(env, "NFQLB_ERR_TUN", "no device " + name, errno);
    return env.Undefined();
  }
  int sd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sd < 0) {
    ThrowError(env, "NFQLB_ERR_TUN", "socket for ioctl", errno);
    return env.Undefined();
  }
  int mtu = -1;
  bool up = false;
  int err = 0;
  if (ioctl(sd, SIOCGIFMTU, &ifr) == 0) {
    mtu = ifr.ifr_mtu;
    if (ioctl(sd, SIOCGIFFLAGS, &ifr) == 0) up = (ifr.ifr_flags & IFF_UP) != 0;
    else err = errno;
  } else {
    err = errno;
  }
  close(sd);
  if (err != 0) {
    ThrowError(env, "NFQLB_ERR_TUN", "reading device " + name, err);
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("index", Napi::Number::New(env, index));
  result.Set("mtu", Napi::Number::New(env, mtu));
  result.Set("up", Napi::Boolean::New(env, up));
  return result;
}

Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct ifreq ifr;
  std::string name;
  if (!DeviceName(info, &ifr, &name)) return env.Undefined();
  if (if_nametoindex(name.c_str()) == 0) {
    ThrowError(env, "NFQLB_ERR_TUN", "no device " + name, errno);
    return env.Undefined();
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    ThrowError(env, "NFQLB_ERR_TUN", "open /dev/net/tun", errno);
    return env.Undefined();
  }
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    ThrowError(env, "NFQLB_ERR_TUN", "TUNSETIFF " + name, err);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value TunClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "tunClose(fd)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  return Napi::Boolean::New(env, fd >= 0 && close(fd) == 0);
}

Napi::Value TunWriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
      !info[3].IsTypedArray() || !info[4].IsNumber()) {
    Napi::TypeError::New(env, "tunWriteBatch(fd, bytes, offsets, lengths, count[, errnoOut])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray bytesArg = info[1].As<Napi::TypedArray>();
  Napi::TypedArray offsetsArg = info[2].As<Napi::TypedArray>();
  Napi::TypedArray lengthsArg = info[3].As<Napi::TypedArray>();
  if (bytesArg.TypedArrayType() != napi_uint8_array || offsetsArg.TypedArrayType() != napi_uint32_array ||
      lengthsArg.TypedArrayType() != napi_uint32_array) {
    Napi::TypeError::New(env, "tunWriteBatch: bytes is a Uint8Array, offsets and lengths Uint32Arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array bytes = bytesArg.As<Napi::Uint8Array>();
  Napi::Uint32Array offsets = offsetsArg.As<Napi::Uint32Array>();
  Napi::Uint32Array lengths = lengthsArg.As<Napi::Uint32Array>();
  double countArg = info[4].As<Napi::Number>().DoubleValue();
  size_t count = countArg > 0 ? static_cast<size_t>(countArg) : 0;
  if (count > offsets.ElementLength()) count = offsets.ElementLength();
  if (count > lengths.ElementLength()) count = lengths.ElementLength();
  int32_t* errnoOut = nullptr;
  if (info.Length() > 5 && info[5].IsTypedArray() && info[5].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array e = info[5].As<Napi::Int32Array>();
    if (e.ElementLength() > 0) errnoOut = e.Data();
  }
  const uint8_t* data = bytes.Data();
  size_t size = bytes.ElementLength();
  uint32_t written = 0;
  for (size_t i = 0; i < count; i++) {
    size_t off = offsets[i];
    size_t len = lengths[i];
    if (len == 0 || off > size || len > size - off) {
      if (errnoOut != nullptr) *errnoOut = EINVAL;
      continue;
    }
    ssize_t rc;
    do {
      rc = write(fd, data + off, len);
    } while (rc < 0 && errno == EINTR);
    if (rc == static_cast<ssize_t>(len)) written++;
    else if (errnoOut != nullptr) *errnoOut = rc < 0 ? errno : EIO;
  }
  return Napi::Number::New(env, written);
}

}  // namespace

void InitTun(Napi::Env env, Napi::Object exports) {
  exports.Set("netdevInfo", Napi::Function::New(env, NetdevInfo));
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen));
  exports.Set("tunClose", Napi::Function::New(env, TunClose));
  exports.Set("tunWriteBatch", Napi::Function::New(env, TunWriteBatch));
}

}  // namespace nfqlb
