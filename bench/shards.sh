#!/bin/sh
# Shards side by side, in one run: items/s of one service of K shards
# (asyncq-broker --shards K) for K = 1, 2, 4 ... up to the cores this machine
# has, with the same producers and consumers addressing all of them, each
# item put, delivered, acked and the join answered (asyncq-bench).
# The goal (issue: shards): K shards reach at least 0.8 x K x one shard.
# Runs unchanged on a bigger machine; a 2-core machine shows 2 against 1,
# its clients sharing the same two cores.
#
#   bench/shards.sh [BUILD_DIR]     (env: ITEMS=2M SIZE=64 CLIENTS=<cores/2>
#                                    RUNS=3 SHARDS="1 2 4")
set -eu
build=${1:-build}
bench="$build/bin/asyncq-bench"
[ -x "$bench" ] || { echo "bench/shards.sh: no $bench: build first" >&2; exit 2; }
cores=$(nproc)
items=${ITEMS:-2M}
size=${SIZE:-64}
runs=${RUNS:-3}
clients=${CLIENTS:-$(( cores / 2 > 0 ? cores / 2 : 1 ))}
if [ -z "${SHARDS:-}" ]; then
    SHARDS=1
    k=2
    while [ "$k" -le "$cores" ]; do SHARDS="$SHARDS $k"; k=$((k * 2)); done
fi
echo "asyncq shards on $cores cores: $items items of $size B, $clients producers and" \
     "$clients consumers, best of $runs runs each"
printf '%-7s %14s %14s %8s\n' shards items/s "K x one" ratio
one=""
for k in $SHARDS; do
    best=0
    run=0
    while [ "$run" -lt "$runs" ]; do
        rate=$("$bench" --shards "$k" -p "$clients" -c "$clients" -n "$items" -s "$size" \
               2>/dev/null | awk '/throughput .* items\/s/ { print $2 }')
        [ -n "$rate" ] || { echo "bench/shards.sh: the run of $k shards failed" >&2; exit 1; }
        [ "$rate" -gt "$best" ] && best=$rate
        run=$((run + 1))
    done
    [ -z "$one" ] && one=$best
    ideal=$((one * k))
    printf '%-7s %14s %14s %8s\n' "$k" "$best" "$ideal" \
           "$(awk -v a="$best" -v b="$ideal" 'BEGIN { printf "%.2f", a / b }')"
done
