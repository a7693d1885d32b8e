#!/bin/sh
# bench/compare.sh: asyncq against the ideal ZeroMQ relay, Redis Streams and
# RabbitMQ, on this machine, so the README's performance claims can be
# checked.
#
# First table: asyncq-bench, asyncq-relay-bench (per-item messages, and 64
# items per message) and asyncq-redis-bench at 1x1, 2x2 and 4x4 producers x
# consumers with credit 256, then again with credit 1 (one item at a time,
# each waiting for its ack's round trip).
# Second table, persistence, credit 256 at 1x1, 2x2 and 4x4: asyncq in
# memory, with --fsync always and with --fsync 1000 (a fresh data directory
# per run, removed after it), Redis with appendfsync always and everysec,
# RabbitMQ with a transient classic queue, a durable classic queue
# (persistent messages) and a quorum queue. The RabbitMQ runs share one
# node, started for the table (a boot takes seconds) and stopped after it;
# each run declares its own queue and deletes it. Data directories are under TMPDIR (default /tmp),
# which should be on the disk whose fsync is to be measured, not a tmpfs.
# Every figure is the median of RUNS runs; the systems of a row take turns,
# run by run. Installs nothing. A benchmark: it
# asserts nothing; a run that fails shows as FAIL and its output stays in
# the log.
#
#   bench/compare.sh                    # about 4 minutes on 2 cores
#   ITEMS=200000 DURABLE_ITEMS=50000 RUNS=1 bench/compare.sh
#
# Settings (environment): BIN (the programs; default build-rel/bin, then
# build/bin), ITEMS (1000000), SIZE (64), CREDIT (256), ONE_ITEMS (items of
# the credit-1 runs, 20000), DURABLE_ITEMS (items of the persistence table,
# 200000), RUNS (3), LOG (where every run's output goes), TMPDIR.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BIN:-}" ]; then
    BIN=$ROOT/build-rel/bin
    [ -x "$BIN/asyncq-bench" ] || BIN=$ROOT/build/bin
fi
ITEMS=${ITEMS:-1000000}
SIZE=${SIZE:-64}
CREDIT=${CREDIT:-256}
ONE_ITEMS=${ONE_ITEMS:-20000}
DURABLE_ITEMS=${DURABLE_ITEMS:-200000}
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
RABBIT=yes
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "compare.sh: no rabbitmq-server: apt-get install -y rabbitmq-server (RabbitMQ columns" \
        "left out; its service need not run: systemctl disable --now rabbitmq-server)" >&2
    RABBIT=no
elif [ ! -x "$BIN/asyncq-rabbitmq-bench" ]; then
    echo "compare.sh: asyncq-rabbitmq-bench not built: apt-get install -y librabbitmq-dev," \
        "then run cmake again and rebuild (RabbitMQ columns left out)" >&2
    RABBIT=no
fi
DATA=${TMPDIR:-/tmp}
DATA_FS=$(stat -f -c %T "$DATA" 2>/dev/null || echo '?')
if [ "$DATA_FS" = tmpfs ]; then
    echo "compare.sh: $DATA is a tmpfs, where fsync costs nothing: set TMPDIR to a directory" \
        "on disk for the persistence table" >&2
fi
if [ -r /sys/fs/cgroup/cpu.max ]; then
    QUOTA=$(cat /sys/fs/cgroup/cpu.max)
else
    QUOTA=unknown
fi
: >"$LOG"

. "$ROOT/bench/lib.sh"

