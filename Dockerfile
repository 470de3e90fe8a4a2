# nfqlb-ts: the nfqlb load balancer in Node.js/TypeScript.
#
#   docker build -t nfqlb-ts .
#   docker run --rm --cap-add=NET_ADMIN --network=container:<pod> nfqlb-ts
#
# The daemon needs CAP_NET_ADMIN (NFQUEUE) and /dev/shm shared with whoever
# runs `nfqlb init/activate` (in Meridio: the same container). The default
# command is Meridio's stateless-lb line; pass another nfqlb command to run it
# instead, e.g. `docker run ... nfqlb-ts show --shm=tshm-stream-a`.

# --- build: the C++ addon and the TypeScript ---------------------------------
FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetfilter-queue-dev libmnl-dev python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# Build the addon against this image's own node headers (no header download).
ENV npm_config_nodedir=/usr/local
WORKDIR /src
# `npm ci` runs the install script (node-gyp rebuild), which needs the addon sources.
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY src ./src
COPY bin ./bin
RUN npm run build \
 && npm prune --omit=dev

# --- runtime ------------------------------------------------------------------
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetfilter-queue1 libmnl0 iproute2 iptables nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/nfqlb
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/Release/*.node ./build/Release/
COPY --from=build /src/bin ./bin
RUN ln -s /opt/nfqlb/bin/nfqlb /usr/local/bin/nfqlb \
 && nfqlb version
ENV NODE_ENV=production
# SIGTERM (docker stop) unbinds the queues and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nfqlb"]
CMD ["flowlb", "--queue=0:3", "--promiscuous_ping", "--hash_mode=0"]
