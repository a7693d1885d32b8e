#!/bin/sh
# bench/replicas.sh: a group of three replicas (asyncq-broker --peers, every
# put confirmed once a majority holds it, fsynced) side by side, in one run,
# with one durable broker (--fsync always), NATS JetStream (three servers, a
# work-queue stream of three replicas on file storage) and RabbitMQ (three
# nodes, a quorum queue of three members, persistent messages, publisher
# confirms). Then, for the group: put->ack latency at a fixed rate, and the
# failover as clients see it (the leader SIGKILLed, then SIGTERMed, mid-run
# at that rate: the longest time no consumer got an item; the run must
# still end with every item acked and an exact join).
#
# The replicas issue's goals: the group at least half of one durable
# broker, at least 5 x NATS JetStream R3, at least 10 x the RabbitMQ quorum
# queue. Every system runs on this host's cores, its nodes sharing them:
# the group does three brokers' work on the cores one broker has.
# Each figure is the median of RUNS runs; the systems of a row take turns,
# run by run. Installs nothing; a system whose server or bench program is
# missing shows as "-". A benchmark: it asserts nothing; a run that fails
# shows as FAIL and its output stays in the log.
#
#   bench/replicas.sh                  # about 6 minutes on 2 cores
#   RUNS=1 ITEMS=200000 bench/replicas.sh
#
# Settings (environment): BIN (default build-rel/bin, then build/bin),
# ITEMS (asyncq runs, 500000), PEER_ITEMS (NATS and RabbitMQ runs, 100000:
# they are slower), SIZE (64), CREDITS ("256 2048"), CLIENTS (producers, and
# consumers, 2), RATE (10000 items/s), RATE_ITEMS (50000), KILL_MS (when the
# leader is killed in the failover runs, 2000), RUNS (3), LOG, TMPDIR (on
# the disk whose fsync is measured, not a tmpfs).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BIN:-}" ]; then
    BIN=$ROOT/build-rel/bin
    [ -x "$BIN/asyncq-bench" ] || BIN=$ROOT/build/bin
fi
ITEMS=${ITEMS:-500000}
PEER_ITEMS=${PEER_ITEMS:-100000}
SIZE=${SIZE:-64}
CREDITS=${CREDITS:-256 2048}
CLIENTS=${CLIENTS:-2}
RATE=${RATE:-10000}
RATE_ITEMS=${RATE_ITEMS:-50000}
KILL_MS=${KILL_MS:-2000}
RUNS=${RUNS:-3}
LOG=${LOG:-${TMPDIR:-/tmp}/asyncq-replicas.log}
. "$ROOT/bench/lib.sh"

for program in asyncq-bench asyncq-broker; do
    if [ ! -x "$BIN/$program" ]; then
        echo "replicas.sh: $BIN/$program missing; build first (Release):" >&2
        echo "  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j2" >&2
        exit 2
    fi
done
NATS=yes
if ! command -v nats-server >/dev/null 2>&1 || [ ! -x "$BIN/asyncq-nats-bench" ]; then
    echo "replicas.sh: NATS left out: apt-get install -y nats-server libnats-dev, then run" \
        "cmake again and rebuild (asyncq-nats-bench)" >&2
    NATS=no
