#!/usr/bin/env bash
# Across hosts: each "host" is a Linux network namespace with its own address,
# joined to the others by veth pairs on a bridge that lives in a namespace of
# its own (netns.sh); nothing is added to the machine's own network. Clients
# reach the broker by a name (broker.asyncq.test) mapped in each namespace's
# /etc/hosts.
#
#   tests/hosts/hosts.sh BIN_DIR        (as root; exit 77 = skipped)
#
# 0. a broker without keys refuses a client from another host (it accepts
#    loopback only); with keys (CURVE), a client without a key, or with the
#    wrong broker key, is refused, and says so.
# 1. broker on one host, 3 producers and 5 consumers on others, a join from
#    another, all with CURVE keys and roles: every item acked, join exact.
# 2. the same, but one consumer holds items (its --exec command never ends)
#    when its link is cut (ip link set eth0 down): the broker finds it gone
#    (TCP's retransmission time-out, 3 heartbeats), the items it held are
#    delivered to the others, and the join completes exactly.
set -euo pipefail

bin=$(cd "${1:?usage: hosts.sh BIN_DIR}" && pwd)

tag=aq$$
subnet=10.$((100 + $$ % 100)).$(( ($$ / 100) % 250 ))
hosts=(broker ctl p1 p2 p3 c1 c2 c3 c4 c5)
# shellcheck source=netns.sh
. "$(dirname "$0")/netns.sh"

etc_hosts() { printf '127.0.0.1 localhost\n%s.1 broker.asyncq.test\n' "$subnet"; }
netns_up etc_hosts
on c1 getent hosts broker.asyncq.test

broker=broker.asyncq.test:5557
start_broker() { # log name, extra flags...
  local name=$1; shift
  on broker "$bin/asyncq-broker" --bind "tcp://$subnet.1:5557" --heartbeat-ms 200 "$@" \
    > "$work/$name.out" 2> "$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q READY "$work/$name.out" && break; sleep 0.1; done
  grep READY "$work/$name.out" || { cat "$work/$name.log"; return 1; }
}

stop_broker() { # every process of the broker host ($! is a subshell's, not the broker's)
  ip netns pids "$(ns broker)" | xargs -r kill
  for _ in $(seq 100); do [ -z "$(ip netns pids "$(ns broker)")" ] && return; sleep 0.1; done
  echo "FAILED: the broker did not stop"; return 1
}

echo "== phase 0: who gets in"
start_broker open
code=0; on ctl "$bin/asyncq" stats -b "$broker" > "$work/open-stats.out" 2>&1 || code=$?
check "a broker without keys refuses another host (exit $code)" test $code = 3
check "... and logs it" grep -q "not from loopback" "$work/open.log"
stop_broker

keys=$work/keys
mkdir -p "$keys/clients"
"$bin/asyncq" keygen broker --dir "$keys" --role produce > /dev/null
"$bin/asyncq" keygen producer --dir "$keys" --role produce > /dev/null
"$bin/asyncq" keygen consumer --dir "$keys" --role consume > /dev/null
"$bin/asyncq" keygen ctl --dir "$keys" --role admin > /dev/null
"$bin/asyncq" keygen stranger --dir "$keys" > /dev/null
cp "$keys"/producer.key "$keys"/consumer.key "$keys"/ctl.key "$keys/clients/"
as() { # role (producer, consumer, ctl), host, command...
  local role=$1 host=$2; shift 2
  on "$host" env ASYNCQ_CURVE_SECRET="$keys/$role.key_secret" ASYNCQ_SERVER_KEY="$keys/broker.key" "$@"
}
start_broker broker --curve-secret "$keys/broker.key_secret" --clients "$keys/clients"
code=0; on ctl "$bin/asyncq" stats -b "$broker" > "$work/nokey.out" 2>&1 || code=$?
check "a client without a key is refused (exit $code)" test $code = 3
code=0; as stranger ctl "$bin/asyncq" stats -b "$broker" > "$work/stranger.out" 2>&1 || code=$?
check "a key not in the clients directory is refused (exit $code)" test $code = 3
check "... the client says so" grep -q "refused this client's key" "$work/stranger.out"
code=0
on ctl env ASYNCQ_CURVE_SECRET="$keys/ctl.key_secret" ASYNCQ_SERVER_KEY="$keys/stranger.key" \
  "$bin/asyncq" stats -b "$broker" > "$work/wrongkey.out" 2>&1 || code=$?
