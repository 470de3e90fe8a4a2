// NFQUEUE binding (libmnl + libnetfilter_queue's nlmsg helpers).
//
// One `NfQueue` object = one netlink socket bound to one queue, or to several
// (queueNums, below). The socket is non-blocking and watched by a uv_poll_t
// on the env's loop. When it becomes
// readable, up to `batchSize` datagrams are received with recvmmsg, the packets
// they carry are copied into buffers shared with JavaScript, ONE JavaScript
// callback `onBatch(count)` runs for the batch, and then the verdicts of the
// whole batch go back to the kernel in ONE sendto (one NFQNL_MSG_VERDICT message
// per packet, each with its own mark; one NFQNL_MSG_VERDICT_BATCH for a run of
// consecutive packets with the same verdict and mark).
//
// Buffers shared with JavaScript are ordinary (V8-owned) ArrayBuffers created by
// this constructor; the object keeps strong references to them and writes
// through the raw pointers. They are exposed as instance properties:
//   packets     Uint8Array   batchSize * copyRange bytes; packet i starts at
//                            offsets[i] (= i * copyRange, fixed strides)
//   offsets     Uint32Array  start of packet i in `packets`
//   lengths     Uint32Array  captured bytes of packet i (<= copyRange)
//   origLengths Uint32Array  length of the packet in the kernel (NFQA_CAP_LEN,
//                            else the captured length; larger for GSO packets)
//   ids         Uint32Array  kernel packet id (informational: the verdicts use a
//                            private copy, so writing here changes nothing)
//   verdicts    Int32Array   filled by JavaScript: >= 0 ACCEPT with that fwmark,
//                            -1 DROP, -2 ACCEPT leaving the mark untouched, any
//                            other negative value DROP. Before each callback
//                            every entry is preset to `defaultVerdict`.
//   hwProtocol  Uint16Array  ETH_P_* of packet i in host order (0x0800, 0x86dd)
//   queueIndex  Uint16Array  packet i came from queueNums[queueIndex[i]]
// The metadata arrays share one ArrayBuffer, `packets` has its own.
//
// Exceptions thrown by onBatch: the verdicts stay as the callback left them
// (entries it did not reach keep `defaultVerdict`), they are sent as usual, and
// only then is the exception handed to Node's uncaught-exception path
// (napi_fatal_exception). A packet read from the socket always gets a verdict.
//
// Lifetime: close() unbinds and closes the socket (idempotent; deferred to the
// end of the batch when called from onBatch). The same happens when the object
// is collected (only possible while not started: start() holds a reference) and
// at env teardown through an async cleanup hook, so worker threads end cleanly.
// On process.exit() the kernel unbinds the queue when the socket is closed.
//
// Several queues on one socket (option queueNums): the kernel lets one
// portid own several queue instances, and every packet message and verdict
// carries its queue number (nfgenmsg.res_id). One socket then serves all the
// queues of a thread: one readiness wake-up, one recvmmsg and one send per
// round for all of them, where one socket per queue costs each of these per
// queue (docs/performance.md, section Receive shape). Packet i came from
// queueNums[queueIndex[i]]; a run of one batch verdict never crosses queues
// (packet ids are counted per queue).
//
// Only moves bytes: no IP parsing and no balancing decision is made here.
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace nfqlb {

namespace {

constexpr int32_t kVerdictDrop = -1;
constexpr int32_t kVerdictAccept = -2;  // ACCEPT without touching the mark
constexpr uint32_t kMaxBatch = 1024;
constexpr size_t kHeadroom = 4096;      // netlink + attribute overhead per datagram
constexpr size_t kVerdictMsgMax = 64;   // one verdict message is 40 bytes
constexpr int kAckTimeoutMs = 5000;
// Room for every attribute type libnetfilter_queue may fill, whichever of its
// header or the kernel's is newer.
constexpr size_t kAttrSlots = NFQA_MAX + 32;

// The three attributes of a queued packet the batch needs.
struct PacketAttrs {
  const struct nlattr* hdr = nullptr;
  const struct nlattr* payload = nullptr;
  const struct nlattr* capLen = nullptr;
};

// Finds them in one pass over the message. Per packet this replaces
// nfq_nlmsg_parse, which clears a kAttrSlots table and validates every
// attribute through a callback. As there, a malformed attribute ends the walk
// and what came before it stays usable.
void FindPacketAttrs(const struct nlmsghdr* nlh, PacketAttrs* out) {
  const size_t start = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
  if (nlh->nlmsg_len < start) return;
  const char* p = reinterpret_cast<const char*>(nlh) + start;
  const char* end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
  while (end - p >= static_cast<ptrdiff_t>(sizeof(struct nlattr))) {
    const struct nlattr* a = reinterpret_cast<const struct nlattr*>(p);
    if (a->nla_len < sizeof(struct nlattr) || a->nla_len > end - p) return;
    switch (a->nla_type & NLA_TYPE_MASK) {
      case NFQA_PACKET_HDR: out->hdr = a; break;
      case NFQA_PAYLOAD: out->payload = a; break;
      case NFQA_CAP_LEN: out->capLen = a; break;
      default: break;
    }
    p += NLA_ALIGN(a->nla_len);
  }
}

// The names are QUEUE_STAT_FIELDS of src/addon/queue.ts, which GetStats() sets in this order;
// test/native/queue.test.ts checks that the object it returns has exactly those keys.
struct Stats {
  double batches = 0;
  double packets = 0;
  double maxBatch = 0;
  double accepted = 0;
  double dropped = 0;
  double repeated = 0;
  double enobufs = 0;
  double recvErrors = 0;
  double sendErrors = 0;
  double unsentVerdicts = 0;
  double verdictErrors = 0;
  double parseErrors = 0;
  double truncated = 0;
  int lastErrno = 0;
};

// The uv handle lives apart from the object: its memory must stay valid until
// the close callback, which can come after the object is gone. It also carries
// the async cleanup hook, so env teardown waits for the handle to be closed.
class NfQueue;
struct PollHolder {
  uv_poll_t poll;
  NfQueue* owner;
  napi_async_cleanup_hook_handle hook;
};

// The longest a blocking receive waits before runBlocking() looks at the
// clock and its wake flag again.
constexpr long kBlockSliceMs = 5;

uint64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000u + static_cast<uint64_t>(ts.tv_nsec) / 1000000u;
}

// Reads integer option `name`, which src/addon/queue.ts has checked and filled in
// (it owns the ranges and defaults); [lo, hi] here only guards this file's
// buffer arithmetic against a direct caller. Returns false with an exception
// pending otherwise.
bool IntOption(Napi::Object opts, const char* name, int64_t lo, int64_t hi, int64_t* out) {
  Napi::Env env = opts.Env();
  Napi::Value v = opts.Get(name);
  if (env.IsExceptionPending()) return false;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1e300;
  if (!v.IsNumber() || d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) ||
      d > static_cast<double>(hi)) {
    ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", std::string("new NfQueue(): option ") + name);
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

class NfQueue : public Napi::ObjectWrap<NfQueue> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NfQueue",
                       {
                           InstanceMethod<&NfQueue::Start>("start"),
                           InstanceMethod<&NfQueue::Stop>("stop"),
                           InstanceMethod<&NfQueue::RunBlocking>("runBlocking"),
                           InstanceMethod<&NfQueue::Close>("close"),
                           InstanceMethod<&NfQueue::GetStats>("stats"),
                           InstanceAccessor<&NfQueue::GetClosed>("closed"),
                           InstanceAccessor<&NfQueue::GetRunning>("running"),
                       });
  }

  explicit NfQueue(const Napi::CallbackInfo& info);
  ~NfQueue() override { CloseNow(false); }

  // Called from the async cleanup hook while the env is torn down.
  void Teardown() { CloseNow(true); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RunBlocking(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetStats(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), closed_); }
  Napi::Value GetRunning(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), running_); }

  bool Open(Napi::Env env);
  int Configure(uint16_t queue, uint8_t command, bool withParams);
  void RepeatEarlyPacket(const struct nlmsghdr* nlh);
  void CloseNow(bool teardown);
  void StopPolling();
  void ReleaseCallback();
  bool ReadRound(bool block);
  void ParseDatagram(const char* buf, size_t len);
  void HandlePacket(const struct nlmsghdr* nlh);
  void Dispatch();
  void SendVerdicts(uint32_t n, bool fromJs);
  bool BuffersAttached();

  static void OnPoll(uv_poll_t* handle, int status, int events);

  // Options.
  uint32_t queueNum_ = 0;  // queueNums_[0]
  std::vector<uint16_t> queueNums_;
  // Queue number -> index in queueNums_ (-1: not ours), for the packet path.
  std::vector<int16_t> queueIndexOf_;
  uint32_t copyRange_ = 1500;
  uint32_t qlength_ = 1024;
  uint32_t batchSize_ = 64;
  int64_t rcvbuf_ = 0;
  int rcvbufActual_ = 0;
  bool failOpen_ = false;
  int32_t defaultVerdict_ = kVerdictDrop;
  // A verdict send failed, or a packet message could not be parsed: packets
  // of the kernel's queue were left without a verdict. A batch verdict would
  // give them the verdict and mark of the packets of its run (the kernel
  // applies it to every queued id up to the run's last), so from then on
  // every packet gets a message of its own.
  bool verdictsLost_ = false;

  // Socket and loop.
  struct mnl_socket* nl_ = nullptr;
  int fd_ = -1;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
  PollHolder* holder_ = nullptr;
  bool closed_ = false;
  bool running_ = false;
  bool polling_ = false;
  bool inRound_ = false;
  bool closeRequested_ = false;
  bool refd_ = false;
  // Started with start(onBatch, true): no uv_poll; the thread calls
  // runBlocking(), which waits in recvmmsg itself (see RunBlocking).
  bool blocking_ = false;
  // Inside runBlocking(): JavaScript is on the stack, so a batch is handed
  // over with a plain call rather than MakeCallback.
  bool inBlockingCall_ = false;
  // The batch handler threw during runBlocking(): stop the loop.
  bool handlerThrew_ = false;

  // JavaScript side.
  Napi::FunctionReference onBatch_;
  Napi::AsyncContext* asyncContext_ = nullptr;
  Napi::Reference<Napi::ArrayBuffer> packetsRef_;
  Napi::Reference<Napi::ArrayBuffer> metaRef_;
  uint8_t* packets_ = nullptr;
  uint32_t* offsets_ = nullptr;
  uint32_t* lengths_ = nullptr;
  uint32_t* origLengths_ = nullptr;
  uint32_t* ids_ = nullptr;
  int32_t* verdicts_ = nullptr;
  uint16_t* hwProtocol_ = nullptr;
  uint16_t* queueIndex_ = nullptr;

  // Batch state.
  uint32_t count_ = 0;
  std::vector<uint32_t> privateIds_;
  std::vector<uint16_t> privateQueues_;
  size_t slotSize_ = 0;
  std::vector<char> recvBufs_;
  std::vector<struct mmsghdr> msgs_;
  std::vector<struct iovec> iovs_;
  std::vector<struct sockaddr_nl> addrs_;
  std::vector<char> verdictBuf_;

  Stats stats_;
};

