#!/usr/bin/env bash
# The real-data results stores, kept in git: their small files (matrix.yaml, cells.json,
# skipped.json and each cell's result.json and log.txt; no model checkpoint, feature cache,
# shared first experience or tidy table, which a run makes again) under
# docs/results/stores/NAME.
# Every table of docs/results can then be regenerated on a machine that ran nothing, and a
# run cut off on one machine resumes on another from the cells it had finished (a cell is
# finished when its result.json says so for its config hash).
#   bash docs/results/stores.sh save NAME...      # results/NAME -> docs/results/stores/NAME
#   bash docs/results/stores.sh restore [NAME...] # back into results/NAME (all without NAME)
# restore never replaces a file results/NAME already has; save replaces the committed copy.
# RESULTS=DIR reads and writes DIR/NAME instead of results/NAME (a run in another checkout).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-results}
KEPT=(matrix.yaml cells.json skipped.json)
usage() {
    echo "usage: bash docs/results/stores.sh save NAME... | restore [NAME...]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
save)
    [ $# -ge 1 ] || usage
    for name in "$@"; do
        src=$RESULTS/$name
        [ -f "$src/matrix.yaml" ] || { echo "stores.sh: $src is not a results store" \
            "(no matrix.yaml); run it first" >&2; exit 2; }
        mkdir -p docs/results/stores
        tmp=$(mktemp -d docs/results/stores/.save.XXXXXX)
        for f in "${KEPT[@]}"; do
            [ -f "$src/$f" ] && cp -p "$src/$f" "$tmp/"
        done
        (cd "$src" && find cells -mindepth 2 -maxdepth 2 -type f \
            \( -name result.json -o -name log.txt \) -print0) |
            while IFS= read -r -d '' f; do
                mkdir -p "$tmp/$(dirname "$f")"
                cp -p "$src/$f" "$tmp/$f"
            done
        rm -rf "docs/results/stores/$name"
        mv "$tmp" "docs/results/stores/$name"
        echo "saved $(find "docs/results/stores/$name" -name result.json | wc -l) cells of" \
            "$src to docs/results/stores/$name"
    done
    ;;
restore)
    if [ $# = 0 ]; then
        for d in docs/results/stores/*/; do
            [ -d "$d" ] && set -- "$@" "$(basename "$d")"
        done
    fi
    for name in "$@"; do
        src=docs/results/stores/$name
        [ -d "$src" ] || { echo "stores.sh: no committed store $src" >&2; exit 2; }
        mkdir -p "$RESULTS/$name"
        cp -R -n -p "$src/." "$RESULTS/$name/"
        echo "restored $(find "$src" -name result.json | wc -l) cells into $RESULTS/$name"
    done
    ;;
*) usage ;;
esac