check "a wrong broker key is refused (exit $code)" test $code = 3
check "... the client says so" grep -q "key does not match" "$work/wrongkey.out"
check "the broker logged the refused key" grep -q "client key .* is not in the clients directory" \
  "$work/broker.log"
check "an allowed key gets in" as ctl ctl "$bin/asyncq" stats -b "$broker"
stat_of() { # queue, field
  as ctl ctl "$bin/asyncq" stats -b "$broker" -q "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"
}

run_phase() { # queue, per-producer count, items put before
  local queue=$1 count=$2 before=${3:-0} p
  local producer_pids=()
  for p in p1 p2 p3; do
    as producer "$p" "$bin/asyncq-producer" -b "$broker" -q "$queue" --name "$p" --count "$count" \
      --max-sleep 0.02 > "$work/$queue-$p.out" 2>&1 &
    producer_pids+=($!); pids+=($!)
  done
  for p in "${producer_pids[@]}"; do
    wait "$p" || { echo "FAILED: a producer exited $?"; fail=1; }
  done
  # Every producer exited 0: the broker confirmed all their puts.
  as ctl ctl "$bin/asyncq" join -b "$broker" -q "$queue" --timeout 60 > "$work/$queue-join.out" 2>&1 \
    || { echo "FAILED: join: $(cat "$work/$queue-join.out")"; fail=1; }
  cat "$work/$queue-join.out"
  local expected=$((3 * count + before))
  check "$queue: $expected puts" test "$(stat_of "$queue" puts)" = $expected
  check "$queue: $expected acked" test "$(stat_of "$queue" acked)" = $expected
  check "$queue: nothing outstanding" test "$(stat_of "$queue" outstanding)" = 0
  local missing=0 item
  for item in $(cat "$work/$queue"-p*.out | sed -n 's/.*added <\([^>]*\)>.*/\1/p'); do
    grep -q "<$item>" "$work/$queue"-c*.out || missing=$((missing + 1))
  done
  check "$queue: every item put was consumed on another host ($missing missing)" test $missing = 0
}

echo "== phase 1: 3 producers, 5 consumers, join"
for c in c1 c2 c3 c4 c5; do
  as consumer "$c" "$bin/asyncq-consumer" -b "$broker" -q hosts --name "$c" --credit 2 --max-sleep 0.02 \
    > "$work/hosts-$c.out" 2>&1 &
  pids+=($!)
done
run_phase hosts 200

echo "== phase 2: consumer c1 holds items when its link is cut"
# c1's command records the item and never finishes, so c1 holds its credit.
as ctl ctl "$bin/asyncq" put -b "$broker" -q cut held-1 held-2 held-3
as consumer c1 "$bin/asyncq-consumer" -b "$broker" -q cut --name c1 --credit 3 \
  --exec "cat > $work/held.\$ASYNCQ_ITEM_ID; exec sleep 600" > "$work/cut-c1.out" 2>&1 &
c1_pid=$!
pids+=($!)
held() { grep -h held "$work"/held.* 2>/dev/null | wc -l; }
for _ in $(seq 100); do [ "$(held)" = 3 ] && break; sleep 0.1; done
check "c1 holds 3 items" test "$(held)" = 3
on c1 ip link set eth0 down
echo "c1's link is down; it held: $(grep -h held "$work"/held.* | tr '\n' ' ')"
for c in c2 c3 c4 c5; do
  as consumer "$c" "$bin/asyncq-consumer" -b "$broker" -q cut --name "$c" --credit 2 --max-sleep 0.02 \
    > "$work/cut-$c.out" 2>&1 &
  pids+=($!)
done
run_phase cut 100 3
check "the 3 items c1 held were delivered again" test "$(stat_of cut redelivered)" -ge 3
for item in $(grep -h held "$work"/held.*); do
  check "$item, held by c1, was consumed by another host" \
    grep -q "<$item>" "$work"/cut-c[2-5].out
done
check "c1 is still running, cut off" kill -0 "$c1_pid"
check "the broker logged c1's session as gone" \
  grep -q "session c1-.*3 items returned" "$work/broker.log"
grep "session c1-" "$work/broker.log"
exit $fail
