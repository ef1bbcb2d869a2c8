#!/usr/bin/env bash
# Rebuild every generated file of docs/results from the results stores, so that no table,
# figure or claim verdict here is typed by hand. The runs that fill the stores are in
# docs/results/README.md ("Reproduce"); they resume, so this can be run after any of them.
#   bash docs/results/regenerate.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/../.."
LRBENCH=${LRBENCH:-.venv/bin/lrbench}
TUNE=results/thesis-cub-subset-val-tune

# 1. the validation tables that chose every strategy's hyperparameters, and the choice
mkdir -p docs/results/tuning
cp "$TUNE/tuning.csv" "$TUNE/tuning.md" "$TUNE/tuned.yaml" docs/results/tuning/

# 2. per stream: the tuned test table (union-of-seen Recall@1 first, Holm-adjusted tests),
#    on CUB with the ablation rows (the ablations run into the same store), and figures
for stream in cub:thesis-cub-subset lifelong:thesis-lifelong; do
    folder=docs/results/${stream%%:*} store=results/${stream#*:}
    if [ -d "$store" ]; then
        rm -rf "$folder"
        "$LRBENCH" report "$store" --out "$folder" --format md,csv,png
    else
        echo "regenerate: $store not run yet, $folder left as it is" >&2
    fi
done

# 3. the thesis's claims, tested on both streams at once (one Holm family)
if [ -d results/thesis-cub-subset ] && [ -d results/thesis-lifelong ]; then
    rm -rf docs/results/claims && mkdir -p docs/results/claims
    "$LRBENCH" report results/thesis-cub-subset results/thesis-lifelong \
        --claims docs/examples/claims.yaml --out docs/results/claims --format md,csv \
        > docs/results/claims/verdicts.txt
    cat docs/results/claims/verdicts.txt
else
    echo "regenerate: the claims need both stores; docs/results/claims left as it is" >&2
fi
