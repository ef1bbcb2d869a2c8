#!/usr/bin/env bash
# Every real-data run behind docs/results, in the order the data flows, each resuming from
# its store; then the regenerated files. It starts by restoring the committed stores
# (docs/results/stores.sh), so on a new machine it continues from the cells a previous one
# finished, and saves each store into docs/results/stores/ every 20 minutes and when its
# run ends: commit docs/results/stores/ before that machine goes away.
#   LRBENCH_DATA=../shared/data nice bash docs/results/pipeline.sh [--jobs N]
# Steps (each skipped where its store is complete; the first tuning's choice is committed
# in docs/results/tuning/tuned.yaml and is not rerun):
#   0. where the stores hold cells, a check that this machine reproduces one of them to
#      the last bit (its CPU rounds as the one that wrote them did)
#   1. the second tuning (configs/thesis-cub-subset-val-more.yaml) -> tuned.yaml
#   2. its tuned.yaml copied to docs/results/tuning-more/ and every test matrix rewritten
#      with both tunings' choices (configs_from_tuning.py; the earlier cells keep their
#      config hashes, so a store already holding them only adds the new strategies)
#   3. the test matrices: CUB, its ablations (reusing the CUB store's finetune, fecd and
#      dkd cells), the lifelong stream, its two more orders, and the confirmatory run of
#      the ablations' one lead on new seeds
#   4. bash docs/results/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=2
usage() {
    echo "usage: bash docs/results/pipeline.sh [--jobs N]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
    --jobs) [ $# -ge 2 ] || usage; JOBS=$2; shift 2 ;;
    *) usage ;;
    esac
done
LRBENCH=${LRBENCH:-.venv/bin/lrbench}
PY=${PY:-.venv/bin/python}
if [ -z "${LRBENCH_DATA:-}" ]; then
    echo "pipeline: set LRBENCH_DATA to the folder of the real datasets (../shared/data)" >&2
    exit 2
fi
export LRBENCH_DATA
STORES=(thesis-cub-subset-val-more-tune thesis-cub-subset thesis-cub-subset-ablations
        thesis-lifelong thesis-lifelong-orders thesis-cub-subset-confirm)
stamp() { echo "pipeline: $* ($(date -u +%FT%TZ))"; }
# step NAME COMMAND...: run COMMAND into results/NAME, saving the store every 20 minutes
# while it runs and once more when it ends, however it ends (a cell that failed makes
# lrbench exit 1, and the finished ones must be kept all the same); then stop on failure
step() {
    local name=$1 rc=0 saver
    shift
    # (its own output away from the pipeline's, and its sleep ended with it: nothing of
    # it outlives the step)
    (while sleep 1200; do
        if [ -f "results/$name/matrix.yaml" ]; then
            bash docs/results/stores.sh save "$name" || true
        fi
    done) > /dev/null 2>&1 &
    saver=$!
    "$@" || rc=$?
    pkill -P "$saver" 2> /dev/null || true
    kill "$saver" 2> /dev/null || true
    wait "$saver" 2> /dev/null || true
    bash docs/results/stores.sh save "$name"
    if [ $rc != 0 ]; then
        echo "pipeline: $name: the command ended with exit code $rc (its finished cells are" \
            "saved); fix the cause and run the pipeline again" >&2
        exit $rc
    fi
}

if compgen -G "docs/results/stores/*/matrix.yaml" > /dev/null; then
    bash docs/results/stores.sh restore
fi

# This machine against the stores, before any cell is added to one: a cell of the CUB
# store recomputed here must give its stored values to the last bit. PyTorch, oneDNN and
# MKL round by the kind of CPU (docs/run.md, "The same numbers need the same kind of
# CPU"): on another kind the cells added now would not be comparable with those there.
CANARY=cub-subset-50+5x10__first_session__seed0
if [ -f "results/thesis-cub-subset/cells/$CANARY/result.json" ]; then
    stamp "0. this machine against the stores: $CANARY recomputed"
    said=$(mktemp)
    rc=0
    "$LRBENCH" run configs/thesis-cub-subset.yaml --out results/thesis-cub-subset \
        --check-determinism --set 'seeds=[0]' --set 'strategies={first_session: {}}' \
        > "$said" || rc=$?
    cat "$said"
    if [ $rc = 1 ]; then
        echo "pipeline: this machine does not reproduce the stores' values (above): run the" \
            "pipeline on the CPU that wrote them, or move results/ and docs/results/stores/" \
            "aside to compute every store anew here" >&2
    elif [ $rc != 0 ]; then
        echo "pipeline: the machine check itself failed (exit $rc, above): fix that and run" \
            "the pipeline again" >&2
    elif ! grep -q ": against results/thesis-cub-subset's result" "$said"; then
        echo "pipeline: the machine check found no stored $CANARY to compare with (above):" \
            "restore the committed stores (bash docs/results/stores.sh restore)" >&2
        rc=1
    fi
    rm -f "$said"
    [ $rc = 0 ] || exit $rc
fi

stamp "1. the second tuning"
step thesis-cub-subset-val-more-tune "$LRBENCH" tune configs/thesis-cub-subset-val-more.yaml \
    --trials 8 --extend-edges 4 --extend-rounds 2 --test-seeds 0,1,2,3,4 --jobs "$JOBS" \
    --out results/thesis-cub-subset-val-more-tune

stamp "2. the test matrices from both tunings"
mkdir -p docs/results/tuning-more
cp results/thesis-cub-subset-val-more-tune/tuned.yaml docs/results/tuning-more/tuned.yaml
"$PY" docs/results/configs_from_tuning.py

stamp "3. the test matrices"
step thesis-cub-subset "$LRBENCH" run configs/thesis-cub-subset.yaml --jobs "$JOBS" --resume
# the ablation matrix's finetune, fecd and dkd cells are the test matrix's own (same
# config hash): their results copied, not run again, where the ablation store has none
shopt -s nullglob
for d in results/thesis-cub-subset/cells/*__{finetune,fecd,dkd}__seed*; do
    to=results/thesis-cub-subset-ablations/cells/$(basename "$d")
    if [ -f "$d/result.json" ] && [ ! -f "$to/result.json" ]; then
        mkdir -p "$to"
        cp "$d/result.json" "$to/"
        if [ -f "$d/log.txt" ]; then cp "$d/log.txt" "$to/"; fi
    fi
done
shopt -u nullglob
step thesis-cub-subset-ablations "$LRBENCH" run configs/thesis-cub-subset-ablations.yaml \
    --jobs "$JOBS" --resume
step thesis-lifelong "$LRBENCH" run configs/thesis-lifelong.yaml --jobs "$JOBS" --resume
step thesis-lifelong-orders "$LRBENCH" run configs/thesis-lifelong-orders.yaml \
    --jobs "$JOBS" --resume
# the confirmatory run of the dkd-bn-frozen lead, on seeds no other cell uses
step thesis-cub-subset-confirm "$LRBENCH" run configs/thesis-cub-subset-confirm.yaml \
    --jobs "$JOBS" --resume

stamp "4. every generated file of docs/results"
bash docs/results/regenerate.sh
stamp "done: commit docs/results (stores/ included) and configs/"
for s in "${STORES[@]}"; do
    [ -d "docs/results/stores/$s" ] || echo "pipeline: $s was not saved" >&2
done
