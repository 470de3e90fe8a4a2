#!/usr/bin/env bash
# `npm run test:image` (root): builds the container image from the committed
# tree and tests the image itself.
#   1. installs podman, runc and debootstrap when missing (apt);
#   2. takes the official base images pinned in the Dockerfile when they can be
#      pulled, otherwise builds local stand-ins once (standin-bases.sh);
#   3. builds the Dockerfile from `git archive HEAD` (uncommitted changes are
#      not in the image), with the host's extra CA certificates as a build secret;
#   4. runs the unit tests with the image's own node binary;
#   5. runs test/image/image.test.ts against the image, then prints the total
#      time and the image size.
# NFQLB_IMAGE_BASES=official|standin forces a choice (default: try official).
# podman runs with this folder's containers.conf (CONTAINERS_CONF), not the
# machine's. Containers made by the test are removed, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
say() { echo "test:image: $*"; }
elapsed() { echo "$(( $(date +%s) - start )) s"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "test:image: needs root (podman, network namespaces); run it as root" >&2
  exit 1
fi

packages=(podman runc debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

# The test bed (namespaces, servers, clients) runs from the host's build.
if [ -d node_modules ] && [ -f build/Release/nfqlb_native.node ]; then
  npx --no-install tsc -p testbed
else
  bash scripts/setup.sh >/dev/null
fi

state=/var/tmp/nfqlb-ts-image-test
mkdir -p "$state"
sed "s/@NOFILE@/$(ulimit -Hn)/g" test/image/containers.conf >"$state/containers.conf"
export CONTAINERS_CONF=$state/containers.conf

image=localhost/nfqlb-ts:test
run_label="nfqlbts-image-test=$$"
tmp=$(mktemp -d)
cleanup() {
  local ids
  # Newest first: a container that joined another's namespaces goes before it.
  for id in $(podman ps -aq --filter "label=$run_label" 2>/dev/null || true); do
    podman rm -f -t 0 "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- base images ---------------------------------------------------------------
arg_default() { sed -n "s/^ARG $1=//p" Dockerfile; }
build_ref=$(arg_default NODE_IMAGE)
slim_ref=$(arg_default NODE_SLIM_IMAGE)
bases=${NFQLB_IMAGE_BASES:-auto}
if [ "$bases" != standin ]; then
  for ref in "$build_ref" "$slim_ref"; do
    if ! podman image exists "$ref" && ! timeout 120 podman pull -q "$ref" >/dev/null 2>"$tmp/pull.err"; then
      if [ "$bases" = official ]; then
        say "cannot pull $ref: $(tail -1 "$tmp/pull.err")" >&2
        exit 1
      fi
      say "cannot pull $ref ($(tail -1 "$tmp/pull.err" | cut -c1-120)); using local stand-ins"
      bases=standin
      break
    fi
  done
fi
if [ "$bases" = standin ]; then
  digest=$(bash test/image/standin-bases.sh "$build_ref" "$slim_ref")
  build_ref=${build_ref%@*}@$digest
  slim_ref=${slim_ref%@*}@$digest
  say "base images: stand-ins $slim_ref ($(elapsed))"
else
  say "base images: official $slim_ref"
fi

# --- build ---------------------------------------------------------------------
context=$tmp/context
mkdir -p "$context"
git archive HEAD | tar -x -C "$context"
[ -z "$(git status --porcelain --untracked-files=no)" ] || say "building HEAD $(git rev-parse --short HEAD); uncommitted changes are not in the image"

# The extra CA certificates of an intercepting proxy, for npm in the build stage.
secret=()
ca=""
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -s "$NODE_EXTRA_CA_CERTS" ]; then
  ca=$NODE_EXTRA_CA_CERTS
elif compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  ca=$tmp/extra-ca.pem
  cat /usr/local/share/ca-certificates/*.crt >"$ca"
fi
[ -z "$ca" ] || secret=(--secret "id=extra-ca,src=$ca")

previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
t_build=$(date +%s)
if ! podman build --pull=never --network=host --layers \
    --build-arg "NODE_IMAGE=$build_ref" --build-arg "NODE_SLIM_IMAGE=$slim_ref" \
    "${secret[@]}" -t "$image" "$context" >"$state/build.log" 2>&1; then
  tail -40 "$state/build.log" >&2
  say "image build failed (whole log: $state/build.log)" >&2
  exit 1
fi
say "built $image in $(( $(date +%s) - t_build )) s ($(elapsed))"
# The image this build replaced (its build cache stays).
[ -z "$previous" ] || [ "$previous" = "$(podman image inspect --format '{{.Id}}' "$image")" ] \
  || podman rmi "$previous" >/dev/null 2>&1 || true

# --- the unit tests on the image's Node ---------------------------------------
mnt=$(podman image mount "$image")
image_node=$mnt/usr/local/bin/node
say "unit tests with the image's node $("$image_node" --version)"
status=0
"$image_node" node_modules/jest/bin/jest.js --runInBand test/unit >"$state/unit.log" 2>&1 || status=$?
podman image unmount "$image" >/dev/null
if [ $status -ne 0 ]; then
  tail -60 "$state/unit.log" >&2
  say "unit tests failed on the image's node (whole log: $state/unit.log)" >&2
  exit 1
fi
grep -E '^Tests:' "$state/unit.log" | sed 's/^/test:image: unit /'

# --- the image test ------------------------------------------------------------
NFQLB_IMAGE=$image NFQLB_IMAGE_BASE=$slim_ref NFQLB_IMAGE_TEST_LABEL=$run_label \
  npx --no-install jest --runInBand test/image

size=$(podman image inspect --format '{{.Size}}' "$image")
base=$(podman image inspect --format '{{.Size}}' "$slim_ref")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
say "image $image: $(mb "$size") ($(mb $((size - base))) above its base $(mb "$base")), $(podman history -q "$image" | wc -l) layers"
say "total time $(elapsed)"
