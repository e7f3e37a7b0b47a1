#!/usr/bin/env bash
# Every seed method proposes at 50% of the FLOPs on two graph-derived spaces, Fashion-MNIST
# (the quick start's recipe: configs/default.yaml, 6,000 training images, base 3 epochs).
# Usage: bash reports/graph_seeds/run.sh RUN_ROOT  (writes RUN_ROOT/<space>/proposals/*.yaml)
set -u
root=${1:-runs/graph_seeds}
for space in resnet18_w16_data mobilenet_v2_half_data; do
  for m in uniform l1norm thinet regression slimming autopruner; do
    start=$(date +%s.%N)
    nas-prune propose -m "$m" --budget 0.5 --set space="$space" --run-dir "$root/$space" \
      > "$root/$space-$m.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "$space $m rc=$rc $(echo "$end - $start" | bc) s"
  done
done
