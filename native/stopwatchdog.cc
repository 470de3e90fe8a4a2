// The stop deadline. `SIGTERM` must end the daemon within a second even when
// a thread is stuck in a system call; the JavaScript stop timer cannot help
// then, because a signal reaches JavaScript only through the event loop of the
// main thread, and a stuck main thread (or a stuck worker that process.exit()
// waits for) never gets there. So a handler chained after libuv's posts a
// semaphore — async-signal-safe, and nothing else is done in the handler — and
// a thread of ours, with every signal blocked, wakes, waits out the deadline,
// and ends the process with a distinct code and one line if it is still there.
// The kernel unbinds the queues when their netlink sockets close at exit.
#include "common.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace nfqlb {

namespace {

sem_t stopSignalled;
struct sigaction previousTerm;
struct sigaction previousInt;
int deadlineMs = 900;
int exitCode = 71;
char line[512];
size_t lineLength = 0;
bool armed = false;

void ChainedHandler(int sig, siginfo_t* info, void* context) {
  const struct sigaction* previous = sig == SIGTERM ? &previousTerm : &previousInt;
  int savedErrno = errno;
  if ((previous->sa_flags & SA_SIGINFO) != 0) {
    if (previous->sa_sigaction != nullptr) previous->sa_sigaction(sig, info, context);
  } else if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN) {
    previous->sa_handler(sig);
  }
  sem_post(&stopSignalled);
  errno = savedErrno;
}

void* Watch(void*) {
  while (sem_wait(&stopSignalled) != 0) {
  }
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += deadlineMs / 1000;
  until.tv_nsec += static_cast<long>(deadlineMs % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
  }
  if (lineLength > 0 && write(STDERR_FILENO, line, lineLength) < 0) {
    // Nothing more can be done about stderr; the exit code still says it.
  }
  _exit(exitCode);
  return nullptr;
}

// armStopWatchdog(ms, code, line): from now on, the first SIGTERM or SIGINT
// starts a countdown of `ms`; a process still alive at its end writes `line`
// to stderr and exits with `code`. Call it after the JavaScript handlers are
// installed (process.on), so that libuv's handler is the one chained to.
// Returns false when it was armed already.
Napi::Value ArmStopWatchdog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString()) {
    Napi::TypeError::New(env, "armStopWatchdog(ms, code, line)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (armed) return Napi::Boolean::New(env, false);
  deadlineMs = info[0].As<Napi::Number>().Int32Value();
  exitCode = info[1].As<Napi::Number>().Int32Value() & 0xFF;
  std::string text = info[2].As<Napi::String>().Utf8Value();
  lineLength = text.size() < sizeof(line) ? text.size() : sizeof(line) - 1;
  memcpy(line, text.data(), lineLength);
  if (sem_init(&stopSignalled, 0, 0) != 0) {
    ThrowError(env, "NFQLB_ERR_THREAD", "cannot arm the stop deadline (sem_init)", errno);
    return env.Undefined();
  }
  // The watcher must never be the thread a signal is delivered to.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t thread;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  int rc = pthread_create(&thread, &attr, Watch, nullptr);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc != 0) {
    ThrowError(env, "NFQLB_ERR_THREAD", "cannot arm the stop deadline (pthread_create)", rc);
    return env.Undefined();
  }
  pthread_setname_np(thread, "nfqlb-stopwatch");
  struct sigaction ours;
  memset(&ours, 0, sizeof(ours));
  ours.sa_sigaction = ChainedHandler;
  ours.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&ours.sa_mask);
  sigaction(SIGTERM, &ours, &previousTerm);
  sigaction(SIGINT, &ours, &previousInt);
  armed = true;
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitStopWatchdog(Napi::Env env, Napi::Object exports) {
  exports.Set("armStopWatchdog", Napi::Function::New(env, ArmStopWatchdog));
}

}  // namespace nfqlb
