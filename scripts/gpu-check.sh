#!/usr/bin/env bash
# The GPU-path check of docs/gpu.md (issues 3 and 6), in two halves:
#
#   scripts/gpu-check.sh prepare   here, once the code is final: the Vulkan loader debs (.gl/), Node
#                                  (.device/node.xz), bench/gpu-check.ts compiled with the src it
#                                  imports (.device/build), a pruned node_modules with that build
#                                  (.device/runtime.tar.xz), the cpu reference (bench/gpu-reference.json,
#                                  re-made when the compiled code changed), and a smoke run of the
#                                  unpacked runtime from outside the repository.
#   scripts/gpu-check.sh run       on the GPU machine (no Node, no network), from the repository root
#                                  with .gl and .device carried: installs the Vulkan loader, unpacks
#                                  Node and the runtime into /tmp, runs every part within
#                                  GPU_CHECK_BUDGET seconds (default 250; GPU_CHECK_CPU_RERUN=0 skips
#                                  re-making the cpu reference there), and writes gpu-check.json
#                                  and gpu-check.log into $OUT. Without nvidia-smi it installs nothing
#                                  and the GPU parts report "webgpu unavailable".
#   scripts/gpu-check.sh software  here or anywhere without a GPU: installs Mesa's lavapipe (a software
#                                  Vulkan driver; Debian 12 needs bookworm-backports' Mesa 25, whose
#                                  lavapipe Dawn accepts), builds the check, and runs the forward and
#                                  training parts on webgpu over lavapipe against the cpu backend
#                                  (GPU_CHECK_STEPS, default 200). Results in $OUT (default
#                                  /tmp/apex-webgpu-software)/webgpu-software-check.json. Slow: lavapipe
#                                  emulates the GPU on the CPU; about 4–8 minutes on the 2-core development VM.
set -uo pipefail
cd "$(dirname "$0")/.."

# bench/gpu-check.ts compiled with the src it imports, into .device/build.
build() {
  rm -rf .device/build
  npx tsc -p bench/tsconfig.gpu-check.json
  # package.json beside the build: ES modules, and apex's version for the provenance records.
  cp package.json .device/build/
}

