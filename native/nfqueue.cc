// NFQUEUE binding (libnetfilter_queue + libmnl): arrives with the data path.
#include "common.h"

namespace nfqlb {
void InitNfqueue(Napi::Env, Napi::Object) {}
}  // namespace nfqlb