# A row: RUNS rounds, each running every system once, in turn, so that a
# slow spell of the machine falls on all of them, not on one.
row() { # P C CREDIT ITEMS
    p=$1 c=$2 credit=$3 items=$4
    common="-p $p -c $c -n $items -s $SIZE --credit $credit"
    a="" r="" r64="" rd="" i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        a="$a $(once "$BIN/asyncq-bench" $common)"
        r="$r $(once "$BIN/asyncq-relay-bench" $common)"
        if [ "$credit" -gt 1 ]; then
            r64="$r64 $(once "$BIN/asyncq-relay-bench" $common --batch 64)"
        fi
        if [ "$REDIS" = yes ]; then
            rd="$rd $(once "$BIN/asyncq-redis-bench" $common)"
        fi
    done
    asyncq=$(summary "$a") relay=$(summary "$r") relay64=$(summary "$r64") redis=$(summary "$rd")
    printf '| %d x %d | %6s | %9s | %19s | %19s | %19s | %19s | %12s | %12s | %14s |\n' \
        "$p" "$c" "$credit" "$items" "$(cell "$asyncq")" "$(cell "$relay")" "$(cell "$relay64")" \
        "$(cell "$redis")" "$(ratio "${asyncq%% *}" "${redis%% *}")" \
        "$(ratio "${asyncq%% *}" "${relay%% *}")" "$(ratio "${asyncq%% *}" "${relay64%% *}")"
}

# One RabbitMQ node for every RabbitMQ run of the persistence table, from
# asyncq-rabbitmq-bench --serve, whose stdin is this script's descriptor 9:
# closing it (rabbit_stop, or this script's end however it comes) stops the
# node. Sets RABBIT_URL, empty if the node did not start.
RABBIT_URL=""
RABBIT_DIR=""
RABBIT_PID=""
trap '[ -z "$RABBIT_DIR" ] || rm -rf "$RABBIT_DIR"' EXIT
trap 'exit 130' INT TERM
rabbit_start() {
    RABBIT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/asyncq-compare-XXXXXX")
    mkfifo "$RABBIT_DIR/in" "$RABBIT_DIR/out"
    echo "\$ $BIN/asyncq-rabbitmq-bench --serve" >>"$LOG"
    "$BIN/asyncq-rabbitmq-bench" --serve <"$RABBIT_DIR/in" >"$RABBIT_DIR/out" 2>>"$LOG" &
    RABBIT_PID=$!
    exec 9>"$RABBIT_DIR/in" 8<"$RABBIT_DIR/out"
    ready=""
    read -r ready RABBIT_URL <&8 || true
    [ "$ready" = READY ] || RABBIT_URL=""
    echo "$ready $RABBIT_URL" >>"$LOG"
}
rabbit_version() {
    for dir in /usr/lib/rabbitmq/lib/rabbitmq_server-*; do
        [ -d "$dir" ] && { echo "${dir##*-}"; return; }
    done
    echo '?'
}
rabbit_stop() {
    exec 9>&- 8<&-
    [ -z "$RABBIT_PID" ] || wait "$RABBIT_PID" || true
    rm -rf "$RABBIT_DIR"
    RABBIT_DIR=""
}