void OnTeardown(napi_async_cleanup_hook_handle handle, void* arg) {
  PollHolder* holder = static_cast<PollHolder*>(arg);
  // The owner uv_close()s the handle; its close callback removes this hook.
  if (holder->owner != nullptr) holder->owner->Teardown();
}

void OnHolderClosed(uv_handle_t* handle) {
  PollHolder* holder = reinterpret_cast<PollHolder*>(handle);
  if (holder->hook != nullptr) napi_remove_async_cleanup_hook(holder->hook);
  delete holder;
}

NfQueue::NfQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NfQueue>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "new NfQueue(options)");
    return;
  }
  Napi::Object opts = info[0].As<Napi::Object>();
  int64_t v = 0;
  if (!IntOption(opts, "queueNum", 0, 65535, &v)) return;
  queueNum_ = static_cast<uint32_t>(v);
  queueNums_.assign(1, static_cast<uint16_t>(queueNum_));
  Napi::Value qs = opts.Get("queueNums");
  if (env.IsExceptionPending()) return;
  if (!qs.IsUndefined()) {
    // src/addon/queue.ts checks them (distinct, in range, first = queueNum); this guards the arithmetic.
    if (!qs.IsArray() || qs.As<Napi::Array>().Length() < 1 || qs.As<Napi::Array>().Length() > 1024) {
      ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "new NfQueue(): option queueNums");
      return;
    }
    Napi::Array a = qs.As<Napi::Array>();
    queueNums_.clear();
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Value e = a.Get(k);
      if (env.IsExceptionPending()) return;
      double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
      if (d < 0 || d > 65535 || d != static_cast<double>(static_cast<int64_t>(d))) {
        ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "new NfQueue(): option queueNums");
        return;
      }
      queueNums_.push_back(static_cast<uint16_t>(d));
    }
    queueNum_ = queueNums_[0];
  }
  queueIndexOf_.assign(65536, -1);
  for (size_t k = 0; k < queueNums_.size(); k++) {
    if (queueIndexOf_[queueNums_[k]] != -1) {
      ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "new NfQueue(): option queueNums has a queue twice");
      return;
    }
    queueIndexOf_[queueNums_[k]] = static_cast<int16_t>(k);
  }
  if (!IntOption(opts, "copyRange", 1, 65535, &v)) return;
  copyRange_ = static_cast<uint32_t>(v);
  if (!IntOption(opts, "qlength", 1, INT32_MAX, &v)) return;
  qlength_ = static_cast<uint32_t>(v);
  if (!IntOption(opts, "batchSize", 1, kMaxBatch, &v)) return;
  batchSize_ = static_cast<uint32_t>(v);
  if (!IntOption(opts, "rcvbuf", 1, INT32_MAX, &v)) return;
  rcvbuf_ = v;
  if (!IntOption(opts, "defaultVerdict", kVerdictAccept, INT32_MAX, &v)) return;
  defaultVerdict_ = static_cast<int32_t>(v);
  Napi::Value fo = opts.Get("failOpen");
  if (env.IsExceptionPending()) return;
  if (!fo.IsBoolean()) {
    ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "new NfQueue(): option failOpen");
    return;
  }
  failOpen_ = fo.IsBoolean() && fo.As<Napi::Boolean>().Value();

  // Buffers: created once, kept alive by this object.
  const size_t n = batchSize_;
  Napi::ArrayBuffer packetsAb = Napi::ArrayBuffer::New(env, n * copyRange_);
  const size_t metaBytes = n * (5 * sizeof(uint32_t) + 2 * sizeof(uint16_t));
  Napi::ArrayBuffer metaAb = Napi::ArrayBuffer::New(env, metaBytes);
  if (env.IsExceptionPending()) return;
  packetsRef_ = Napi::Persistent(packetsAb);
  metaRef_ = Napi::Persistent(metaAb);
  packets_ = static_cast<uint8_t*>(packetsAb.Data());
  uint8_t* meta = static_cast<uint8_t*>(metaAb.Data());
  memset(meta, 0, metaBytes);
  offsets_ = reinterpret_cast<uint32_t*>(meta);
  lengths_ = offsets_ + n;
  origLengths_ = lengths_ + n;
  ids_ = origLengths_ + n;
  verdicts_ = reinterpret_cast<int32_t*>(ids_ + n);
  hwProtocol_ = reinterpret_cast<uint16_t*>(verdicts_ + n);
  queueIndex_ = hwProtocol_ + n;
  for (uint32_t i = 0; i < batchSize_; i++) offsets_[i] = i * copyRange_;
  privateIds_.assign(n, 0);
  privateQueues_.assign(n, 0);

  slotSize_ = (copyRange_ + kHeadroom + 7) & ~static_cast<size_t>(7);
  recvBufs_.assign(n * slotSize_, 0);
  msgs_.assign(n, {});
  iovs_.assign(n, {});
  addrs_.assign(n, {});
  for (size_t i = 0; i < n; i++) {
    iovs_[i].iov_base = recvBufs_.data() + i * slotSize_;
    iovs_[i].iov_len = slotSize_;
    msgs_[i].msg_hdr.msg_iov = &iovs_[i];
    msgs_[i].msg_hdr.msg_iovlen = 1;
    msgs_[i].msg_hdr.msg_name = &addrs_[i];
    msgs_[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_nl);
  }
  verdictBuf_.assign(n * kVerdictMsgMax, 0);

  Napi::Object self = info.This().As<Napi::Object>();
  auto ro = napi_enumerable;
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("packets", Napi::Uint8Array::New(env, n * copyRange_, packetsAb, 0), ro),
      Napi::PropertyDescriptor::Value("offsets", Napi::Uint32Array::New(env, n, metaAb, 0), ro),
      Napi::PropertyDescriptor::Value("lengths", Napi::Uint32Array::New(env, n, metaAb, 4 * n), ro),
      Napi::PropertyDescriptor::Value("origLengths", Napi::Uint32Array::New(env, n, metaAb, 8 * n), ro),
      Napi::PropertyDescriptor::Value("ids", Napi::Uint32Array::New(env, n, metaAb, 12 * n), ro),
      Napi::PropertyDescriptor::Value("verdicts", Napi::Int32Array::New(env, n, metaAb, 16 * n), ro),
      Napi::PropertyDescriptor::Value("hwProtocol", Napi::Uint16Array::New(env, n, metaAb, 20 * n), ro),
      Napi::PropertyDescriptor::Value("queueIndex", Napi::Uint16Array::New(env, n, metaAb, 22 * n), ro),
  });
  if (env.IsExceptionPending()) return;

  if (!Open(env)) return;

  self.DefineProperties({
      Napi::PropertyDescriptor::Value("queueNum", Napi::Number::New(env, queueNum_), ro),
      Napi::PropertyDescriptor::Value("queueCount", Napi::Number::New(env, static_cast<double>(queueNums_.size())), ro),
      Napi::PropertyDescriptor::Value("copyRange", Napi::Number::New(env, copyRange_), ro),
      Napi::PropertyDescriptor::Value("qlength", Napi::Number::New(env, qlength_), ro),
      Napi::PropertyDescriptor::Value("batchSize", Napi::Number::New(env, batchSize_), ro),
      Napi::PropertyDescriptor::Value("rcvbuf", Napi::Number::New(env, static_cast<double>(rcvbuf_)), ro),
      Napi::PropertyDescriptor::Value("rcvbufActual", Napi::Number::New(env, rcvbufActual_), ro),
      Napi::PropertyDescriptor::Value("failOpen", Napi::Boolean::New(env, failOpen_), ro),
      Napi::PropertyDescriptor::Value("defaultVerdict", Napi::Number::New(env, defaultVerdict_), ro),
      Napi::PropertyDescriptor::Value("portid", Napi::Number::New(env, portid_), ro),
  });
}

