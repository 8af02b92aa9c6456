#!/usr/bin/env bash
# The results stored under docs/results/data/, from which the docs' Results pages are made: small
# runs (a few epochs, two seeds) that a 2-core CPU trains in about half an hour. The full-scale
# series are scripts/set_generation_runs.sh and the commands on each Results page.
#
#   scripts/docs_results.sh [WORK_DIR]        (default: runs/docs-results)
#   PYTHON=.venv/bin/python scripts/docs_results.sh
#
# Each run is trained, its experiment run, and the files the tables read (config.json,
# summary.json and the experiment's results) copied to docs/results/data/EXPERIMENT/RUN/.
set -euo pipefail
work=${1:-runs/docs-results}
py=${PYTHON:-python}
data=docs/results/data
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# experiment | run name (SETTING-sSEED) | training flags | experiment flags
runs=(
  "group-factors|z3-s0|--dataset grouped:mnist -B 32 --epochs 8 --z-dim 3 --seed 0|--num-groups 100 --pairs 50 --untrained-seeds 1"
  "group-factors|z3-s1|--dataset grouped:mnist -B 32 --epochs 8 --z-dim 3 --seed 1|--num-groups 100 --pairs 50 --untrained-seeds 1"
  "group-factors|z10-s0|--dataset grouped:mnist -B 32 --epochs 8 --seed 0|--num-groups 100 --pairs 50 --untrained-seeds 1"
  "group-factors|z10-s1|--dataset grouped:mnist -B 32 --epochs 8 --seed 1|--num-groups 100 --pairs 50 --untrained-seeds 1"
  "structured-batches|random-s0|--dataset mnist -B 32 --epochs 8 --seed 0|--group-sizes 32 4 --means --num-groups 40 --untrained-seeds 1"
  "structured-batches|random-s1|--dataset mnist -B 32 --epochs 8 --seed 1|--group-sizes 32 4 --means --num-groups 40 --untrained-seeds 1"
  "structured-batches|clusters0-global-s0|--dataset mnist -B 32 --epochs 8 --groups clusters:0 --group-warmup 2 --cluster-weights global --seed 0|--group-sizes 32 4 --means --num-groups 40 --untrained-seeds 1"
  "structured-batches|clusters0-global-s1|--dataset mnist -B 32 --epochs 8 --groups clusters:0 --group-warmup 2 --cluster-weights global --seed 1|--group-sizes 32 4 --means --num-groups 40 --untrained-seeds 1"
  "set-generation|mix-default-s0|--dataset mnist -B 32 --epochs 10 --groups labels:0.3 --cluster-weights global --seed 0|--group-sizes 4 32 --sets 50 --generated 32 --reader-sets 50"
  "set-generation|mix-default-s1|--dataset mnist -B 32 --epochs 10 --groups labels:0.3 --cluster-weights global --seed 1|--group-sizes 4 32 --sets 50 --generated 32 --reader-sets 50"
  "set-generation|mix-setmix-s0|--dataset mnist -B 32 --epochs 10 --groups labels:0.3 --cluster-weights global --guide set-mix --set-mix-weight 4 --seed 0|--group-sizes 4 32 --sets 50 --generated 32 --reader-sets 50"
  "set-generation|mix-setmix-s1|--dataset mnist -B 32 --epochs 10 --groups labels:0.3 --cluster-weights global --guide set-mix --set-mix-weight 4 --seed 1|--group-sizes 4 32 --sets 50 --generated 32 --reader-sets 50"
)
for entry in "${runs[@]}"; do
  IFS='|' read -r experiment name train_flags experiment_flags <<< "$entry"
  run="$work/$experiment/$name"
  if [ ! -f "$run/summary.json" ]; then
    rm -rf "$run"
    # shellcheck disable=SC2086
    $py run.py $train_flags --run-dir "$run" --quiet > /dev/null
  fi
  if [ ! -d "$run/experiments/$experiment" ]; then
    # shellcheck disable=SC2086
    $py run.py experiment "$experiment" --run "$run" $experiment_flags --quiet > /dev/null
  fi
  keep="$data/$experiment/$name"
  mkdir -p "$keep/experiments/$experiment"
  cp "$run/config.json" "$run/summary.json" "$keep/"
  cp "$run/experiments/$experiment"/*.json "$keep/experiments/$experiment/"
  echo "$experiment $name"
done

# The tables of the Results pages, as `compare --experiment` writes them (tests/docs/test_results.py
# makes each again from the stored results and compares).
tables=docs/results/_tables
mkdir -p "$tables"
for experiment in set-generation group-factors structured-batches; do
  out=$(mktemp -d)
  reference=()
  [ "$experiment" = structured-batches ] && reference=(--reference random)
  $py run.py compare "$data/$experiment"/* --experiment "$experiment" "${reference[@]}" --out "$out/tables" > /dev/null
  cp "$out/tables/compare.md" "$tables/$experiment.md"
  rm -rf "$out"
done
