{
  "targets": [
    {
      "target_name": "nfqlb_native",
      "sources": ["native/addon.cc", "native/shm.cc", "native/nfqueue.cc", "native/unixsock.cc", "native/tun.cc", "native/stopwatchdog.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-O2"],
      "libraries": ["-lnetfilter_queue", "-lmnl", "-lrt", "-lpthread"]
    }
  ]
}