// Opens the socket, binds the queue (synchronously acknowledged) and sets up the
// poll handle. On failure: exception pending, socket closed.
bool NfQueue::Open(Napi::Env env) {
  const std::string q = "queue " + std::to_string(queueNum_);
  nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (nl_ == nullptr) {
    int err = errno;
    ThrowError(env, "NFQLB_ERR_QUEUE", "cannot open a netfilter netlink socket for " + q, err);
    return false;
  }
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    int err = errno;
    mnl_socket_close(nl_);
    nl_ = nullptr;
    ThrowError(env, "NFQLB_ERR_QUEUE", "cannot bind the netlink socket for " + q, err);
    return false;
  }
  fd_ = mnl_socket_get_fd(nl_);
  portid_ = mnl_socket_get_portid(nl_);

  int one = 1;
  mnl_socket_setsockopt(nl_, NETLINK_NO_ENOBUFS, &one, sizeof(one));
  int size = static_cast<int>(rcvbuf_);
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  socklen_t len = sizeof(rcvbufActual_);
  getsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbufActual_, &len);

  for (uint16_t queue : queueNums_) {
    int err = Configure(queue, NFQNL_CFG_CMD_BIND, true);
    if (err != 0) {
      // Closing the socket unbinds the queues bound so far.
      mnl_socket_close(nl_);
      nl_ = nullptr;
      fd_ = -1;
      // src/addon/queue.ts tells the user what EPERM/EBUSY (held by another socket or
      // no CAP_NET_ADMIN) and ETIMEDOUT mean for this bind.
      ThrowError(env, "NFQLB_ERR_QUEUE", "cannot bind queue " + std::to_string(queue), err);
      return false;
    }
  }

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    CloseNow(false);
    ThrowError(env, "NFQLB_ERR_QUEUE", "napi_get_uv_event_loop for " + q);
    return false;
  }
  holder_ = new PollHolder{};
  holder_->owner = this;
  holder_->poll.data = holder_;
  int rc = uv_poll_init(loop, &holder_->poll, fd_);
  if (rc != 0) {
    delete holder_;
    holder_ = nullptr;
    CloseNow(false);
    ThrowError(env, "NFQLB_ERR_QUEUE", "uv_poll for " + q, -rc);
    return false;
  }
  if (napi_add_async_cleanup_hook(env, OnTeardown, holder_, &holder_->hook) != napi_ok) holder_->hook = nullptr;
  return true;
}

