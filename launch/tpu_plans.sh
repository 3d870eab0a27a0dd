#!/usr/bin/env bash
# The TPU plans of BENCHMARKS.md "Issue 42": each config x slice compiled by libtpu on this host
# (python -m mutualnet_jax.plan), into docs/tpu_plans/CONFIG_SLICE/. A cell with plan.json is
# done and skipped; a cut-off cell continues from its kernels.jsonl. Run in the background:
#   nohup bash launch/tpu_plans.sh > /tmp/tpu_plans.log 2>&1 &
# Optional: CELLS="mbv1:v5e-8 mbv2:v4-8" to run those cells only.
set -uo pipefail
cd "$(dirname "$0")/.."
CELLS=${CELLS:-"mbv1:v5e-8 mbv1_aligned:v5e-8 mbv1:v4-8 mbv2:v5e-8 resnet50:v5e-8 mbv1:v5p-8 mbv1:v6e-8 mbv2:v4-8 mbv2:v5p-8 mbv2:v6e-8 resnet50:v4-8 resnet50:v5p-8 resnet50:v6e-8"}
for cell in $CELLS; do
  config=${cell%%:*}; slice=${cell##*:}
  out=docs/tpu_plans/${config}_${slice}
  if [ -f "$out/plan.json" ]; then echo "done: $cell"; continue; fi
  echo "plan: $cell ($(date -u +%H:%M:%S))"
  /usr/bin/time -v python -m mutualnet_jax.plan --config=configs/$config.py --topology=$slice \
      --out=$out > /dev/null 2> >(grep -v '^[WIE][0-9]\|Source Location\|libtpu_init\|accelerator type\|^===\|worker hostname' >&2)
  echo "exit $? for $cell ($(date -u +%H:%M:%S))"
  python -m mutualnet_jax.plan --summary=docs/tpu_plans > /dev/null   # docs/tpu_plans/README.md
done
