#!/usr/bin/env bash
# Rebuild every generated file of docs/results from the results stores, so that no table,
# figure or claim verdict here is typed by hand. The runs that fill the stores are in
# docs/results/README.md ("Reproduce"); they resume, so this can be run after any of them:
# a part whose stores are missing or not yet complete (a cell of its config unfinished)
# is left as it is, with a note. Each folder is written
# to a temporary folder first and replaces the committed one only when its report worked.
#   bash docs/results/regenerate.sh            # from anywhere in the repository
set -euo pipefail
cd "$(dirname "$0")/../.."
LRBENCH=${LRBENCH:-.venv/bin/lrbench}
# one string-hash order: scikit-posthocs draws the critical-difference diagram's bars in
# set order, so without it the same store gave a PNG with other bytes on every run
export PYTHONHASHSEED=0
TUNE=results/thesis-cub-subset-val-tune
TUNE_MORE=results/thesis-cub-subset-val-more-tune
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# the stores committed under docs/results/stores/ (stores.sh save) fill in what results/
# lacks, so a machine that ran nothing regenerates the same files; a live store's own
# files are never replaced
if compgen -G "docs/results/stores/*/matrix.yaml" > /dev/null; then
    bash docs/results/stores.sh restore >&2
fi

# complete NAME: whether results/NAME holds a finished cell for every cell of
# configs/NAME.yaml (a store still filling would give a partial table: it is left out)
complete() {
    if [ ! -d "results/$1" ]; then
        echo "regenerate: results/$1 not run yet: left out" >&2
        return 1
    fi
    .venv/bin/python - "configs/$1.yaml" "results/$1" <<'PY' || return 1
import sys
from pathlib import Path

from benchmarks.config import expand_cells, load_config
from benchmarks.run.store import cell_dir, finished

cells = expand_cells(load_config(Path(sys.argv[1])))
done = sum(finished(cell_dir(Path(sys.argv[2]), c), c) for c in cells)
if done < len(cells):
    print(f"regenerate: {sys.argv[2]} has {done} of {len(cells)} cells finished: left out "
          "until it is complete", file=sys.stderr)
    sys.exit(1)
PY
}
CUB=() LIFELONG=()
complete thesis-cub-subset && CUB+=(results/thesis-cub-subset)
[ ${#CUB[@]} = 1 ] && complete thesis-cub-subset-ablations \
    && CUB+=(results/thesis-cub-subset-ablations)
complete thesis-lifelong && LIFELONG+=(results/thesis-lifelong)
[ ${#LIFELONG[@]} = 1 ] && complete thesis-lifelong-orders \
    && LIFELONG+=(results/thesis-lifelong-orders)

# report DEST ARGS...: lrbench report ARGS --out <temporary>, then the result replaces DEST
report() {
    local dest=$1
    shift
    "$LRBENCH" report "$@" --out "$TMP/out"
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    mv "$TMP/out" "$dest"
}

# 0. the protocol screen (validation split): its table from the screen's stores
if [ -d results/protocol-choice ]; then
    .venv/bin/python docs/results/protocol-choice/table.py results/protocol-choice > /dev/null
else
    echo "regenerate: results/protocol-choice not run yet, the screen's table left as it is" >&2
fi

# 1. the validation tables that chose every strategy's hyperparameters, the choice, and
#    the tuning store's own report (every trial's metrics, what each cell cost)
if [ -f "$TUNE/tuned.yaml" ]; then  # a tuning under way has cells but no tuned.yaml yet
    mkdir -p docs/results/tuning
    cp "$TUNE/tuning.csv" "$TUNE/tuning.md" "$TUNE/tuned.yaml" docs/results/tuning/
    # CSV only: every trial's summary, per-cell values and cost; figures of some 70 trial
    # labels in one panel cannot be read (tuning.md lists every trial and the choice)
    report docs/results/tuning/report "$TUNE" --format csv
else
    echo "regenerate: $TUNE not run yet, docs/results/tuning left as it is" >&2
fi
# the second tuning (bct, drift compensation, rehearsal, statistics-only baselines)
if [ -f "$TUNE_MORE/tuned.yaml" ]; then
    mkdir -p docs/results/tuning-more
    cp "$TUNE_MORE/tuning.csv" "$TUNE_MORE/tuning.md" "$TUNE_MORE/tuned.yaml" \
        docs/results/tuning-more/
    report docs/results/tuning-more/report "$TUNE_MORE" --format csv
else
    echo "regenerate: $TUNE_MORE not run yet, docs/results/tuning-more left as it is" >&2
fi

# 2. per stream: the tuned test table (union-of-seen Recall@1 first, Holm-adjusted tests),
#    its figures and costs; on CUB also the ablation table, each variant against the
#    strategy it varies (the ablation store merged in: its finetune, fecd and dkd cells are
#    the test matrix's own, same config hash), in cub/ablations/
if [ ${#CUB[@]} -ge 1 ]; then
    report docs/results/cub "${CUB[@]}" --format md,csv,png
else
    echo "regenerate: results/thesis-cub-subset not complete, docs/results/cub left as it is" >&2
fi
if [ ${#LIFELONG[@]} -ge 1 ]; then
    report docs/results/lifelong "${LIFELONG[@]}" --format md,csv,png
else
    echo "regenerate: results/thesis-lifelong not complete, docs/results/lifelong left as" \
        "it is" >&2
fi

# 3. the claims (every method against the untrained model, the thesis's), tested on every
#    store at once, each family Holm-adjusted on its own: claims.md, claims.csv and the
#    verdicts as printed
#    (with the second tuning's claims, docs/examples/claims-second-tuning.yaml, joined in
#    once the test matrices run its strategies: complete stores then hold them)
CLAIMS=docs/examples/claims.yaml
if grep -q "^  bct:" configs/thesis-cub-subset.yaml; then
    .venv/bin/python - "$CLAIMS" docs/examples/claims-second-tuning.yaml "$TMP/claims.yaml" \
        <<'PY'
import sys

import yaml

first, second = (yaml.safe_load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
alpha = first.get("alpha", 0.05)
assert second.get("alpha", 0.05) == alpha, "the two claims files must share alpha"
with open(sys.argv[3], "w", encoding="utf-8") as out:
    yaml.safe_dump({"alpha": alpha, "claims": first["claims"] + second["claims"]}, out,
                   sort_keys=False)
PY
    CLAIMS=$TMP/claims.yaml
fi
if [ ${#CUB[@]} = 2 ] && [ ${#LIFELONG[@]} = 2 ]; then
    "$LRBENCH" report "${CUB[@]}" "${LIFELONG[@]}" --claims "$CLAIMS" \
        --format csv --out "$TMP/claims" | sed "s#$TMP/claims#docs/results/claims#" \
        > "$TMP/verdicts.txt"
    rm -rf docs/results/claims && mkdir -p docs/results/claims
    mv "$TMP/claims/claims.md" "$TMP/claims/claims.csv" "$TMP/verdicts.txt" \
        docs/results/claims/
    cat docs/results/claims/verdicts.txt
else
    echo "regenerate: the claims need the CUB, ablation, lifelong and orders stores" \
        "complete; docs/results/claims left as it is" >&2
fi

# 4. the confirmatory run of the ablations' one lead (dkd-bn-frozen above the untrained
#    model), its claim declared before its seeds ran, tested on that store alone: the
#    seeds that found the lead do not test it
if complete thesis-cub-subset-confirm; then
    "$LRBENCH" report results/thesis-cub-subset-confirm --claims docs/examples/claims-confirm.yaml \
        --format csv --out "$TMP/confirm" | sed "s#$TMP/confirm#docs/results/confirm#" \
        > "$TMP/confirm-verdicts.txt"
    mv "$TMP/confirm-verdicts.txt" "$TMP/confirm/verdicts.txt"
    rm -rf docs/results/confirm
    mv "$TMP/confirm" docs/results/confirm
    cat docs/results/confirm/verdicts.txt
else
    echo "regenerate: results/thesis-cub-subset-confirm not complete, docs/results/confirm" \
        "left as it is" >&2
fi