// Sends one NFQNL_MSG_CONFIG with NLM_F_ACK and waits for its answer. Packets
// that reach the socket before the answer go back to the kernel with NF_REPEAT,
// which runs the hook again and so re-queues them to the now configured queue.
// Returns 0 or an errno value.
int NfQueue::Configure(uint16_t queue, uint8_t command, bool withParams) {
  alignas(8) char buf[512];
  struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = ++seq_;
  const uint32_t seq = nlh->nlmsg_seq;
  nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, command);
  if (withParams) {
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, static_cast<int>(copyRange_));
    nfq_nlmsg_cfg_put_qmaxlen(nlh, qlength_);
    uint32_t flags = NFQA_CFG_F_GSO | (failOpen_ ? NFQA_CFG_F_FAIL_OPEN : 0);
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN));
  }
  if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) return errno;

  char* rbuf = recvBufs_.data();
  const uint64_t deadline = NowMs() + kAckTimeoutMs;
  for (;;) {
    uint64_t now = NowMs();
    if (now >= deadline) return ETIMEDOUT;
    struct pollfd pfd = {fd_, POLLIN, 0};
    int pr = poll(&pfd, 1, static_cast<int>(deadline - now));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return errno;
    if (pr == 0) return ETIMEDOUT;
    ssize_t r = recv(fd_, rbuf, slotSize_, MSG_DONTWAIT);
    if (r < 0) {
      int err = errno;
      if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) continue;
      if (err == ENOBUFS) {
        stats_.enobufs++;
        continue;
      }
      return err;
    }
    int remaining = static_cast<int>(r);
    const struct nlmsghdr* m = reinterpret_cast<const struct nlmsghdr*>(rbuf);
    while (mnl_nlmsg_ok(m, remaining)) {
      if (m->nlmsg_type == NLMSG_ERROR && m->nlmsg_seq == seq &&
          m->nlmsg_len >= mnl_nlmsg_size(sizeof(struct nlmsgerr))) {
        const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(m));
        return -e->error;
      }
      if (m->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) RepeatEarlyPacket(m);
      m = mnl_nlmsg_next(m, &remaining);
    }
  }
}

