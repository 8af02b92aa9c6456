#!/usr/bin/env bash
# Every row of README "What beta learns": set generation. Trains each setting for each seed,
# runs the set-generation experiment on each run, and prints the summary over seeds.
#
#   scripts/set_generation_runs.sh [OUT_DIR] [SEEDS...]        (default: runs/set-generation, seeds 0 1 2)
#   PYTHON=.venv/bin/python scripts/set_generation_runs.sh runs/sg 0
#
# Class mix: offline MNIST, groups of 32 with class shares ~ Dirichlet(0.3), p(d | beta), 120
# epochs. Factors: grouped:mnist, groups of 32 sharing an angle and a gain, 40 epochs. On one CPU
# thread a class-mix run takes about 5 minutes and a factors run about 2; a run that exists is
# skipped, and a killed one is resumed, so the script can be run again after a stop.
set -euo pipefail
out=${1:-runs/set-generation}; shift $(( $# > 0 ? 1 : 0 ))
seeds=${*:-0 1 2}
py=${PYTHON:-python}
mix="--dataset mnist -B 32 --epochs 120 --groups labels:0.3"
fac="--dataset grouped:mnist -B 32 --epochs 40"
global="--cluster-weights global"
# setting name | training flags (the class-mix UG-VAE rows add $global: p(d | beta))
settings=(
    "default|"
    "z3|--z-dim 3"
    "loo|--leave-one-out"
    "klw2|--local-kl-weight 2"
    "film|--decoder-film"
    "attn|--guide attention"
    "setmix|--guide set-mix"
    "mlvae|--model mlvae"
    "vae|--model vae"
)
mkdir -p "$out"
for seed in $seeds; do
    for entry in "${settings[@]}"; do
        name=${entry%%|*}; flags=${entry#*|}
        for kind in mix fac; do
            base=$([ $kind = mix ] && echo "$mix" || echo "$fac")
            [ $kind = mix ] && [[ $flags != --model* ]] && base="$base $global"
            dir="$out/$kind-$name-s$seed"
            if [ ! -e "$dir/summary.json" ]; then
                if [ -d "$dir" ]; then
                    $py run.py --resume "$dir" --quiet > /dev/null
                else
                    # shellcheck disable=SC2086
                    $py run.py $base $flags --seed "$seed" --run-dir "$dir" --quiet > /dev/null
                fi
            fi
            ls "$dir"/experiments/set-generation*/results.json > /dev/null 2>&1 \
                || $py run.py experiment set-generation --run "$dir" > /dev/null
            echo "done $dir"
        done
    done
done
# The GMVAE baseline, one seed: its set-code and cluster-mix generators.
for kind in mix fac; do
    dir="$out/$kind-gmvae-s0"
    base=$([ $kind = mix ] && echo "$mix" || echo "$fac")
    # shellcheck disable=SC2086
    [ -e "$dir/summary.json" ] || $py run.py $base --model gmvae --seed 0 --run-dir "$dir" --quiet > /dev/null
    ls "$dir"/experiments/set-generation*/results.json > /dev/null 2>&1 \
        || $py run.py experiment set-generation --run "$dir" > /dev/null
done
mix_runs=(); fac_runs=()
for entry in "${settings[@]}" "gmvae|"; do
    for dir in "$out/mix-${entry%%|*}"-s*; do [ -d "$dir" ] && mix_runs+=("$dir"); done
    for dir in "$out/fac-${entry%%|*}"-s*; do [ -d "$dir" ] && fac_runs+=("$dir"); done
done
$py scripts/set_generation_summary.py "${mix_runs[@]}"
$py scripts/set_generation_summary.py "${fac_runs[@]}"
