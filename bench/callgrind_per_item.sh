#!/usr/bin/env bash
# bench/callgrind_per_item.sh: the broker's instructions per item, old build
# against new, counted by valgrind --tool=callgrind (Ir, every thread of the
# broker process; not the clients). asyncq-bench runs its usual throughput
# workload (P x C, items of SIZE bytes, credit CREDIT; every item put,
# delivered and acked, then JOIN) against a broker under callgrind, started
# through a wrapper named asyncq-broker in ASYNCQ_BIN_DIR; the bench's
# SIGTERM at the end stops it gracefully and callgrind writes its counts.
# Each build runs SMALL and LARGE items; (Ir(LARGE) - Ir(SMALL)) / (LARGE -
# SMALL) leaves the start-up and stop out. Modes: in memory, and with a
# fresh --data-dir and --fsync always. Runs alternate between the builds.
# The counts are nearly deterministic: what varies is how the broker's passes
# batch the items, which follows timing; ROUNDS > 1 shows that spread.
#
#   bench/callgrind_per_item.sh OLD_BUILD NEW_BUILD [ROUNDS]   # ROUNDS: 3; ~1 min
#   SMALL=10000 LARGE=30000 SHAPE=2x2 bench/callgrind_per_item.sh /work/base/build build-rel
#
# OLD_BUILD, NEW_BUILD: build directories (bin/ holds asyncq-bench and
# asyncq-broker; Release, with symbols or not) or bin directories.
# Settings (environment): SMALL (20000), LARGE (120000), SHAPE (1x1), SIZE (64),
# CREDIT (256), MODES ("memory always"), VALGRIND (valgrind), LOG (every
# run's output; default a file next to the data dirs, kept), TMPDIR,
# NEW_ARGS (more asyncq-bench arguments for the new build only: the cost
# of a feature, e.g. NEW_ARGS="--priorities 4" with the same build twice).
set -euo pipefail

usage="usage: callgrind_per_item.sh OLD_BUILD NEW_BUILD [ROUNDS]"
bindir() {
    local d=${1:?$usage}
    [ -x "$d/bin/asyncq-bench" ] && d=$d/bin
    [ -x "$d/asyncq-bench" ] && [ -x "$d/asyncq-broker" ] \
        || { echo "callgrind_per_item.sh: no asyncq-bench and asyncq-broker in $1(/bin)" >&2; exit 2; }
    (cd "$d" && pwd)
}
old=$(bindir "${1:-}") new=$(bindir "${2:-}")
rounds=${3:-3}
SMALL=${SMALL:-20000} LARGE=${LARGE:-120000} SHAPE=${SHAPE:-1x1} SIZE=${SIZE:-64}
CREDIT=${CREDIT:-256} MODES=${MODES:-memory always} VALGRIND=${VALGRIND:-valgrind}
command -v "$VALGRIND" >/dev/null || { echo "callgrind_per_item.sh: no valgrind (apt-get install -y valgrind)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/asyncq-callgrind-XXXXXX")
LOG=${LOG:-$work.log}

set -m # each run a process group of its own, killed if still there at exit
job=
trap '[ -z "$job" ] || kill -KILL -- "-$job" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

# The wrapper asyncq-broker of each build: the real one under callgrind,
# counts to $CG_OUT.
for which in old new; do
    bin=$old
    [ "$which" = old ] || bin=$new
    mkdir "$work/$which"
    printf '#!/bin/sh\nexec %s -q --tool=callgrind --callgrind-out-file="$CG_OUT" %s/asyncq-broker "$@"\n' \
        "$(command -v "$VALGRIND")" "$bin" >"$work/$which/asyncq-broker"
    chmod +x "$work/$which/asyncq-broker"
done

# One run: once WHICH MODE ITEMS sets ir to the broker's instructions, or FAIL.
once() {
    local which=$1 mode=$2 items=$3 bin=$old
    [ "$which" = old ] || bin=$new
    local args=(-p "${SHAPE%x*}" -c "${SHAPE#*x}" -n "$items" -s "$SIZE" --credit "$CREDIT")
    # shellcheck disable=SC2206 # NEW_ARGS is words on purpose
    [ "$which" = old ] || args+=(${NEW_ARGS:-})
    [ "$mode" = memory ] || args+=(--broker-arg --data-dir --broker-arg '{tmpdir}'
                                   --broker-arg --fsync --broker-arg "$mode")
    rm -f "$work/cg.out"
    echo "\$ $bin/asyncq-bench ${args[*]}   (broker under callgrind)" >>"$LOG"
    TMPDIR=$work ASYNCQ_BIN_DIR=$work/$which CG_OUT=$work/cg.out \
        "$bin/asyncq-bench" "${args[@]}" >>"$LOG" 2>&1 </dev/null &
    job=$!
    wait "$job" || true
    job=
    rm -rf "$work"/asyncq-bench-data-*
    ir=$(awk '$1 == "summary:" { print $2; exit }' "$work/cg.out" 2>/dev/null || true)
    echo "broker Ir: ${ir:-none}" >>"$LOG"
    ir=${ir:-FAIL}
}

declare -A per
echo "callgrind_per_item.sh $(date -u +%Y-%m-%dT%H:%MZ); $("$VALGRIND" --version)"
echo "old: $old"
echo "new: $new"
echo "asyncq-bench $SHAPE, items of $SIZE bytes, credit $CREDIT; (Ir($LARGE) - Ir($SMALL))" \
    "/ $((LARGE - SMALL)), $rounds rounds; log: $LOG"
: >"$LOG"
for round in $(seq "$rounds"); do
    order="old new"
    [ $((round % 2)) -eq 1 ] || order="new old"
    for mode in $MODES; do
        line="round $round, $mode:"
        for which in $order; do
            once "$which" "$mode" "$SMALL"; small=$ir
            once "$which" "$mode" "$LARGE"; large=$ir
            value=$(awk -v a="$small" -v b="$large" -v n=$((LARGE - SMALL)) \
                'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) printf "%.1f", (b - a) / n; else print "FAIL" }')
            per[$which,$mode]="${per[$which,$mode]:-} $value"
            line="$line $which $value (Ir $small, $large)"
        done
        echo "$line"
    done
done

summary() { # "median (min-max)", FAIL if one failed
    case " $* " in *" FAIL "*) echo FAIL; return ;; esac
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f (%.1f-%.1f)\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
echo
echo "broker instructions per item, median of $rounds (range); new/old of the medians"
echo
printf '| %-8s | %-24s | %-24s | %7s |\n' mode old new new/old
echo "|----------|-------------------------:|-------------------------:|--------:|"
for mode in $MODES; do
    a=$(summary ${per[old,$mode]}) b=$(summary ${per[new,$mode]})
    r=$(awk -v a="${a%% *}" -v b="${b%% *}" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", b / a; else print "-" }')
    printf '| %-8s | %24s | %24s | %7s |\n' "$mode" "$a" "$b" "$r"
done
echo
echo "memory: no --data-dir; always: --data-dir (fresh per run) --fsync always."