void NfQueue::RepeatEarlyPacket(const struct nlmsghdr* nlh) {
  struct nlattr* attr[kAttrSlots] = {};
  nfq_nlmsg_parse(nlh, attr);
  if (attr[NFQA_PACKET_HDR] == nullptr ||
      mnl_attr_get_payload_len(attr[NFQA_PACKET_HDR]) < sizeof(struct nfqnl_msg_packet_hdr)) {
    stats_.parseErrors++;
    return;
  }
  const auto* ph = static_cast<const struct nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
  const auto* gen = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  alignas(8) char buf[kVerdictMsgMax];
  struct nlmsghdr* v = nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT, ntohs(gen->res_id));
  nfq_nlmsg_verdict_put(v, static_cast<int>(ntohl(ph->packet_id)), NF_REPEAT);
  if (mnl_socket_sendto(nl_, v, v->nlmsg_len) < 0) {
    stats_.sendErrors++;
    stats_.unsentVerdicts++;
    stats_.lastErrno = errno;
  } else {
    stats_.repeated++;
  }
}

void NfQueue::StopPolling() {
  if (polling_ && holder_ != nullptr) uv_poll_stop(&holder_->poll);
  polling_ = false;
}

void NfQueue::ReleaseCallback() {
  onBatch_.Reset();
  delete asyncContext_;
  asyncContext_ = nullptr;
  if (refd_) {
    refd_ = false;
    Unref();
  }
}

// Idempotent. teardown: the env is going away, so no JavaScript-facing cleanup.
void NfQueue::CloseNow(bool teardown) {
  if (closed_) return;
  closed_ = true;
  running_ = false;
  StopPolling();
  if (holder_ != nullptr) {
    holder_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&holder_->poll), OnHolderClosed);
    holder_ = nullptr;
  }
  if (nl_ != nullptr) {
    // Unbind explicitly (closing the socket would do it too); no answer needed.
    for (uint16_t queue : queueNums_) {
      alignas(8) char buf[128];
      struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
      nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_UNBIND);
      mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len);
    }
    mnl_socket_close(nl_);
    nl_ = nullptr;
    fd_ = -1;
  }
  if (teardown) {
    asyncContext_ = nullptr;  // left to the env; napi_async_destroy is unsafe here
    refd_ = false;
  } else if (!inRound_) {
    ReleaseCallback();
  }
}

