#!/usr/bin/env bash
# The real-data results stores, kept in git: their small files (matrix.yaml, cells.json,
# skipped.json and each cell's result.json and log.txt; no model checkpoint, feature cache,
# shared first experience or tidy table, which a run makes again) under
# docs/results/stores/NAME.
# Every table of docs/results can then be regenerated on a machine that ran nothing, and a
# run cut off on one machine resumes on another from the cells it had finished (a cell is
# finished when its result.json says so for its config hash).
#   bash docs/results/stores.sh save [--force] NAME...  # results/NAME -> docs/results/stores/NAME
#   bash docs/results/stores.sh restore [NAME...]       # back into results/NAME (all without NAME)
# restore never replaces a file results/NAME already has; save replaces the committed copy,
# and refuses (without --force) a live store with fewer cells than that copy: a store run
# on a machine where it was not restored first would otherwise drop committed cells.
# A tuning store keeps its tuning.csv, tuning.md and tuned.yaml too.
# RESULTS=DIR reads and writes DIR/NAME instead of results/NAME (a run in another checkout).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-results}
KEPT=(matrix.yaml cells.json skipped.json tuning.csv tuning.md tuned.yaml)
usage() {
    echo "usage: bash docs/results/stores.sh save [--force] NAME... | restore [NAME...]" >&2
    exit 2
}
cells() {  # the number of cell results under folder $1
    if [ -d "$1/cells" ]; then
        find "$1/cells" -mindepth 2 -maxdepth 2 -type f -name result.json | wc -l
    else
        echo 0
    fi
}
[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
save)
    force=0
    if [ "${1:-}" = --force ]; then
        force=1
        shift
    fi
    [ $# -ge 1 ] || usage
    mkdir -p docs/results/stores
    for name in "$@"; do
        src=$RESULTS/$name
        dst=docs/results/stores/$name
        [ -f "$src/matrix.yaml" ] || { echo "stores.sh: $src is not a results store" \
            "(no matrix.yaml); run it first" >&2; exit 2; }
        if [ $force = 0 ] && [ -d "$dst" ] && [ "$(cells "$src")" -lt "$(cells "$dst")" ]; then
            echo "stores.sh: $src holds $(cells "$src") cells, the committed $dst" \
                "$(cells "$dst"): restore it first (stores.sh restore $name), or save" \
                "--force to drop the others" >&2
            exit 2
        fi
        tmp=$(mktemp -d docs/results/stores/.save.XXXXXX)
        trap 'rm -rf "$tmp"' EXIT
        chmod 755 "$tmp"
        for f in "${KEPT[@]}"; do
            if [ -f "$src/$f" ]; then cp -p "$src/$f" "$tmp/"; fi
        done
        if [ -d "$src/cells" ]; then
            (cd "$src" && find cells -mindepth 2 -maxdepth 2 -type f \
                \( -name result.json -o -name log.txt \) -print0) |
                while IFS= read -r -d '' f; do
                    mkdir -p "$tmp/$(dirname "$f")"
                    cp -p "$src/$f" "$tmp/$f"
                done
        fi
        rm -rf "$dst"
        mv "$tmp" "$dst"
        trap - EXIT
        echo "saved $(cells "$dst") cells of $src to $dst"
    done
    ;;
restore)
    if [ $# = 0 ]; then
        for d in docs/results/stores/*/; do
            [ -f "$d/matrix.yaml" ] && set -- "$@" "$(basename "$d")"
        done
    fi
    for name in "$@"; do
        src=docs/results/stores/$name
        dst=$RESULTS/$name
        [ -f "$src/matrix.yaml" ] || { echo "stores.sh: no committed store $src" >&2; exit 2; }
        # file by file, never over one the live store has (its folders are left as they are)
        copied=$( (cd "$src" && find . -type f -print0) | {
            n=0
            while IFS= read -r -d '' f; do
                if [ ! -e "$dst/$f" ]; then
                    mkdir -p "$dst/$(dirname "$f")"
                    cp "$src/$f" "$dst/$f"
                    case $f in */result.json) n=$((n + 1)) ;; esac
                fi
            done
            echo $n
        })
        echo "restored $copied of $(cells "$src") committed cells into $dst (the others" \
            "were there)"
    done
    ;;
*) usage ;;
esac
