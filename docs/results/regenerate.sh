#!/usr/bin/env bash
# Rebuild every generated file of docs/results from the results stores, so that no table,
# figure or claim verdict here is typed by hand. The runs that fill the stores are in
# docs/results/README.md ("Reproduce"); they resume, so this can be run after any of them.
#   bash docs/results/regenerate.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/../.."
LRBENCH=${LRBENCH:-.venv/bin/lrbench}
TUNE=results/thesis-cub-subset-val-tune

# 1. the validation tables that chose every strategy's hyperparameters, the choice, and
#    the tuning store's own report (every trial's metrics and what each cell cost)
mkdir -p docs/results/tuning
cp "$TUNE/tuning.csv" "$TUNE/tuning.md" "$TUNE/tuned.yaml" docs/results/tuning/
rm -rf docs/results/tuning/report
"$LRBENCH" report "$TUNE" --out docs/results/tuning/report --format md,csv,png

# 2. per stream: the tuned test table (union-of-seen Recall@1 first, Holm-adjusted tests)
#    and its figures; on CUB with the ablation rows (the ablation store merged in: its
#    finetune, fecd and dkd cells are the test matrix's own, same config hash)
CUB=(results/thesis-cub-subset)
[ -d results/thesis-cub-subset-ablations ] && CUB+=(results/thesis-cub-subset-ablations)
LIFELONG=(results/thesis-lifelong)
for stream in cub lifelong; do
    if [ "$stream" = cub ]; then stores=("${CUB[@]}"); else stores=("${LIFELONG[@]}"); fi
    if [ -d "${stores[0]}" ]; then
        rm -rf "docs/results/$stream"
        "$LRBENCH" report "${stores[@]}" --out "docs/results/$stream" --format md,csv,png
    else
        echo "regenerate: ${stores[0]} not run yet, docs/results/$stream left as it is" >&2
    fi
done

# 3. the thesis's claims, tested on every store at once (one Holm family)
if [ -d "${CUB[0]}" ] && [ -d "${LIFELONG[0]}" ] && [ ${#CUB[@]} = 2 ]; then
    rm -rf docs/results/claims && mkdir -p docs/results/claims
    "$LRBENCH" report "${CUB[@]}" "${LIFELONG[@]}" \
        --claims docs/examples/claims.yaml --out docs/results/claims --format md,csv \
        > docs/results/claims/verdicts.txt
    cat docs/results/claims/verdicts.txt
else
    echo "regenerate: the claims need the CUB, ablation and lifelong stores;" \
        "docs/results/claims left as it is" >&2
fi