bool NfQueue::BuffersAttached() {
  return !packetsRef_.IsEmpty() && !metaRef_.IsEmpty() && !packetsRef_.Value().IsDetached() &&
         !metaRef_.Value().IsDetached();
}

void NfQueue::OnPoll(uv_poll_t* handle, int status, int events) {
  PollHolder* holder = static_cast<PollHolder*>(handle->data);
  if (holder == nullptr || holder->owner == nullptr) return;
  NfQueue* self = holder->owner;
  if (status < 0) {
    self->stats_.recvErrors++;
    self->stats_.lastErrno = -status;
  }
  self->ReadRound(false);
}

// One round: receive up to batchSize datagrams, hand the packets to
// JavaScript (one call per batch), send the verdicts. `block`: the first
// recvmmsg waits for a datagram (up to the socket's SO_RCVTIMEO) instead of
// returning at once. Returns false when nothing came.
bool NfQueue::ReadRound(bool block) {
  if (inRound_ || closed_ || !running_) return false;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  inRound_ = true;
  if (!BuffersAttached()) {
    // JavaScript transferred the shared buffers away: nothing can be delivered.
    StopPolling();
    running_ = false;
    inRound_ = false;
    ReleaseCallback();
    Napi::Value err = MakeError(env, "NFQLB_ERR_QUEUE_STATE",
                                "queue " + std::to_string(queueNum_) + ": shared buffers detached, queue stopped");
    if (!env.IsExceptionPending()) napi_fatal_exception(env, err);
    return false;
  }
  uint32_t got = 0;
  while (got < batchSize_) {
    for (uint32_t i = got; i < batchSize_; i++) {
      msgs_[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_nl);
      msgs_[i].msg_hdr.msg_flags = 0;
      msgs_[i].msg_len = 0;
    }
    const uint32_t asked = batchSize_ - got;
    // MSG_WAITFORONE: wait for the first datagram only, then take what is there.
    int r = recvmmsg(fd_, &msgs_[got], asked, block && got == 0 ? MSG_WAITFORONE : MSG_DONTWAIT, nullptr);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == ENOBUFS) {
        stats_.enobufs++;
        continue;
      }
      stats_.recvErrors++;
      stats_.lastErrno = err;
      break;
    }
    if (r == 0) break;
    got += static_cast<uint32_t>(r);
    // Fewer than asked: the socket was empty a moment ago. Asking again
    // would almost always cost a syscall that returns EAGAIN; the poll is
    // level-triggered, so a packet that arrived since wakes us again.
    if (static_cast<uint32_t>(r) < asked) break;
  }
  for (uint32_t i = 0; i < got && !closeRequested_ && !closed_; i++) {
    if (addrs_[i].nl_pid != 0) continue;  // only the kernel talks to this socket
    if (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) stats_.truncated++;
    ParseDatagram(recvBufs_.data() + i * slotSize_, msgs_[i].msg_len);
  }
  if (!closeRequested_ && !closed_) Dispatch();
  inRound_ = false;
  if (closeRequested_) {
    closeRequested_ = false;
    CloseNow(false);
  } else if (!running_) {
    ReleaseCallback();
  }
  return got > 0;
}

void NfQueue::ParseDatagram(const char* buf, size_t len) {
  int remaining = static_cast<int>(len);
  const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(buf);
  while (mnl_nlmsg_ok(nlh, remaining)) {
    if (nlh->nlmsg_type == NLMSG_ERROR) {
      // Answers to verdicts only come back on errors (no NLM_F_ACK was asked).
      if (nlh->nlmsg_len >= mnl_nlmsg_size(sizeof(struct nlmsgerr))) {
        const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (e->error != 0) {
          stats_.verdictErrors++;
          stats_.lastErrno = -e->error;
        }
      }
    } else if (nlh->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
      HandlePacket(nlh);
      if (closeRequested_ || closed_) return;
    }
    nlh = mnl_nlmsg_next(nlh, &remaining);
  }
  if (remaining > 0) {
    stats_.parseErrors++;
    verdictsLost_ = true;  // a packet in what was left may now wait without a verdict
  }
}

