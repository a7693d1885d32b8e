#!/usr/bin/env bash
# bench/before_after.sh: two builds of asyncq (before and after a change)
# compared on compare.sh's asyncq throughput runs (asyncq-bench, items of
# SIZE bytes, credit CREDIT), in memory and with --data-dir (a fresh one per
# run, removed after it) and --fsync always, interleaved in one run: each
# round runs every (mode, shape) with both builds, old first in odd rounds
# and new first in even ones, so a slow spell of the machine falls on both.
# Prints every run as it goes, then the median items/s (range) of each and
# new/old. A benchmark: asserts nothing; a failed run shows as FAIL.
#
#   bench/before_after.sh OLD_BUILD NEW_BUILD [ROUNDS]   # ROUNDS: 3; ~2 min on 2 cores
#   ITEMS=200000 SHAPES="1x1" bench/before_after.sh /work/base/build build-rel 5
#
# OLD_BUILD, NEW_BUILD: Release build directories (their bin/ holds
# asyncq-bench and asyncq-broker), or bin directories themselves.
# Settings (environment): ITEMS (1000000), SHAPES (producers x consumers,
# "1x1 2x2 4x4"), SIZE (64), CREDIT (256), MODES ("memory always"), LOG (every
# run's output; default a file next to the data dirs, kept), TMPDIR (the
# data directories go there: on the disk whose fsync is measured, not a tmpfs).
set -euo pipefail

usage="usage: before_after.sh OLD_BUILD NEW_BUILD [ROUNDS]"
bindir() { # a build dir or its bin/ -> the bin dir
    local d=${1:?$usage}
    [ -x "$d/bin/asyncq-bench" ] && d=$d/bin
    [ -x "$d/asyncq-bench" ] && [ -x "$d/asyncq-broker" ] \
        || { echo "before_after.sh: no asyncq-bench and asyncq-broker in $1(/bin)" >&2; exit 2; }
    (cd "$d" && pwd)
}
old=$(bindir "${1:-}") new=$(bindir "${2:-}")
rounds=${3:-3}
ITEMS=${ITEMS:-1000000} SHAPES=${SHAPES:-1x1 2x2 4x4} SIZE=${SIZE:-64} CREDIT=${CREDIT:-256}
MODES=${MODES:-memory always}
work=$(mktemp -d "${TMPDIR:-/tmp}/asyncq-before-after-XXXXXX")
LOG=${LOG:-$work.log}
[ "$(stat -f -c %T "$work")" != tmpfs ] \
    || echo "before_after.sh: $work is a tmpfs, where fsync costs nothing: set TMPDIR" >&2

# Each run is a job of its own process group (set -m): the bench, its
# broker and its forks. On any exit the group still running is killed and
# the data directories are removed.
set -m
job=
trap '[ -z "$job" ] || kill -KILL -- "-$job" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

# One run: once BIN MODE PxC sets value to its items/s, or FAIL (not in a
# $(...) subshell: the trap must see the job).
once() {
    local bin=$1 mode=$2 p=${3%x*} c=${3#*x}
    local args=(-p "$p" -c "$c" -n "$ITEMS" -s "$SIZE" --credit "$CREDIT")
    [ "$mode" = memory ] || args+=(--broker-arg --data-dir --broker-arg '{tmpdir}'
                                   --broker-arg --fsync --broker-arg "$mode")
    echo "\$ $bin/asyncq-bench ${args[*]}" >>"$LOG"
    TMPDIR=$work "$bin/asyncq-bench" "${args[@]}" >"$work/out" 2>>"$LOG" </dev/null &
    job=$!
    wait "$job" || true
    job=
    cat "$work/out" >>"$LOG"
    rm -rf "$work"/asyncq-bench-data-* # the bench removes it; a crash may not
    value=$(awk '$1 == "throughput" { print int($2); exit }' "$work/out")
    value=${value:-FAIL}
}

# "median min max" of a list of values, FAIL if one failed
summary() {
    case " $* " in *" FAIL "*) echo FAIL; return ;; esac
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'
}
cell() { # "median min max" -> "123.4k (120.0k-130.1k)"
    awk -v s="$1" 'BEGIN { n = split(s, v, " "); if (n < 3) { print s; exit }
        printf "%.1fk (%.1fk-%.1fk)\n", v[1] / 1000, v[2] / 1000, v[3] / 1000 }'
}

declare -A runs
echo "before_after.sh $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores, $(uname -sr)"
echo "old: $old"
echo "new: $new"
echo "asyncq-bench throughput: $ITEMS items of $SIZE bytes, credit $CREDIT, $rounds rounds;" \
    "data dirs in ${TMPDIR:-/tmp} ($(stat -f -c %T "$work")); log: $LOG"
: >"$LOG"
for round in $(seq "$rounds"); do
    order="old new"
    [ $((round % 2)) -eq 1 ] || order="new old"
    for mode in $MODES; do
        for shape in $SHAPES; do
            line="round $round, $mode $shape:"
            for which in $order; do
                bin=$old
                [ "$which" = old ] || bin=$new
                once "$bin" "$mode" "$shape"
                runs[$which,$mode,$shape]="${runs[$which,$mode,$shape]:-} $value"
                line="$line $which $value"
            done
            echo "$line items/s"
        done
    done
done

echo
echo "items/s, median of $rounds (range); new/old of the medians"
echo
printf '| %-8s | %-5s | %-29s | %-29s | %7s |\n' mode "P x C" old new new/old
echo "|----------|-------|------------------------------:|------------------------------:|--------:|"
for mode in $MODES; do
    for shape in $SHAPES; do
        a=$(summary ${runs[old,$mode,$shape]}) b=$(summary ${runs[new,$mode,$shape]})
        r=$(awk -v a="${a%% *}" -v b="${b%% *}" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", b / a; else print "-" }')
        printf '| %-8s | %-5s | %29s | %29s | %7s |\n' "$mode" "$shape" "$(cell "$a")" "$(cell "$b")" "$r"
    done
done
echo
echo "memory: no --data-dir; always: --data-dir (fresh, in $work) --fsync always."
