#!/bin/sh
# bench/compare.sh: asyncq against the ideal ZeroMQ relay and Redis Streams,
# on this machine, so the README's performance claims can be checked.
#
# Runs asyncq-bench, asyncq-relay-bench (per-item messages, and 64 items per
# message) and asyncq-redis-bench at 1x1, 2x2 and 4x4 producers x consumers
# with credit 256, then again with credit 1 (one item at a time, each
# waiting for its ack's round trip), RUNS times each, and prints one table
# of medians with the ratios. Installs nothing. A benchmark: it asserts
# nothing; a run that fails shows as FAIL and its output stays in the log.
#
#   bench/compare.sh                    # about 3 minutes on 2 cores
#   ITEMS=200000 RUNS=1 bench/compare.sh
#
# Settings (environment): BIN (the programs; default build-rel/bin, then
# build/bin), ITEMS (1000000), SIZE (64), CREDIT (256), ONE_ITEMS (items of
# the credit-1 runs, 10000), RUNS (3), LOG (where every run's output goes).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BIN:-}" ]; then
    BIN=$ROOT/build-rel/bin
    [ -x "$BIN/asyncq-bench" ] || BIN=$ROOT/build/bin
fi
ITEMS=${ITEMS:-1000000}
SIZE=${SIZE:-64}
CREDIT=${CREDIT:-256}
ONE_ITEMS=${ONE_ITEMS:-10000}
RUNS=${RUNS:-3}
LOG=${LOG:-${TMPDIR:-/tmp}/asyncq-compare.log}

for program in asyncq-bench asyncq-relay-bench asyncq-broker; do
    if [ ! -x "$BIN/$program" ]; then
        echo "compare.sh: $BIN/$program missing; build first (Release):" >&2
        echo "  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j2" >&2
        exit 2
    fi
done
REDIS=yes
if ! command -v redis-server >/dev/null 2>&1; then
    echo "compare.sh: no redis-server: apt-get install -y redis-server (Redis columns left out)" >&2
    REDIS=no
elif [ ! -x "$BIN/asyncq-redis-bench" ]; then
    echo "compare.sh: asyncq-redis-bench not built: apt-get install -y libhiredis-dev," \
        "then run cmake again and rebuild (Redis columns left out)" >&2
    REDIS=no
fi
if [ -r /sys/fs/cgroup/cpu.max ]; then
    QUOTA=$(cat /sys/fs/cgroup/cpu.max)
else
    QUOTA=unknown
fi
: >"$LOG"

# "MEDIAN MIN MAX" items/s of RUNS runs of a command, or FAIL. Every run's
# output goes to the log, under the command line.
median() {
    values=""
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        echo "\$ $*" >>"$LOG"
        out=$("$@" 2>>"$LOG" || true)
        echo "$out" >>"$LOG"
        value=$(echo "$out" | awk '$1 == "throughput" { print int($2); exit }')
        [ -n "$value" ] || { echo FAIL; return; }
        values="$values $value"
    done
    echo "$values" | tr ' ' '\n' | sed '/^$/d' | sort -n \
        | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# A cell: the median in thousands, and the range when there are several runs.
cell() {
    echo "$1" | awk -v runs="$RUNS" '
        function k(x) { return x >= 100000 ? sprintf("%.0fk", x / 1000) : sprintf("%.1fk", x / 1000) }
        $1 == "FAIL" || $1 == "-" { print $1; next }
        { printf "%s", k($1); if (runs > 1) printf " (%s-%s)", k($2), k($3); print "" }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'
}

row() { # P C CREDIT ITEMS
    p=$1 c=$2 credit=$3 items=$4
    common="-p $p -c $c -n $items -s $SIZE --credit $credit"
    asyncq=$(median "$BIN/asyncq-bench" $common)
    relay=$(median "$BIN/asyncq-relay-bench" $common)
    if [ "$credit" -gt 1 ]; then
        relay64=$(median "$BIN/asyncq-relay-bench" $common --batch 64)
    else
        relay64=-
    fi
    if [ "$REDIS" = yes ]; then
        redis=$(median "$BIN/asyncq-redis-bench" $common)
    else
        redis=-
    fi
    printf '| %d x %d | %6s | %9s | %19s | %19s | %19s | %19s | %12s | %12s | %14s |\n' \
        "$p" "$c" "$credit" "$items" "$(cell "$asyncq")" "$(cell "$relay")" "$(cell "$relay64")" \
        "$(cell "$redis")" "$(ratio "${asyncq%% *}" "${redis%% *}")" \
        "$(ratio "${asyncq%% *}" "${relay%% *}")" "$(ratio "${asyncq%% *}" "${relay64%% *}")"
}

echo "asyncq compared, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "$(nproc) cores online (cgroup cpu.max: $QUOTA), $(uname -sr)"
echo "libzmq $(pkg-config --modversion libzmq 2>/dev/null || echo '?');" \
    "$( [ "$REDIS" = yes ] && redis-server --version | awk '{ print "Redis", $3 }' | sed 's/v=//' || echo 'no Redis')"
echo "items/s, median of $RUNS runs (range), items of $SIZE bytes, loopback TCP; from the first put"
echo "to the last ack known (asyncq: JOINED; relay: last ack at the relay; Redis: last XACK reply)"
echo
echo "| P x C | credit |     items |              asyncq |               relay |        relay 64/msg |               Redis | asyncq/Redis | asyncq/relay | asyncq/relay64 |"
echo "|-------|-------:|----------:|--------------------:|--------------------:|--------------------:|--------------------:|-------------:|-------------:|---------------:|"
for n in 1 2 4; do
    row "$n" "$n" "$CREDIT" "$ITEMS"
done
for n in 1 2 4; do
    row "$n" "$n" 1 "$ONE_ITEMS"
done
echo
echo "asyncq: asyncq-bench (client library: PUTS batches, ITEMS batches, acks $CREDIT at most per"
echo "  message); relay: asyncq-relay-bench, libzmq only, one item per message, acks batched;"
echo "  relay, 64/msg: the same with 64 items per message both ways (--batch 64); Redis:"
echo "  asyncq-redis-bench, pipelined XADD (1024), XREADGROUP COUNT credit, one XACK per batch"
echo "  (with the next XREADGROUP), XTRIM MINID ~ every 50 ms for what is acked,"
echo "  no persistence. Every run's output: $LOG"