void NfQueue::HandlePacket(const struct nlmsghdr* nlh) {
  PacketAttrs attr;
  FindPacketAttrs(nlh, &attr);  // a bad later attribute still leaves the header usable
  if (attr.hdr == nullptr || mnl_attr_get_payload_len(attr.hdr) < sizeof(struct nfqnl_msg_packet_hdr)) {
    stats_.parseErrors++;  // no id: cannot be given a verdict
    verdictsLost_ = true;
    return;
  }
  if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(struct nfgenmsg)) {
    stats_.parseErrors++;
    verdictsLost_ = true;
    return;
  }
  const uint16_t queue = ntohs(static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->res_id);
  const int16_t qidx = queueIndexOf_[queue];
  if (qidx < 0) {
    // Not a queue of this socket (cannot happen: the kernel only sends bound queues): no verdict can be meant here.
    stats_.parseErrors++;
    return;
  }
  if (count_ == batchSize_) {
    Dispatch();
    if (closeRequested_ || closed_) return;
  }
  const auto* ph = static_cast<const struct nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr.hdr));
  const uint32_t i = count_++;
  uint32_t plen = 0;
  if (attr.payload != nullptr) {
    plen = mnl_attr_get_payload_len(attr.payload);
    uint32_t copy = plen < copyRange_ ? plen : copyRange_;
    memcpy(packets_ + static_cast<size_t>(i) * copyRange_, mnl_attr_get_payload(attr.payload), copy);
    plen = copy;
  }
  uint32_t orig = plen;
  if (attr.capLen != nullptr && mnl_attr_get_payload_len(attr.capLen) >= sizeof(uint32_t)) {
    orig = ntohl(mnl_attr_get_u32(attr.capLen));
  }
  privateIds_[i] = ntohl(ph->packet_id);
  privateQueues_[i] = queue;
  queueIndex_[i] = static_cast<uint16_t>(qidx);
  ids_[i] = privateIds_[i];
  lengths_[i] = plen;
  origLengths_[i] = orig;
  hwProtocol_[i] = ntohs(ph->hw_protocol);
  offsets_[i] = i * copyRange_;
  verdicts_[i] = defaultVerdict_;
}

void NfQueue::Dispatch() {
  const uint32_t n = count_;
  if (n == 0) return;
  stats_.batches++;
  stats_.packets += n;
  if (n > stats_.maxBatch) stats_.maxBatch = n;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  bool fromJs = true;
  bool threw = false;
  Napi::Value error;
  if (!onBatch_.IsEmpty()) {
    napi_async_context ctx = asyncContext_ != nullptr ? static_cast<napi_async_context>(*asyncContext_) : nullptr;
    if (inBlockingCall_) {
      onBatch_.Call(Value(), {Napi::Number::New(env, n)});
    } else {
      onBatch_.MakeCallback(Value(), {Napi::Number::New(env, n)}, ctx);
    }
    if (env.IsExceptionPending()) {
      error = env.GetAndClearPendingException().Value();
      threw = true;
    }
    if (!BuffersAttached()) fromJs = false;  // verdicts unreadable: use defaultVerdict
  }
  SendVerdicts(n, fromJs);
  count_ = 0;
  if (threw) {
    handlerThrew_ = true;
    napi_fatal_exception(env, error);
  }
}

void NfQueue::SendVerdicts(uint32_t n, bool fromJs) {
  if (nl_ == nullptr) return;
  char* buf = verdictBuf_.data();
  size_t off = 0;
  auto verdictOf = [&](uint32_t k) { return fromJs ? verdicts_[k] : defaultVerdict_; };
  for (uint32_t i = 0; i < n;) {
    const int32_t v = verdictOf(i);
    // A run of packets with consecutive ids and the same verdict and mark (one
    // 5-tuple, or one target) gets one NFQNL_MSG_VERDICT_BATCH: the kernel
    // applies it to every packet of the queue with an id up to the run's last,
    // so the kernel parses one message for the run instead of one per packet.
    // The packets before the run had their verdicts in earlier messages of
    // this send (handled in order) or of earlier batches (unless a send
    // failed: verdictsLost_); consecutive ids mean no packet the kernel
    // queued in between was left out of the run.
    uint32_t last = i;
    while (!verdictsLost_ && last + 1 < n && verdictOf(last + 1) == v && privateQueues_[last + 1] == privateQueues_[i] &&
           privateIds_[last + 1] == privateIds_[last] + 1) {
      last++;
    }
    const uint32_t count = last - i + 1;
    struct nlmsghdr* nlh =
        nfq_nlmsg_put(buf + off, count > 1 ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT, privateQueues_[i]);
    const int id = static_cast<int>(privateIds_[last]);
    if (v >= 0) {
      nfq_nlmsg_verdict_put(nlh, id, NF_ACCEPT);
      nfq_nlmsg_verdict_put_mark(nlh, static_cast<uint32_t>(v));
      stats_.accepted += count;
    } else if (v == kVerdictAccept) {
      nfq_nlmsg_verdict_put(nlh, id, NF_ACCEPT);
      stats_.accepted += count;
    } else {
      nfq_nlmsg_verdict_put(nlh, id, NF_DROP);
      stats_.dropped += count;
    }
    off += nlh->nlmsg_len;
    i = last + 1;
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    if (mnl_socket_sendto(nl_, buf, off) >= 0) return;
    int err = errno;
    stats_.lastErrno = err;
    if (err != EINTR && err != EAGAIN && err != ENOBUFS && err != ENOMEM) break;
  }
  stats_.sendErrors++;
  stats_.unsentVerdicts += n;
  verdictsLost_ = true;
}

