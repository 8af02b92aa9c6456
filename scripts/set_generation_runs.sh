#!/usr/bin/env bash
# Every row of README "What beta learns: generation from a set". Trains each setting for its
# seeds, runs the set-generation experiment on each run, and prints the tables over seeds of
# `run.py compare --experiment set-generation` (each also in a new ./compare-TIME/compare.md).
#
#   scripts/set_generation_runs.sh [OUT_DIR] [SEEDS...]        (default: runs/set-generation, seeds 0 1 2)
#   PYTHON=.venv/bin/python scripts/set_generation_runs.sh runs/sg 0
#
# mix: offline MNIST, groups of 32 with class shares ~ Dirichlet(0.3), p(d | beta), 120 epochs.
# fac: grouped:mnist, groups of 32 sharing an angle and a gain, 40 epochs. On one CPU thread a
# mix run takes 5-10 minutes, a fac run 2-4 and an experiment 1-3. A finished run is skipped and
# a killed one resumed, so the script can be run again after a stop.
set -euo pipefail
out=${1:-runs/set-generation}; shift $(( $# > 0 ? 1 : 0 ))
seeds=${*:-0 1 2}
py=${PYTHON:-python}
mix="--dataset mnist -B 32 --epochs 120 --groups labels:0.3"
fac="--dataset grouped:mnist --epochs 40"
global="--cluster-weights global"
# kind | setting | training flags | "all" (every seed) or "first" (the first seed only: an ablation)
settings=(
    "mix|default|$global|all"
    "mix|z3|$global --z-dim 3|all"
    "mix|loo|$global --leave-one-out|all"
    "mix|klw2|$global --local-kl-weight 2|all"
    "mix|film|$global --decoder-film|all"
    "mix|attn|$global --guide attention|all"
    "mix|setmixsmw4|$global --guide set-mix --set-mix-weight 4|all"
    "mix|setmix|$global --guide set-mix|first"
    "mix|smw4|$global --set-mix-weight 4|first"
    "mix|setmixb20|$global --guide set-mix --beta-dim 20|first"
    "mix|setmixk30|$global --guide set-mix --K 30|first"
    "mix|setmixk30b40|$global --guide set-mix --K 30 --beta-dim 40|first"
    "mix|combo|$global --guide set-mix --set-mix-weight 4 --K 30 --local-kl-weight 2|first"
    "mix|mlvae|--model mlvae|all"
    "mix|vae|--model vae|all"
    "mix|gmvae|--model gmvae|first"
    "fac|default|-B 32|all"
    "fac|z3|-B 32 --z-dim 3|all"
    "fac|loo|-B 32 --leave-one-out|all"
    "fac|klw2|-B 32 --local-kl-weight 2|all"
    "fac|film|-B 32 --decoder-film|all"
    "fac|attn|-B 32 --guide attention|all"
    "fac|setmix|-B 32 --guide set-mix|first"
    "fac|b4g8|-B 4 -G 8|all"
    "fac|b4g8loo|-B 4 -G 8 --leave-one-out|first"
    "fac|b2g16|-B 2 -G 16|first"
    "fac|z3b4g8|-B 4 -G 8 --z-dim 3|first"
    "fac|mlvae|-B 32 --model mlvae|all"
    "fac|vae|-B 32 --model vae|all"
    "fac|gmvae|-B 32 --model gmvae|first"
)
first=${seeds%% *}
mkdir -p "$out"
for seed in $seeds; do
    for entry in "${settings[@]}"; do
        IFS='|' read -r kind name flags which <<< "$entry"
        [ "$which" = first ] && [ "$seed" != "$first" ] && continue
        base=$([ "$kind" = mix ] && echo "$mix" || echo "$fac")
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
for kind in mix fac; do
    runs=()
    for entry in "${settings[@]}"; do
        IFS='|' read -r k name _ _ <<< "$entry"
        [ "$k" = "$kind" ] || continue
        for dir in "$out/$kind-$name"-s*; do [ -d "$dir" ] && runs+=("$dir"); done
    done
    $py run.py compare "${runs[@]}" --experiment set-generation --quiet  # prints them, and writes ./compare-TIME/
done
