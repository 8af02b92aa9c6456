#!/usr/bin/env bash
# Train every model and UG-VAE guide on one dataset with equal epochs, then evaluate them,
# compare them in one table, and run the paper's experiments on UG-VAE with the baselines.
#
#   scripts/paper_tables.sh DATASET EPOCHS [OUT_DIR] [extra run.py training flags...]
#   scripts/paper_tables.sh mnist 50 runs/tables-mnist
#   scripts/paper_tables.sh fashion-mnist 10 runs/tables-fashion --device cuda
set -euo pipefail
dataset=${1:?dataset}; epochs=${2:?epochs}; out=${3:-runs/tables-$dataset}; shift $(( $# < 3 ? $# : 3 ))
py=${PYTHON:-python}
mkdir -p "$out"
names=()
for spec in ugvae:structured ugvae:beta-from-x ugvae:mean-field vae: gmvae: mlvae:; do
    model=${spec%%:*}; guide=${spec#*:}; name=$model${guide:+-$guide}
    $py run.py --dataset "$dataset" --epochs "$epochs" --model "$model" ${guide:+--guide "$guide"} \
        --run-dir "$out/$name" --quiet "$@" > /dev/null
    names+=("$out/$name")
    echo "trained $name"
done
$py run.py compare "${names[@]}" --out "$out"  # the first run, UG-VAE, is the reference
$py run.py experiment interpolation --run "$out/ugvae-structured"
$py run.py experiment interpolation --run "$out/mlvae"
$py run.py experiment structured-batches --run "$out/ugvae-structured" --baseline-runs "$out/mlvae" "$out/vae"
echo "tables and figures under $out"
