/*
 * /bin/nfqlb in the container image (Dockerfile): a launcher, not product
 * logic. `bin/nfqlb` is a `#!/usr/bin/env node` script, and a script cannot
 * carry file capabilities; this executable does. Kubernetes' runtimes
 * (containerd, CRI-O) give a non-root user no ambient capabilities, so a
 * capability added in the pod spec reaches a non-root process only through
 * file capabilities on what it executes (docs/container.md).
 *
 * The file capabilities are permitted only (cap_net_admin,cap_ipc_lock,
 * cap_ipc_owner=p, no effective bit): the kernel grants those the container's
 * bounding set allows and, unlike with the effective bit, does not refuse to
 * run this file when the pod adds only some of them. This launcher raises each
 * capability it was granted into the inheritable and then the ambient set,
 * which is how a capability survives the exec of node (a file without
 * capabilities), and execs node with the command line: for `flowlb` and `lb`
 * only, the commands that bind queues; every other command runs without. Only
 * processes started through this file gain the capabilities, not every node
 * program.
 *
 * node would let its environment load code with the capabilities
 * (NODE_OPTIONS=--require=..., NODE_PATH, ...): every NODE_* variable but
 * NODE_ENV is dropped. The dynamic loader already ignores LD_* here (the
 * kernel marks an exec that gained capabilities as secure), and glibc removes
 * them from the environment it passes on.
 */
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef NFQLB_NODE
#define NFQLB_NODE "/usr/local/bin/node"
#endif
#ifndef NFQLB_SCRIPT
#define NFQLB_SCRIPT "/opt/nfqlb/bin/nfqlb"
#endif

extern char **environ;

static const struct { int cap; const char *name; } passed[] = {
  { CAP_NET_ADMIN, "CAP_NET_ADMIN" },
  { CAP_IPC_LOCK, "CAP_IPC_LOCK" },
  { CAP_IPC_OWNER, "CAP_IPC_OWNER" },
};

static int permitted(const struct __user_cap_data_struct *set, int cap) {
  return (set[cap / 32].permitted >> (cap % 32)) & 1;
}

/* Only the daemons bind queues; the other commands (tables in /dev/shm, the
 * control socket) need no capability, and run without. The command is the
 * first argument (src/cli/main.ts). */
static int binds_queues(int argc, char **argv) {
  return argc > 1 && (strcmp(argv[1], "flowlb") == 0 || strcmp(argv[1], "lb") == 0);
}

static int kept_variable(const char *entry) {
  return strncmp(entry, "NODE_", 5) != 0 || strncmp(entry, "NODE_ENV=", 9) == 0;
}

int main(int argc, char **argv) {
  struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct caps[2];
  size_t i;
  if (syscall(SYS_capget, &header, caps) != 0) {
    fprintf(stderr, "nfqlb: reading this process's capabilities failed: %s\n", strerror(errno));
    return 126;
  }
  int granted = 0;
  for (i = 0; binds_queues(argc, argv) && i < sizeof passed / sizeof passed[0]; i++) {
    if (permitted(caps, passed[i].cap)) {
      caps[passed[i].cap / 32].inheritable |= 1u << (passed[i].cap % 32);
      granted = 1;
    }
  }
  if (granted && syscall(SYS_capset, &header, caps) != 0)
    fprintf(stderr, "nfqlb: making the capabilities inheritable failed: %s\n", strerror(errno));
  for (i = 0; granted && i < sizeof passed / sizeof passed[0]; i++) {
    if (permitted(caps, passed[i].cap) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, passed[i].cap, 0, 0) != 0)
      fprintf(stderr, "nfqlb: passing %s on to node failed: %s\n", passed[i].name, strerror(errno));
  }

  size_t n = 0, kept = 0;
  while (environ[n] != NULL) n++;
  char **env = calloc(n + 1, sizeof *env);
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (env == NULL || args == NULL) {
    fprintf(stderr, "nfqlb: out of memory\n");
    return 126;
  }
  for (i = 0; i < n; i++)
    if (kept_variable(environ[i])) env[kept++] = environ[i];
  args[0] = "node";
  args[1] = NFQLB_SCRIPT;
  for (int a = 1; a < argc; a++) args[a + 1] = argv[a];
  execve(NFQLB_NODE, args, env);
  fprintf(stderr, "nfqlb: cannot run %s: %s\n", NFQLB_NODE, strerror(errno));
  return 127;
}
