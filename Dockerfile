# nfqlb-ts: the nfqlb load balancer in Node.js/TypeScript.
#
#   podman build -t nfqlb-ts .          (or docker build; docs/container.md)
#
# The daemon needs CAP_NET_ADMIN (NFQUEUE), which the runtime grants
# (--cap-add=NET_ADMIN; docs/container.md: as Kubernetes runs it), the network namespace with the NFQUEUE rules and the
# fwmark routes, and /dev/shm shared with whoever runs `nfqlb init/activate`.
# The default command is Meridio's stateless-lb line; pass another nfqlb
# command to run it instead, e.g. `podman run ... nfqlb-ts show --shm=tshm-stream-a`.

# Base images, pinned by digest (multi-arch manifest lists of Node 24 LTS on
# Debian bookworm). To refresh: `podman pull docker.io/library/node:24-bookworm`
# (and ...-slim), then `podman image inspect --format '{{.Digest}}' <name>`,
# or `skopeo inspect docker://docker.io/library/node:24-bookworm-slim | jq -r .Digest`;
# put the new digests below and run `npm run test:image`.
# Where no registry is reachable, test/image/run.sh builds local stand-ins and
# passes them with --build-arg NODE_IMAGE=...@<stand-in digest> (and
# NODE_SLIM_IMAGE): a digest names exactly one image, so a stand-in can never
# be taken for the official image or the other way round.
ARG NODE_IMAGE=docker.io/library/node:24-bookworm@sha256:3a09aa6354567619221ef6c45a5051b671f953f0a1924d1f819ffb236e520e6b
ARG NODE_SLIM_IMAGE=docker.io/library/node:24-bookworm-slim@sha256:e8e2e91b1378f83c5b2dd15f0247f34110e2fe895f6ca7719dbb780f929368eb

# --- build: the C++ addon and the TypeScript ---------------------------------
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetfilter-queue-dev libmnl-dev python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# /bin/nfqlb: the launcher that carries the capabilities
# (native/launcher/nfqlb-launcher.c, docs/container.md). First, so that its
# layer stays cached while the TypeScript changes.
COPY native/launcher ./native/launcher
RUN gcc -O2 -Wall -Wextra -Werror -o /opt/nfqlb-launcher native/launcher/nfqlb-launcher.c
# Dependencies first, without install scripts: this layer stays cached until
# the lockfile changes, and the addon is compiled once, below.
# Behind an intercepting HTTPS proxy, give its CA certificates (PEM) as the
# build secret `extra-ca` (`--secret id=extra-ca,src=FILE`): mounted for this
# step only, never in a layer.
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=extra-ca \
    if [ -s /run/secrets/extra-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra-ca; fi \
 && npm ci --ignore-scripts --no-audit --no-fund
COPY binding.gyp tsconfig.json ./
COPY native ./native
COPY src ./src
COPY bin ./bin
# The one compile (`npm run build`: node-gyp, against this image's own node
# headers, no download; then tsc), then /opt/nfqlb gets only what runs:
# production dependencies (node-addon-api is headers for the compile),
# the compiled JavaScript without source maps, the addon and the launcher.
RUN node_modules/.bin/node-gyp rebuild --nodedir=/usr/local \
 && node_modules/.bin/tsc -p . \
 && node bin/nfqlb completion bash > /opt/nfqlb-completion.bash \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/node-addon-api node_modules/.bin \
 && find node_modules -depth -type d -empty -delete \
 && mkdir -p /opt/nfqlb/build/Release \
 && cp -a package.json bin dist node_modules /opt/nfqlb/ \
 && cp build/Release/nfqlb_native.node /opt/nfqlb/build/Release/ \
 && find /opt/nfqlb/dist -name '*.map' -delete

# --- runtime ------------------------------------------------------------------
FROM ${NODE_SLIM_IMAGE}
# The addon's libraries; then away with what does not run here: npm, corepack,
# yarn, the node headers and docs, apt's lists and logs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetfilter-queue1 libmnl0 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
 && rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
           /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* \
           /usr/local/include/node /usr/local/share/doc/node /usr/local/share/man/man1/node.1
# nfqlb at /bin/nfqlb (= /usr/bin/nfqlb, and on PATH), root's, with the file
# capabilities permitted but not effective: a non-root user gets the ones the
# runtime's bounding set allows (the pod's capabilities.add), and only when it
# runs this file; the launcher hands them to node as ambient capabilities.
# setcap comes and goes in this one step.
COPY --from=build /opt/nfqlb-launcher /usr/bin/nfqlb
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_admin,cap_ipc_lock,cap_ipc_owner=p /usr/bin/nfqlb \
 && apt-get purge -y --auto-remove libcap2-bin \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old
COPY --from=build /opt/nfqlb /opt/nfqlb
# The bash completion, made from the option table (`nfqlb completion bash`).
COPY --from=build /opt/nfqlb-completion.bash /usr/share/bash-completion/completions/nfqlb
WORKDIR /opt/nfqlb
ENV NODE_ENV=production
# Prometheus metrics (--metrics_address, default 0.0.0.0:9657).
EXPOSE 9657
# The base image's `node` user, numeric so that Kubernetes' runAsNonRoot can
# check it (Meridio's stateless-lb image on this one sets USER 10002).
# NET_ADMIN comes from the runtime (--cap-add=NET_ADMIN, capabilities.add) through
# /bin/nfqlb's file capabilities; the code and the tables' shared memory need
# no other privilege.
USER 1000:1000
# SIGTERM (podman/docker stop) unbinds the queues and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/nfqlb"]
CMD ["flowlb", "--queue=0:3", "--promiscuous_ping", "--hash_mode=0"]