Napi::Value NfQueue::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string q = "queue " + std::to_string(queueNum_);
  if (info.Length() < 1 || !info[0].IsFunction()) {
    ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "start(onBatch)");
    return env.Undefined();
  }
  if (closed_ || closeRequested_) {
    ThrowError(env, "NFQLB_ERR_QUEUE_STATE", q + " is closed");
    return env.Undefined();
  }
  if (running_) {
    ThrowError(env, "NFQLB_ERR_QUEUE_STATE", q + " is already started");
    return env.Undefined();
  }
  const bool blocking = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  if (blocking) {
    // The socket itself waits (recvmmsg with MSG_WAITFORONE), at most
    // kBlockSliceMs at a time so that runBlocking() can return to the
    // thread's event loop when nothing comes.
    int flags = fcntl(fd_, F_GETFL);
    struct timeval tv = {0, kBlockSliceMs * 1000};
    if (flags < 0 || fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
      ThrowError(env, "NFQLB_ERR_QUEUE", "blocking receive for " + q, errno);
      return env.Undefined();
    }
  } else {
    int rc = uv_poll_start(&holder_->poll, UV_READABLE, OnPoll);
    if (rc != 0) {
      ThrowError(env, "NFQLB_ERR_QUEUE", "uv_poll for " + q, -rc);
      return env.Undefined();
    }
    polling_ = true;
  }
  blocking_ = blocking;
  running_ = true;
  onBatch_ = Napi::Persistent(info[0].As<Napi::Function>());
  if (asyncContext_ == nullptr) asyncContext_ = new Napi::AsyncContext(env, "nfqlb:NfQueue", Value());
  if (!refd_) {
    refd_ = true;
    Ref();  // a polling queue must not be collected
  }
  return env.Undefined();
}

Napi::Value NfQueue::Stop(const Napi::CallbackInfo& info) {
  running_ = false;
  StopPolling();
  if (!inRound_) ReleaseCallback();  // else at the end of the round
  return info.Env().Undefined();
}

// runBlocking(maxMs, wake): for a queue started with start(onBatch, true).
// Receives and dispatches rounds on this thread, each waiting in recvmmsg for
// its first datagram (no epoll, no event loop turn: one system call to wait
// and receive, one to send the verdicts), until `maxMs` have passed, the
// queue is stopped or closed, or wake[0] is not 0 (another thread set it to
// have this one return to its event loop, e.g. for a message). Returns the
// rounds that carried packets.
Napi::Value NfQueue::RunBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[1].As<Napi::TypedArray>().ElementLength() < 1) {
    ThrowError(env, "NFQLB_ERR_QUEUE_OPTION", "runBlocking(maxMs, wake: Int32Array)");
    return env.Undefined();
  }
  if (!blocking_ || inRound_ || inBlockingCall_) {
    ThrowError(env, "NFQLB_ERR_QUEUE_STATE", "queue " + std::to_string(queueNum_) + ": runBlocking() needs start(onBatch, true), outside a batch");
    return env.Undefined();
  }
  // An argument of this call: it stays alive (and its memory in place) until the call returns.
  int32_t* wake = info[1].As<Napi::Int32Array>().Data();
  const uint64_t deadline = NowMs() + static_cast<uint64_t>(std::max(0.0, info[0].As<Napi::Number>().DoubleValue()));
  uint32_t rounds = 0;
  inBlockingCall_ = true;
  handlerThrew_ = false;
  while (running_ && !closed_ && !handlerThrew_ && !env.IsExceptionPending()) {
    if (__atomic_load_n(wake, __ATOMIC_ACQUIRE) != 0) break;
    if (ReadRound(true)) rounds++;
    if (NowMs() >= deadline) break;
  }
  inBlockingCall_ = false;
  return Napi::Number::New(env, rounds);
}

Napi::Value NfQueue::Close(const Napi::CallbackInfo& info) {
  if (inRound_ && !closed_) {
    // Inside onBatch: this batch's verdicts are sent first, then the queue closes.
    closeRequested_ = true;
    running_ = false;
    StopPolling();
  } else {
    CloseNow(false);
  }
  return info.Env().Undefined();
}

Napi::Value NfQueue::GetStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("batches", stats_.batches);
  o.Set("packets", stats_.packets);
  o.Set("maxBatch", stats_.maxBatch);
  o.Set("accepted", stats_.accepted);
  o.Set("dropped", stats_.dropped);
  o.Set("repeated", stats_.repeated);
  o.Set("enobufs", stats_.enobufs);
  o.Set("recvErrors", stats_.recvErrors);
  o.Set("sendErrors", stats_.sendErrors);
  o.Set("unsentVerdicts", stats_.unsentVerdicts);
  o.Set("verdictErrors", stats_.verdictErrors);
  o.Set("parseErrors", stats_.parseErrors);
  o.Set("truncated", stats_.truncated);
  o.Set("lastErrno", stats_.lastErrno != 0 ? Napi::Value(Napi::Number::New(env, stats_.lastErrno)) : env.Null());
  return o;
}

}  // namespace

void InitNfqueue(Napi::Env env, Napi::Object exports) {
  exports.Set("NfQueue", NfQueue::Define(env));
  Napi::Object v = Napi::Object::New(env);
  v.Set("DROP", Napi::Number::New(env, kVerdictDrop));
  v.Set("ACCEPT", Napi::Number::New(env, kVerdictAccept));
  exports.Set("verdicts", v);
}

}  // namespace nfqlb