durable_row() { # P C
    p=$1 c=$2
    common="-p $p -c $c -n $DURABLE_ITEMS -s $SIZE --credit $CREDIT"
    data="--broker-arg --data-dir --broker-arg {tmpdir} --broker-arg --fsync --broker-arg"
    m="" al="" ev="" rd="" re="" tr="" du="" qu="" i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        m="$m $(once "$BIN/asyncq-bench" $common)"
        al="$al $(once "$BIN/asyncq-bench" $common $data always)"
        ev="$ev $(once "$BIN/asyncq-bench" $common $data 1000)"
        if [ "$REDIS" = yes ]; then
            rd="$rd $(once "$BIN/asyncq-redis-bench" $common --aof always)"
            re="$re $(once "$BIN/asyncq-redis-bench" $common --aof everysec)"
        fi
        if [ "$RABBIT" = yes ] && [ -n "$RABBIT_URL" ]; then
            rabbit="$BIN/asyncq-rabbitmq-bench"
            tr="$tr $(once "$rabbit" $common --server "$RABBIT_URL" --mode transient)"
            du="$du $(once "$rabbit" $common --server "$RABBIT_URL" --mode durable)"
            qu="$qu $(once "$rabbit" $common --server "$RABBIT_URL" --mode quorum)"
        elif [ "$RABBIT" = yes ]; then
            tr="$tr FAIL" du="$du FAIL" qu="$qu FAIL"
        fi
    done
    memory=$(summary "$m") always=$(summary "$al") every=$(summary "$ev")
    redis=$(summary "$rd") redis_everysec=$(summary "$re")
    transient=$(summary "$tr") durable=$(summary "$du") quorum=$(summary "$qu")
    printf '| %d x %d | %9s | %19s | %19s | %19s | %19s | %19s | %19s | %19s | %19s | %13s | %15s | %14s |\n' \
        "$p" "$c" "$DURABLE_ITEMS" "$(cell "$memory")" "$(cell "$always")" "$(cell "$every")" \
        "$(cell "$redis")" "$(cell "$redis_everysec")" "$(cell "$transient")" "$(cell "$durable")" \
        "$(cell "$quorum")" "$(ratio "${always%% *}" "${redis%% *}")" \
        "$(ratio "${every%% *}" "${redis_everysec%% *}")" "$(ratio "${always%% *}" "${quorum%% *}")"
}

echo "asyncq compared, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "$(nproc) cores online (cgroup cpu.max: $QUOTA), $(uname -sr)"
echo "libzmq $(pkg-config --modversion libzmq 2>/dev/null || echo '?');" \
    "$( [ "$REDIS" = yes ] && redis-server --version | awk '{ print "Redis", $3 }' | sed 's/v=//' || echo 'no Redis');" \
    "$( [ "$RABBIT" = yes ] && echo "RabbitMQ $(rabbit_version)" || echo 'no RabbitMQ')"
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
echo "  no persistence."
echo
echo "Persistence: items/s, median of $RUNS runs (range), credit $CREDIT, data directories in $DATA ($DATA_FS)"
echo
[ "$RABBIT" = no ] || rabbit_start
echo "| P x C |     items |    asyncq in memory |       asyncq always |      asyncq 1000 ms |        Redis always |      Redis everysec |  RabbitMQ transient |    RabbitMQ durable |     RabbitMQ quorum | always/Redis | 1000ms/everysec | always/quorum |"
echo "|-------|----------:|--------------------:|--------------------:|--------------------:|--------------------:|--------------------:|--------------------:|--------------------:|--------------------:|-------------:|----------------:|--------------:|"
for n in 1 2 4; do
    durable_row "$n" "$n"
done
[ "$RABBIT" = no ] || rabbit_stop
echo
echo "asyncq: asyncq-bench; always: --fsync always (a put is confirmed once fdatasync'd; one"
echo "  fdatasync per broker pass); 1000 ms: --fsync 1000 (confirmed once written, synced within"
echo "  1 s); a fresh --data-dir per run. Redis: asyncq-redis-bench --aof always|everysec"
echo "  (appendonly; appendfsync always: fsync before each reply; everysec: once a second). RabbitMQ: asyncq-rabbitmq-bench, one node"
echo "  for these runs, publisher confirms ($CREDIT unconfirmed per producer), prefetch $CREDIT, one"
echo "  ack (multiple) per $((CREDIT / 4 > 0 ? CREDIT / 4 : 1)) deliveries or when none is readable; transient: classic queue,"
echo "  not durable; durable: durable classic queue, persistent messages (confirmed once fsynced,"
echo "  or once acked if that comes first); quorum: quorum queue, one member (confirmed once in"
echo "  its fsynced log); items/s to the last ack sent (basic.ack has no reply) or the last"
echo "  confirm if later. always/Redis: asyncq always / Redis always; always/quorum: asyncq"
echo "  always / RabbitMQ quorum; 1000ms/everysec: asyncq --fsync 1000 / Redis everysec."
echo "Every run's output: $LOG"