fi
RABBIT=yes
if { [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; } \
    || [ ! -x "$BIN/asyncq-rabbitmq-bench" ]; then
    echo "replicas.sh: RabbitMQ left out: apt-get install -y rabbitmq-server librabbitmq-dev" \
        "(systemctl disable --now rabbitmq-server), then run cmake again and rebuild" >&2
    RABBIT=no
fi
DATA=${TMPDIR:-/tmp}
DATA_FS=$(stat -f -c %T "$DATA" 2>/dev/null || echo '?')
[ "$DATA_FS" != tmpfs ] || echo "replicas.sh: $DATA is a tmpfs, where fsync costs nothing:" \
    "set TMPDIR to a directory on disk" >&2
: >"$LOG"
trap 'exit 130' INT TERM

# A whole run's output, logged under its command line.
output() {
    echo "\$ $*" >>"$LOG"
    out=$("$@" 2>>"$LOG" || true)
    echo "$out" >>"$LOG"
    echo "$out"
}

row() { # CREDIT
    credit=$1
    common="-p $CLIENTS -c $CLIENTS -s $SIZE --credit $credit"
    always="--broker-arg --data-dir --broker-arg {tmpdir} --broker-arg --fsync --broker-arg always"
    g="" o="" n="" r="" i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        g="$g $(once "$BIN/asyncq-bench" $common -n "$ITEMS" --replicas 3)"
        o="$o $(once "$BIN/asyncq-bench" $common -n "$ITEMS" $always)"
        [ "$NATS" = no ] || n="$n $(once "$BIN/asyncq-nats-bench" $common -n "$PEER_ITEMS" --nodes 3)"
        [ "$RABBIT" = no ] || r="$r $(once "$BIN/asyncq-rabbitmq-bench" $common -n "$PEER_ITEMS" \
            --mode quorum --nodes 3)"
    done
    group=$(summary "$g") one=$(summary "$o") nats=$(summary "$n") rabbit=$(summary "$r")
    printf '| %6s | %19s | %19s | %19s | %19s | %9s | %9s | %13s |\n' "$credit" \
        "$(cell "$group")" "$(cell "$one")" "$(cell "$nats")" "$(cell "$rabbit")" \
        "$(ratio "${group%% *}" "${one%% *}")" "$(ratio "${group%% *}" "${nats%% *}")" \
        "$(ratio "${group%% *}" "${rabbit%% *}")"
}

echo "asyncq replicas compared, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "$(nproc) cores online, $(uname -sr); data in $DATA ($DATA_FS)"
echo "libraft $(pkg-config --modversion raft 2>/dev/null || echo '?');" \
    "$( [ "$NATS" = yes ] && nats-server --version | awk '{ print "NATS", $2 }' || echo 'no NATS');" \
    "$( [ "$RABBIT" = yes ] && for d in /usr/lib/rabbitmq/lib/rabbitmq_server-*; do echo "RabbitMQ ${d##*-}"; break; done || echo 'no RabbitMQ')"
echo "items/s, median of $RUNS runs (range), $CLIENTS producers x $CLIENTS consumers, items of" \
    "$SIZE bytes, loopback TCP, every item confirmed and acked"
echo
echo "| credit |   asyncq 3 replicas | asyncq 1, fsync always |  NATS JetStream R3 | RabbitMQ quorum, 3 | /1 always |    /NATS | /RabbitMQ |"
echo "|-------:|--------------------:|--------------------:|--------------------:|--------------------:|----------:|---------:|--------------:|"
for credit in $CREDITS; do
    row "$credit"
done
echo
echo "asyncq 3 replicas: asyncq-bench --replicas 3 ($ITEMS items): three asyncq-broker --peers on"
echo "  loopback, a put confirmed once two of three hold it in their fsynced logs, a delivery"
echo "  sent once committed; items/s from the first put to the JOINED. asyncq 1: asyncq-bench"
echo "  --fsync always, one broker. NATS: asyncq-nats-bench --nodes 3 ($PEER_ITEMS items): async"
echo "  publishes with PubAcks, credit unacknowledged per producer; one pull consumer, Fetch"
echo "  batches of credit, an ack per message (NATS 2.9 fsyncs its stream files every 2 min,"
echo "  not per publish). RabbitMQ: asyncq-rabbitmq-bench --mode quorum --nodes 3 ($PEER_ITEMS"
echo "  items): publisher confirms, credit unconfirmed per producer, prefetch credit."
echo

echo "Latency at $RATE items/s ($RATE_ITEMS items, each put flushed, each ack sent at once;"
echo "median of $RUNS runs of each percentile):"
echo
echo "| broker                 | put->ack p50 | put->ack p99 | put->ack max |"
echo "|------------------------|-------------:|-------------:|-------------:|"
latency() { # LABEL ARGS...
    label=$1
    shift
    p50="" p99="" max="" i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        line=$(output "$BIN/asyncq-bench" -p "$CLIENTS" -c "$CLIENTS" -s "$SIZE" -n "$RATE_ITEMS" \
            --rate "$RATE" "$@" | awk '$1 == "put->ack" { print $3, $6, $12 }' | tr -d ',')
        p50="$p50 ${line%% *}"
        rest=${line#* }
        p99="$p99 ${rest%% *}"
        max="$max ${rest#* }"
    done
    med() { echo "$1" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%s ms", v[int((NR + 1) / 2)]; else print "FAIL" }'; }
    printf '| %-22s | %12s | %12s | %12s |\n' "$label" "$(med "$p50")" "$(med "$p99")" "$(med "$max")"
}
latency "asyncq 3 replicas" --replicas 3
latency "asyncq 1, fsync always" --broker-arg --data-dir --broker-arg '{tmpdir}' \
    --broker-arg --fsync --broker-arg always
echo

echo "Failover at $RATE items/s: the leader SIGKILLed (a crash), or SIGTERMed (a planned"
echo "stop: it hands its lead over first), $KILL_MS ms after the first put; the longest"
echo "time no consumer got an item, each run (every run must end with every item acked"
echo "and the join exact, else FAIL):"
echo
for how in kill stop; do
    i=0
    gaps=""
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        out=$(output "$BIN/asyncq-bench" -p "$CLIENTS" -c "$CLIENTS" -s "$SIZE" -n "$RATE_ITEMS" \
            --rate "$RATE" --replicas 3 "--$how-leader" "$KILL_MS")
        gap=$(echo "$out" | awk '$1 == "failover" { for (k = 1; k <= NF; k++) if ($k == "item:") { print $(k + 1); exit } }')
        echo "$out" | grep -q 'every item acked before the JOINED' || gap=FAIL
        gaps="$gaps ${gap:-FAIL}${gap:+ s}"
    done
    if [ "$how" = kill ]; then
        echo "  failover, SIGKILL:$gaps"
    else
        echo "  planned stop, SIGTERM:$gaps"
    fi
done
echo
echo "Every run's output: $LOG"
