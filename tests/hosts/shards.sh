#!/usr/bin/env bash
# A sharded service across hosts: three brokers, each on a host (a Linux
# network namespace) of its own, are one service (--shard K --service LIST,
# docs/PROTOCOL.md 4.15); producers, consumers and a ctl host reach it by one
# name (brokers.asyncq.test, three lines in each namespace's /etc/hosts), all
# with CURVE keys. The hosts are joined by veth pairs on a bridge that lives in
# a namespace of its own (netns.sh, as hosts.sh); the tag and the subnet differ
# from hosts.sh's, so both can run at once.
#
#   tests/hosts/shards.sh BIN_DIR        (as root; exit 77 = skipped)
#
# 0. the one name resolves to the three brokers in a namespace, and a client
#    given one broker's name finds all three (stats --brokers: a row each).
# 1. 2 producers, 3 consumers: every put confirmed, the puts on every shard,
#    join exact, every item consumed on another host.
# 2. the same, but shard 1's host is cut off (ip link set eth0 down) while the
#    producers put: shards 0 and 2 keep taking puts, a join times out (exit 4)
#    naming shard 1; the link comes back, every put is confirmed (those kept
#    for shard 1 included), the join completes, nothing is lost.
# 3. a client given a list with one address where nothing runs is served by
#    the others.
set -euo pipefail

bin=$(cd "${1:?usage: shards.sh BIN_DIR}" && pwd)

tag=aqs$$
# hosts.sh takes 10.100-199.x; this test 10.20-99.x.
subnet=10.$((20 + $$ % 80)).$(( ($$ / 80) % 250 ))
hosts=(b0 b1 b2 ctl p1 p2 c1 c2 c3)
# shellcheck source=netns.sh
. "$(dirname "$0")/netns.sh"
started=$(date +%s.%N)

since() { awk -v now="$(date +%s.%N)" -v then="${1:-$started}" 'BEGIN { printf "%.1f", now - then }'; }

etc_hosts() {
  local k
  echo "127.0.0.1 localhost"
  for k in 0 1 2; do echo "$subnet.$((k + 1)) b$k.asyncq.test brokers.asyncq.test"; done
}
netns_up etc_hosts

echo "== phase 0: one name, three brokers"
on ctl getent ahostsv4 brokers.asyncq.test | tee "$work/getent.out" || true
resolved=$(awk '{print $1}' "$work/getent.out" | sort -u | wc -l)
if [ "$resolved" = 3 ]; then
  service=brokers.asyncq.test:5557
else
  echo "NOTE: brokers.asyncq.test resolves to $resolved address(es) here, not 3: a list instead"
  service=b0.asyncq.test:5557,b1.asyncq.test:5557,b2.asyncq.test:5557
fi
check "brokers.asyncq.test resolves to the 3 brokers" test "$resolved" = 3

netns_keys

list=b0.asyncq.test:5557,b1.asyncq.test:5557,b2.asyncq.test:5557
for k in 0 1 2; do
  on "b$k" "$bin/asyncq-broker" --bind "tcp://$subnet.$((k + 1)):5557" --shard $k --service "$list" \
    --data-dir "$work/data-$k" --heartbeat-ms 200 --metrics 127.0.0.1:9100 \
    --curve-secret "$keys/broker.key_secret" --clients "$keys/clients" \
    > "$work/b$k.out" 2> "$work/b$k.log" &
  pids+=($!)
done
for k in 0 1 2; do
  for _ in $(seq 100); do grep -q READY "$work/b$k.out" && break; sleep 0.1; done
  grep READY "$work/b$k.out" || { cat "$work/b$k.log"; exit 1; }
done