prepare() {
  set -e
  if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    # The device README's recipe: amd64 debs of the Vulkan/GL loaders, unpacked into / there.
    mkdir -p .gl /tmp/amd64/partial
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update >/dev/null
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  mkdir -p .device
  [ -s .device/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz

  build

  # node_modules with only what the compiled check loads (measured by tracing its file opens):
  # each package's package.json and runtime files; webgpu for linux-x64 alone.
  local stage
  stage=$(mktemp -d)
  keep() {
    local pkg=$1
    shift
    for f in package.json "$@"; do
      mkdir -p "$stage/node_modules/$pkg/$(dirname "$f")"
      cp -r "node_modules/$pkg/$f" "$stage/node_modules/$pkg/$f"
    done
  }
  keep @tensorflow/tfjs dist/tf.node.js
  keep @tensorflow/tfjs-core dist/tf-core.node.js
  keep @tensorflow/tfjs-backend-cpu dist/tf-backend-cpu.node.js
  keep @tensorflow/tfjs-backend-webgl dist/tf-backend-webgl.node.js
  keep @tensorflow/tfjs-layers dist/tf-layers.node.js
  keep @tensorflow/tfjs-converter dist/tf-converter.node.js
  keep @tensorflow/tfjs-data dist/tf-data.node.js
  keep @tensorflow/tfjs-backend-wasm dist/tf-backend-wasm.node.js dist/tfjs-backend-wasm.wasm dist/tfjs-backend-wasm-simd.wasm dist/tfjs-backend-wasm-threaded-simd.wasm
  keep @tensorflow/tfjs-backend-webgpu dist/tf-backend-webgpu.node.js
  keep webgpu index.js dist/linux-x64
  keep long src/long.js
  keep seedrandom index.js seedrandom.js lib
  # Every other package the build imports by name (yaml, tokenizers, …) and what those depend on,
  # whole but for types, source maps, docs and nested node_modules.
  local queue pkg
  queue=$(grep -rhoE "(from |import\()'[^.'][^']*'" .device/build | sed -E "s/^(from |import\()'//; s/'\$//" | grep -v '^node:' |
    sed -E 's#^(@[^/]+/[^/]+|[^@/][^/]*).*#\1#' | sort -u | tr '\n' ' ')
  while [ -n "${queue// /}" ]; do
    read -r pkg queue <<<"$queue"
    [ -e "$stage/node_modules/$pkg" ] && continue
    [ -d "node_modules/$pkg" ] || { echo "not installed, left out: $pkg"; continue; }
    mkdir -p "$stage/node_modules/$pkg"
    tar -C "node_modules/$pkg" --exclude='*.d.ts' --exclude='*.d.*ts' --exclude='*.map' --exclude='*.md' --exclude=node_modules -cf - . | tar -C "$stage/node_modules/$pkg" -xf -
    queue="$queue $(node -e 'console.log(Object.keys(require(process.argv[1]).dependencies ?? {}).join(" "))' "$PWD/node_modules/$pkg/package.json")"
  done
  (cd "$stage/node_modules" && du -sh @*/* [!@]*) | sed 's/^/runtime node_modules: /'
  cp -r .device/build "$stage/build"
  tar -C "$stage" -cf - build node_modules | xz -T2 -6 > .device/runtime.tar.xz
  rm -rf "$stage"

  local digest
  digest=$(node .device/build/bench/gpu-check.js digest)
  if [ "$(node -e 'try{console.log(JSON.parse(require("fs").readFileSync("bench/gpu-reference.json","utf8")).buildDigest)}catch{console.log("none")}')" != "$digest" ]; then
    echo "bench/gpu-reference.json is missing or was made from other code: making the cpu reference (minutes)"
    /usr/bin/time -f 'cpu reference: %e s wall, %U s user' node .device/build/bench/gpu-check.js reference
  else
    echo "bench/gpu-reference.json matches this build ($digest)"
  fi

  # Smoke run of the packed runtime from outside the repository, so that nothing resolves the
  # full node_modules: it must load every backend apex probes and train a few cpu steps.
  local smoke=/tmp/apex-gpu-smoke
  rm -rf "$smoke"
  mkdir -p "$smoke/rt" "$smoke/repo/bench"
  tar -xJf .device/runtime.tar.xz -C "$smoke/rt"
  ln -s "$PWD/fixtures" "$smoke/repo/fixtures"
  cp bench/gpu-reference.json "$smoke/repo/bench/"
  local log
  log=$(
    cd "$smoke/repo" || exit
    node "$smoke/rt/build/bench/gpu-check.js" part backend '{}'
    node "$smoke/rt/build/bench/gpu-check.js" part train '{"backend":"cpu","key":"apex-full","steps":2}'
    node "$smoke/rt/build/bench/gpu-check.js" part train '{"backend":"wasm","key":"vanilla","steps":2}'
  2>&1) || true
  cut -c1-200 <<<"$log"
  [ "$(grep -c '^{"ok":true' <<<"$log")" = 3 ] || { echo "smoke run of the packed runtime FAILED"; exit 1; }
  rm -rf "$smoke"
  du -sch .gl .device/node.xz .device/runtime.tar.xz .device/build | sed "s/^/carried: /"
}

run() {
  local out=$1
  echo "gpu-check $(date -u +%FT%TZ) on $(uname -n), $(nproc) cores"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    # Where the GPU machine's driver keeps its Vulkan ICD (measured: the first path).
    local icd
    icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
    export VK_DRIVER_FILES=${icd:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
    echo "VK_DRIVER_FILES=$VK_DRIVER_FILES; $(ldconfig -p | grep -c libvulkan) libvulkan entries in ld.so.cache"
  else
    echo "no nvidia-smi: the Vulkan loader is not installed here; webgpu will be unavailable"
  fi
  local rt=${GPU_CHECK_RUNTIME:-/tmp/apex-gpu}
  rm -rf "$rt"
  mkdir -p "$rt"
  xz -dc .device/node.xz > "$rt/node" && chmod +x "$rt/node" && tar -xJf .device/runtime.tar.xz -C "$rt" || { echo "could not unpack .device (carry .gl and .device)"; exit 1; }
  local budget=${GPU_CHECK_BUDGET:-250}
  # The script ends its parts by the budget; timeout is the backstop for a hang outside them.
  local rerun=()
  [ "${GPU_CHECK_CPU_RERUN:-1}" = 0 ] && rerun=(--no-cpu-rerun)
  timeout -k 5 $((budget + 30)) "$rt/node" "$rt/build/bench/gpu-check.js" all --out "$out" --budget "$budget" "${rerun[@]}"
  local status=$?
  "$rt/node" -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(JSON.stringify(r.summary ?? "no summary (run cut short)", null, 1))' "$out/gpu-check.json"
  echo "gpu-check exit $status at $(date -u +%FT%TZ)"
  return $status
}

# A WebGPU adapter Dawn accepts, from Mesa's lavapipe: Mesa 22 (Debian 12's own) lacks a feature
# Dawn requires (shaderUniform*ArrayDynamicIndexing), Mesa 25 from bookworm-backports works.
lavapipe() {
  if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && dpkg --compare-versions "$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)" ge 23; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "needs Mesa >= 23's lavapipe (package mesa-vulkan-drivers) and libvulkan1; install them as root and rerun" >&2
    return 1
  fi
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/apex-bookworm-backports.list
    apt-get update >/dev/null && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    apt-get update >/dev/null && apt-get install -y mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
}

software() {
  set -e
  lavapipe
  build
  local out=${OUT:-/tmp/apex-webgpu-software}
  mkdir -p "$out"
  # Dawn wants XDG_RUNTIME_DIR (harmless complaint otherwise); the software adapter needs the opt-in.
  XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} APEX_WEBGPU_ALLOW_SOFTWARE=1 \
    node .device/build/bench/gpu-check.js software --out "$out" --steps "${GPU_CHECK_STEPS:-200}" 2>&1 | tee "$out/webgpu-software-check.log"
}

case "${1:-run}" in
  prepare) prepare ;;
  software) software ;;
  run)
    out=${OUT:-/tmp/apex-gpu-out}
    mkdir -p "$out"
    run "$out" 2>&1 | tee "$out/gpu-check.log"
    ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run|software" >&2; exit 2 ;;
esac
