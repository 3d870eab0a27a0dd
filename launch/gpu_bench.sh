#!/usr/bin/env bash
# The MutualNet training step on one GPU, beside the published PyTorch code on the same GPU
# (issue 33; BENCHMARKS.md "On a GPU").
#
#   bash launch/gpu_bench.sh prepare [PUBLISHED]   # here: wheels into .whl/, the published code
#                                                  # into .ref/MutualNet (both git-ignored)
#   bash launch/gpu_bench.sh run OUT_DIR           # on the GPU machine, from the repository root
#   python launch/gpu_bench_report.py OUT_DIR      # the table, from the JSON files of a run
#
# prepare: PUBLISHED is a checkout of https://github.com/taoyang1122/MutualNet (a work tree, or a
# bare git directory: its HEAD is exported); without it, it is cloned. The wheels are what a
# machine with jax, flax, optax, orbax and torch but no TensorFlow, tfds, clu or ml_collections
# lacks for the benchmark's step path: ml_collections (pure Python; absl-py and PyYAML it needs
# are there).
#
# run: every stage writes OUT_DIR/<stage>.json (or <stage>.err), each under its own time limit,
# so a stage that fails or overruns costs only itself; the limits add up to 470 s. MobileNet v1
# [0.25, 1.0], resolutions {224, 192, 160, 128}, width step 0.05, batch 256, the benchmark's
# draws of steps 0..STEPS-1 (5 steps: 11 distinct subnets, so 11 step kernels and one update
# kernel per dtype; counted with mutualnet.draw_subnets).
#   jax_float32, jax_bfloat16    cold persistent cache: compile of every kernel the timed steps
#                                use, then the timed steps (median, images/s, TFLOP/s, MFU);
#                                float32 also times the project's PyTorch port on cuda
#                                (--compare_torch: a fresh process, and interleaved)
#   published_float32,           the published train() on the same draws and batch, float32 and
#   published_bfloat16           under torch.autocast(bfloat16)
#   jax_*_warm                   the same runs again on the now warm cache: compile is loading
#   first_step_float32           fresh processes, start to first step done, cold then warm cache
# Settings (environment): MODEL BATCH RESOLUTIONS WIDTH_STEP NUM_CLASSES STEPS WORKERS
# TORCH_DEVICE (cuda; cpu to try the script without a GPU), PUBLISHED_APP, PYTHON, LIMIT (a
# factor on every stage's time limit), BUNDLE (a .tar.gz refreshed with OUT_DIR after each stage).
# On the lent GPU (the device tool; it sends back at most 8 files):
#   bash launch/gpu_bench.sh run /tmp/gpu_bench   with BUNDLE=$OUT/gpu_bench.tar.gz
set -u -o pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

prepare() {
  local src=${1:-}
  mkdir -p .whl .ref
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl 'ml_collections==1.1.0'
  rm -rf .ref/MutualNet
  if [ -z "$src" ]; then
    git clone -q --depth 1 https://github.com/taoyang1122/MutualNet .ref/MutualNet
  elif [ -f "$src/train.py" ]; then
    cp -r "$src" .ref/MutualNet
  else   # a bare git directory (a mirror)
    git -C "$src" archive --prefix=MutualNet/ HEAD | tar -x -C .ref
  fi
  ls .whl .ref/MutualNet/train.py
}

stage() {   # stage NAME SECONDS COMMAND...: stdout's last line to NAME.json, else NAME.err
  local name=$1 limit=$2
  shift 2
  limit=$(python3 -c "print(int($limit * ${LIMIT:-1}))")
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" >&2
  if timeout -k 10 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"; then
    tail -n 1 "$OUT/$name.out" >"$OUT/$name.json"
  else
    echo "exit $? after $((SECONDS - t0))s" >"$OUT/$name.err"
    tail -n 40 "$OUT/$name.log" >>"$OUT/$name.err"
    cat "$OUT/$name.err" >&2
  fi
  rm -f "$OUT/$name.out"
  echo "   $name: $((SECONDS - t0))s" >&2
  bundle
}

bundle() {   # BUNDLE=FILE.tar.gz: OUT_DIR packed after every stage (what a lent machine sends
  # back is a few files), so a run stopped from outside still leaves its finished stages
  if [ -n "${BUNDLE:-}" ]; then tar -czf "$BUNDLE" -C "$OUT" .; fi
}

run() {
  OUT=${1:?OUT_DIR}
  mkdir -p "$OUT"
  local py=${PYTHON:-python3}
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_bench_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu_bench_site:$REPO${PYTHONPATH:+:$PYTHONPATH}
  else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  fi
  # JAX and PyTorch share the GPU within one process (--compare_torch): no preallocation.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
  local cache=/tmp/gpu_bench_cache
  rm -rf "$cache"
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
      || echo "no nvidia-smi"; } >"$OUT/gpu.txt" 2>&1
  "$py" -c 'import jax, torch; print({"jax": jax.__version__, "devices": str(jax.devices()),
             "torch": torch.__version__, "cuda": torch.cuda.is_available()})' \
      >"$OUT/versions.txt" 2>&1
  cat "$OUT/gpu.txt" "$OUT/versions.txt" >&2

  local flags=(--model="${MODEL:-mobilenet_v1}" --batch="${BATCH:-256}"
               --resolutions="${RESOLUTIONS:-224,192,160,128}" --width_step="${WIDTH_STEP:-0.05}"
               --num_classes="${NUM_CLASSES:-1000}" --steps="${STEPS:-5}"
               --compile_workers="${WORKERS:-8}" --torch_device="${TORCH_DEVICE:-cuda}" --json)
  local published=(launch/published_step.py --published=.ref/MutualNet
                   --app="${PUBLISHED_APP:-apps/mobilenet_v1.yml}" --batch="${BATCH:-256}"
                   --steps="${STEPS:-5}" --resolutions="${RESOLUTIONS:-224,192,160,128}"
                   --width_step="${WIDTH_STEP:-0.05}" --num_classes="${NUM_CLASSES:-1000}"
                   --device="${TORCH_DEVICE:-cuda}")
  # The most wanted first: if time runs short, the last stages are the ones lost.
  stage jax_float32 130 "$py" -m mutualnet_jax.bench "${flags[@]}" --dtype=float32 \
      --cache_dir="$cache/float32" --compare_torch --nofirst_step
  stage published_float32 40 "$py" "${published[@]}" --dtype=float32
  stage jax_bfloat16 100 "$py" -m mutualnet_jax.bench "${flags[@]}" --dtype=bfloat16 \
      --cache_dir="$cache/bfloat16" --nofirst_step
  stage published_bfloat16 40 "$py" "${published[@]}" --dtype=bfloat16
  stage jax_float32_warm 40 "$py" -m mutualnet_jax.bench "${flags[@]}" --dtype=float32 \
      --cache_dir="$cache/float32" --nofirst_step
  stage jax_bfloat16_warm 40 "$py" -m mutualnet_jax.bench "${flags[@]}" --dtype=bfloat16 \
      --cache_dir="$cache/bfloat16" --nofirst_step
  # Cold and warm first step in fresh processes sharing a fresh cache of their own. The parent
  # times one step before them, on the warm float32 cache (loading, not compiling).
  local one=("${flags[@]/--steps=*/--steps=1}")
  stage first_step_float32 80 "$py" -m mutualnet_jax.bench "${one[@]}" --dtype=float32 \
      --cache_dir="$cache/float32"
  "$py" launch/gpu_bench_report.py "$OUT" | tee "$OUT/table.md"
  bundle
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