ctl() { as ctl ctl "$bin/asyncq" "$@"; }
total_of() { # queue, field: the shards' numbers added up
  ctl stats -b "$service" -q "$1" --format kv | sed -n "s/.* $2=\([0-9]*\).*/\1/p"
}
counter_at() { # broker host, queue, counter: from its own /stats.json (no client library)
  local n
  n=$(on "$1" /usr/bin/python3 -c 'import urllib.request as u
print(u.urlopen("http://127.0.0.1:9100/stats.json", timeout=2).read().decode())' 2>/dev/null \
      | sed -n "s/.*\"name\":\"$2\"[^}]*\"$3\":\([0-9]*\).*/\1/p")
  echo "${n:-0}"
}
puts_at() { counter_at "$1" "$2" puts_total; }
acks_at() { counter_at "$1" "$2" acks_total; }
added() { cat "$work/$1"-p*.out | sed -n 's/.*added <\([^>]*\)>.*/\1/p'; }

consumers() { # queue
  local c
  for c in c1 c2 c3; do
    as consumer "$c" "$bin/asyncq-consumer" -b "$service" -q "$1" --name "$c" --credit 2 --max-sleep 0.01 \
      > "$work/$1-$c.out" 2>&1 &
    pids+=($!)
  done
}
producer_pids=()
producers() { # queue, count, max sleep
  local p
  producer_pids=()
  for p in p1 p2; do
    as producer "$p" timeout 60 "$bin/asyncq-producer" -b "$service" -q "$1" --name "$p" --count "$2" \
      --max-sleep "$3" > "$work/$1-$p.out" 2>&1 &
    producer_pids+=($!); pids+=($!)
  done
}
wait_producers() {
  local p code
  for p in "${producer_pids[@]}"; do
    code=0; wait "$p" || code=$?
    check "a producer exited $code (every put confirmed)" test $code = 0
  done
}
settled() { # queue, count: join, the shards' numbers, every item consumed
  local queue=$1 expected=$2 k code=0
  ctl join -b "$service" -q "$queue" --timeout 30 > "$work/$queue-join.out" 2>&1 || code=$?
  cat "$work/$queue-join.out"
  check "$queue: join exits 0 (exit $code)" test $code = 0
  ctl stats --brokers -b "$service" -q "$queue" --format kv | tee "$work/$queue-stats.out" || true
  check "$queue: the producers added $expected items" test "$(added "$queue" | wc -l)" = "$expected"
  check "$queue: $expected puts on the shards" test "$(total_of "$queue" puts)" = "$expected"
  check "$queue: $expected acked" test "$(total_of "$queue" acked)" = "$expected"
  for k in 0 1 2; do
    local puts outstanding
    puts=$(sed -n "s/.* shard=$k .* puts=\([0-9]*\).*/\1/p" "$work/$queue-stats.out")
    outstanding=$(sed -n "s/.* shard=$k .* outstanding=\([0-9]*\).*/\1/p" "$work/$queue-stats.out")
    check "$queue: shard $k took puts (${puts:-none})" test "${puts:-0}" -gt 0
    check "$queue: shard $k has nothing outstanding (${outstanding:-none})" test "${outstanding:-x}" = 0
  done
  local missing=0 item
  for item in $(added "$queue"); do
    grep -q "<$item>" "$work/$queue"-c*.out || missing=$((missing + 1))
  done
  check "$queue: every item added was consumed on another host ($missing missing)" test $missing = 0
}

echo "== phase 1: 2 producers, 3 consumers over 3 shards [$(since)s]"
consumers spread
producers spread 300 0.01
wait_producers
settled spread 600
for b in b0 b2; do
  ctl stats --brokers -b "$b.asyncq.test:5557" -q spread --format kv > "$work/one-$b.out" 2>&1 || true
  check "given only $b's name, stats --brokers names all 3 shards" \
    test "$(grep -c '^broker=.* shard=[012] queue=spread ' "$work/one-$b.out")" = 3
done

echo "== phase 2: shard 1's host is cut off while the producers put [$(since)s]"
consumers cut
producers cut 300 0.04
for _ in $(seq 100); do
  [ "$(puts_at b0 cut)" -ge 10 ] && [ "$(puts_at b1 cut)" -ge 10 ] && [ "$(puts_at b2 cut)" -ge 10 ] && break
  sleep 0.1
done
before0=$(puts_at b0 cut) before1=$(puts_at b1 cut) before2=$(puts_at b2 cut)
acked_before=$(( $(acks_at b0 cut) + $(acks_at b2 cut) ))
check "every shard took puts before the cut ($before0, $before1, $before2)" \
  test "$before0" -ge 10 -a "$before1" -ge 10 -a "$before2" -ge 10
on b1 ip link set eth0 down
cut_at=$(date +%s.%N)
echo "b1's link is down [$(since)s]"
for _ in $(seq 150); do
  [ "$(puts_at b0 cut)" -ge $((before0 + 30)) ] && [ "$(puts_at b2 cut)" -ge $((before2 + 30)) ] && break
  sleep 0.1
done
after0=$(puts_at b0 cut) after1=$(puts_at b1 cut) after2=$(puts_at b2 cut)
acked_after=$(( $(acks_at b0 cut) + $(acks_at b2 cut) ))
echo "puts while cut, after $(since "$cut_at")s: shard 0 $before0 -> $after0, shard 1 $before1 -> $after1," \
  "shard 2 $before2 -> $after2"
check "shards 0 and 2 keep taking puts while shard 1 is cut" \
  test "$after0" -ge $((before0 + 30)) -a "$after2" -ge $((before2 + 30))
# A consumer's credit must not stay parked at the cut broker: 3 consumers
# (credit 2, about 5 ms an item) ack far more than 60 in 3 s when they do not stall.
deadline=$(( $(date +%s%N) / 1000000 + 3000 ))
while [ "$acked_after" -lt $((acked_before + 60)) ] && [ $(( $(date +%s%N) / 1000000 )) -lt $deadline ]; do
  sleep 0.1
  acked_after=$(( $(acks_at b0 cut) + $(acks_at b2 cut) ))
done
echo "queued on shards 0 and 2 while shard 1 is cut: $(counter_at b0 cut queued), $(counter_at b2 cut queued)"
check "the consumers keep acking shards 0 and 2's items while shard 1 is cut ($acked_before -> $acked_after in $(since "$cut_at")s)" \
  test "$acked_after" -ge $((acked_before + 60))
join_at=$(date +%s%N)
code=0; timeout 30 ip netns exec "$(ns ctl)" env ASYNCQ_CURVE_SECRET="$keys/ctl.key_secret" \
  ASYNCQ_SERVER_KEY="$keys/broker.key" "$bin/asyncq" join -b "$service" -q cut --timeout 2 \
  > "$work/cut-join-cut.out" 2>&1 || code=$?
join_ms=$(( ($(date +%s%N) - join_at) / 1000000 ))
echo "join --timeout 2 while cut took ${join_ms} ms: $(cat "$work/cut-join-cut.out")"
check "a join while shard 1 is cut times out (exit $code, 4 expected)" test $code = 4
# Its 2 s, the wait for the cut broker's HELLO included: nothing else waits
# on a broker that does not answer.
check "... within 4 s (${join_ms} ms)" test "$join_ms" -lt 4000
check "... naming shard 1" grep -q "shard 1" "$work/cut-join-cut.out"
on b1 ip link set eth0 up
up_at=$(date +%s.%N)
echo "b1's link is up again, after $(since "$cut_at")s cut [$(since)s]"
wait_producers
echo "the producers were done $(since "$up_at")s after the link came back"
# Those kept for shard 1 while it was cut (sent before it was judged silent),
# and any put after: for the reader, as how many were kept varies.
echo "shard 1 took $(( $(puts_at b1 cut) - after1 )) puts after its link came back"
settled cut 600
# What the clients said besides their items (to read when something fails).
grep -hv 'added <\|<[0-9a-f]*>' "$work"/cut-[pc]*.out | sort | uniq -c | head -20 || true

echo "== phase 3: a list with one address where nothing runs [$(since)s]"
code=0
timeout 20 ip netns exec "$(ns ctl)" env ASYNCQ_CURVE_SECRET="$keys/producer.key_secret" \
  ASYNCQ_SERVER_KEY="$keys/broker.key" "$bin/asyncq" put -b "b0.asyncq.test:5557,$subnet.250:5557" \
  -q wrong w1 w2 w3 > "$work/wrong.out" 2>&1 || code=$?
cat "$work/wrong.out"
check "a put given one broker and an address where nothing runs is served (exit $code)" test $code = 0
check "... its 3 items are on the service" test "$(total_of wrong puts)" = 3

echo "== $( [ $fail = 0 ] && echo passed || echo FAILED ) in $(since)s"
exit $fail
