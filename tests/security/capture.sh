#!/usr/bin/env bash
# On the wire: what CURVE hides, and who a broker without keys lets in.
#
#   tests/security/capture.sh BIN_DIR        (as root; exit 77 = skipped)
#
# 1. A broker with CURVE keys, a producer and a consumer moving items that
#    carry a marker string; tcpdump records the broker's two ports on
#    loopback. The marker, and the protocol's signature "asyncq/2" that
#    starts every message, must not be in the capture. The control: the
#    same run without keys, where both must be in it (so the search can
#    fail). Each run happens in a network namespace of its own, so the
#    capture holds this run's traffic and nothing else.
# 2. The loopback-only default: a broker without keys and without
#    --insecure, in one namespace, joined to a second by a veth pair. A
#    client from the second (a non-loopback address) gets nothing: its put
#    is never confirmed, its stats never answered, and the broker's queues
#    do not change; a client on the broker's loopback is served. With
#    --insecure, the client from the other namespace is served too. A
#    replica without keys takes connections to its replicas' port from
#    loopback only, and from anywhere with --insecure.
# 3. The replicas' own port (PORT+2): a group of three on loopback without
#    keys (the control: the items cross between replicas in clear), then
#    with the broker's key, replica 3 with another key: the items' marker
#    is not in a capture of the replicas' ports; replica 3 is refused by
#    the two others and refuses them (each finds the other's proof wrong),
#    and those two confirm every put; an attacker speaking libraft's
#    preamble then a raft message in clear, a made-up handshake, a
#    preamble claiming a 1 TiB address, or silence, is refused, and a put
#    after that is still confirmed.
set -euo pipefail

bin=$(cd "${1:?usage: capture.sh BIN_DIR}" && pwd)
skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "capturing packets and making network namespaces need root"
command -v tcpdump >/dev/null || skip "tcpdump is not installed"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"

tag=aqw$$
work=$(mktemp -d)
namespaces=("$tag-plain" "$tag-curve" "$tag-b" "$tag-c")
fail=0

cleanup() {
  set +e
  for ns in "${namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9
  done
  # The shell's own children (the namespaced processes, already killed).
  wait 2>/dev/null
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  # A veth end is in the machine's namespace only if setting up failed
  # before it was moved; deleting one end deletes the pair.
  ip link del "${tag}b" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP # so that a stop from outside cleans up too

check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}

# Polls a condition (a command, run anew each time: a function when it
# needs an expansion) up to `tenths` tenths of a second.
wait_for() { # tenths, command...
  local tenths=$1; shift
  for _ in $(seq "$tenths"); do "$@" && return 0; sleep 0.1; done
  "$@"
}

# Starts a broker in namespace $1 with log name $2 and flags; sets
# broker_address from its READY line.
start_broker() { # namespace, name, flags...
  local ns=$1 name=$2; shift 2
  ip netns exec "$ns" "$bin/asyncq-broker" "$@" > "$work/$name.out" 2> "$work/$name.log" &
  if ! wait_for 100 grep -q '^READY ' "$work/$name.out"; then
    echo "FAILED: broker $name did not start"; cat "$work/$name.log"; exit 1
  fi
  broker_address=$(sed -n 's/^READY //p' "$work/$name.out")
}

# A first SIGTERM makes a broker drain its queues (it waits for consumers);
# the second stops it at once.
namespace_empty() { # namespace
  test -z "$(ip netns pids "$1")"
}
stop_namespace_processes() { # namespace (a process may end between the list and the kill)
  ip netns pids "$1" | xargs -r kill 2> /dev/null || true
  wait_for 5 namespace_empty "$1" || { ip netns pids "$1" | xargs -r kill 2> /dev/null || true; }
  if ! wait_for 100 namespace_empty "$1"; then
    echo "FAILED: processes of $1 did not stop:"; fail=1
    ip netns pids "$1" | xargs -r ps -o pid,stat,args -p || true
    ip netns pids "$1" | xargs -r kill -9 2> /dev/null || true
  fi
}

file_larger() { # file, bytes
  test "$(stat -c %s "$1")" -gt "$2"
}

occurrences() { # file, text
  { grep -a -o -F -- "$2" "$1" || true; } | wc -l
}

# Connects to a replicas' port (PORT+2) from namespace $1 as an attacker
# would: libraft's own preamble (version 1, an id, an address), then for
# each payload given ("raft": a raft message in clear, as a replica
# without keys sends; "forged": asyncq's handshake with a made-up proof;
# "none": nothing; "huge": instead of the preamble, one that claims a
# 1 TiB address; "silent": not a byte) one connection, read until the
# broker closes it.
raft_attack() { # namespace, host, port, payload...
  local ns=$1; shift
  ip netns exec "$ns" /usr/bin/python3 - "$@" <<'PYTHON'
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
address = b"10.0.0.9:9999\0"
padded = address + b"\0" * (-len(address) % 8)
payloads = {"raft": struct.pack("<QQQQ", 1, 9, 99, 0) + b"\0" * 64,
            "forged": b"AQRP\x01" + b"\0" * 32 + b"\xff" * 200,
            "none": b""}
for kind in sys.argv[3:]:
    s = socket.create_connection((host, port), timeout=15)
    try:  # the broker may close it at any point: what is refused early is refused
        if kind == "huge":
            s.sendall(struct.pack("<QQQ", 1, 2, 1 << 40))
        elif kind != "silent":
            s.sendall(struct.pack("<QQQ", 1, 2, len(padded)) + padded + payloads[kind])
        if kind == "none":
            s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
PYTHON
}

# ----------------------------------------------------------------------
# 1. What a capture of the broker's traffic shows

marker="ASYNCQ-WIRE-MARKER-$$-$RANDOM$RANDOM"
items=40
for i in $(seq "$items"); do
  echo "item $i: $marker $marker $marker $marker"
done > "$work/items.txt"
item_bytes=$(wc -c < "$work/items.txt")

keys=$work/keys
mkdir -p "$keys/clients"
"$bin/asyncq" keygen broker --dir "$keys" --role admin > /dev/null
"$bin/asyncq" keygen producer --dir "$keys" --role produce > /dev/null
"$bin/asyncq" keygen consumer --dir "$keys" --role consume > /dev/null
cp "$keys/producer.key" "$keys/consumer.key" "$keys/clients/"

# Runs a broker (flags after the run's name), captures its ports on
# loopback while a producer puts every line of items.txt and a consumer
# gets them all, and leaves the capture in $work/NAME.pcap. The clients'
# environment (their keys, or none) is in producer_env and consumer_env.
# tcpdump is stopped once `complete` (a command) says the capture holds
# the whole run: packets still in the kernel's buffer when it stops are
# never written.
# A capture the kernel dropped packets from (a loaded machine) says
# nothing about the wire: the run is done again, up to three times.
capture_run() { # name, complete, broker flags...
  local name=$1 attempt dropped
  for attempt in 1 2 3; do
    capture_once "$@"
    dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel$/\1/p' "$work/$name.tcpdump")
    [ "${dropped:-0}" = 0 ] && break
    echo "   the kernel dropped $dropped packets (attempt $attempt of 3)"
    ip netns del "$tag-$name"
  done
  local packets
  packets=$(tcpdump -r "$work/$name.pcap" 2> /dev/null | wc -l)
  echo "   captured $packets packets, $(stat -c %s "$work/$name.pcap") bytes, for $item_bytes bytes of items"
  echo "   tcpdump: $(grep -h 'packets' "$work/$name.tcpdump" | tr '\n' ' ')"
  check "$name: the capture holds the traffic ($packets packets, more than $((2 * item_bytes)) bytes)" \
    file_larger "$work/$name.pcap" $((2 * item_bytes))
}

capture_once() { # name, complete, broker flags...
  local name=$1 complete=$2; shift 2
  local ns=$tag-$name
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  start_broker "$ns" "$name" --bind tcp://127.0.0.1:0 "$@"
  local port=${broker_address##*:}
  echo "== $name: broker at $broker_address (ports $port, $((port + 1)))"
  # Immediate mode: each packet is written as it comes, not a buffer at a time.
  # Loopback packets reach 64 KiB each, and immediate mode gives each one a
  # slot of that size: a 64 MiB buffer holds a thousand where the default
  # holds about thirty.
  ip netns exec "$ns" tcpdump -i lo --immediate-mode -B 65536 -U -Z root -s 0 -w "$work/$name.pcap" \
    "tcp port $port or tcp port $((port + 1))" 2> "$work/$name.tcpdump" &
  local tcpdump_pid=$!
  if ! wait_for 100 grep -q 'listening on' "$work/$name.tcpdump"; then
    echo "FAILED: tcpdump did not start"; cat "$work/$name.tcpdump"; exit 1
  fi
  local consumer_rc=0 producer_rc=0
  ip netns exec "$ns" env "${consumer_env[@]}" "$bin/asyncq-consumer" -b "$broker_address" \
    -q wire --count "$items" --credit 8 --max-sleep 0 > "$work/$name.consumer" 2>&1 &
  local consumer_pid=$!
  ip netns exec "$ns" env "${producer_env[@]}" "$bin/asyncq-producer" -b "$broker_address" \
    -q wire --stdin --quiet < "$work/items.txt" > "$work/$name.producer" 2>&1 || producer_rc=$?
  wait "$consumer_pid" || consumer_rc=$?
  check "$name: the producer's $items puts were confirmed (exit $producer_rc)" test "$producer_rc" = 0
  check "$name: the consumer got and acked $items items (exit $consumer_rc)" test "$consumer_rc" = 0
  check "$name: the items reached the consumer whole" \
    test "$(occurrences "$work/$name.consumer" "$marker")" -ge $((items * 4))
  wait_for 100 "$complete" || true
  kill -INT "$tcpdump_pid"
  wait "$tcpdump_pid" || true
  stop_namespace_processes "$ns"
}

producer_env=(ASYNCQ_CURVE_SECRET= ASYNCQ_SERVER_KEY=)
consumer_env=(ASYNCQ_CURVE_SECRET= ASYNCQ_SERVER_KEY=)
# Every item crossed loopback twice (put, delivery), in clear: the plain
# capture is whole once it holds every marker twice. The CURVE capture
# carries the same messages, each boxed with more bytes, and the same
# handshakes plus CURVE's: it is whole once it is larger than the plain one.
plain_complete() { test "$(occurrences "$work/plain.pcap" "$marker")" -ge $((2 * items * 4)); }
curve_complete() { file_larger "$work/curve.pcap" "$(stat -c %s "$work/plain.pcap")"; }
capture_run plain plain_complete
plain_markers=$(occurrences "$work/plain.pcap" "$marker")
plain_signatures=$(occurrences "$work/plain.pcap" "asyncq/2")
echo "   without keys: the marker $plain_markers times, asyncq/2 $plain_signatures times"
check "without keys, the items' marker is in the capture (the control: the search can find it)" \
  test "$plain_markers" -ge $((2 * items * 4))
check "without keys, the protocol's messages are in the capture" test "$plain_signatures" -gt 0

producer_env=(ASYNCQ_CURVE_SECRET="$keys/producer.key_secret" ASYNCQ_SERVER_KEY="$keys/broker.key")
consumer_env=(ASYNCQ_CURVE_SECRET="$keys/consumer.key_secret" ASYNCQ_SERVER_KEY="$keys/broker.key")
capture_run curve curve_complete --curve-secret "$keys/broker.key_secret" --clients "$keys/clients"
curve_markers=$(occurrences "$work/curve.pcap" "$marker")
curve_signatures=$(occurrences "$work/curve.pcap" "asyncq/2")
curve_greetings=$(occurrences "$work/curve.pcap" "CURVE")
echo "   with keys: the marker $curve_markers times, asyncq/2 $curve_signatures times," \
  "the CURVE mechanism named $curve_greetings times"
check "with keys, the connections were CURVE (its name is in the greetings, in clear)" \
  test "$curve_greetings" -gt 0
check "with keys, the items' marker is not in the capture" test "$curve_markers" = 0
check "with keys, no protocol message is in the capture" test "$curve_signatures" = 0

# ----------------------------------------------------------------------
# 2. A broker without keys lets in loopback only, unless --insecure

b=$tag-b c=$tag-c
subnet=10.$((100 + $$ % 100)).$(( ($$ / 100) % 250 ))
ip netns add "$b"
ip netns add "$c"
ip link add "${tag}b" type veth peer name "${tag}c"
ip link set "${tag}b" netns "$b"
ip link set "${tag}c" netns "$c"
for side in b:1 c:2; do
  ns=$tag-${side%:*}
  ip netns exec "$ns" ip link set "${tag}${side%:*}" name eth0
  ip netns exec "$ns" ip addr add "$subnet.${side#*:}/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
done
remote=$subnet.1:5557
local_address=127.0.0.1:5557

# The clients of this part have no keys.
export ASYNCQ_CURVE_SECRET= ASYNCQ_SERVER_KEY=
puts_seen_locally() { # what a client on the broker's loopback reads: the puts of queue "wire"
  local out
  out=$(ip netns exec "$b" "$bin/asyncq" stats -b "$local_address" -q wire) || { echo "stats failed"; return; }
  echo "$out" | sed -n 's/.* puts=\([0-9]*\).*/\1/p'
}
run() { # output name, namespace, command...: its exit code in $code
  local name=$1 ns=$2; shift 2
  code=0
  ip netns exec "$ns" "$@" > "$work/$name.out" 2>&1 || code=$?
}

echo "== without keys, without --insecure: broker on $subnet.1 (all interfaces)"
start_broker "$b" default --bind 'tcp://*:5557'
check "the broker says it takes loopback connections only" \
  grep -q "no keys: loopback connections only" "$work/default.log"
run remote-put "$c" "$bin/asyncq-producer" -b "$remote" -q wire --stdin --quiet <<< "from-afar"
check "a put from another address is never confirmed (exit $code)" test "$code" = 3
run remote-stats "$c" "$bin/asyncq" stats -b "$remote"
check "stats from another address are never answered (exit $code)" test "$code" = 3
check "... and nothing reached a queue (puts: '$(puts_seen_locally)')" test -z "$(puts_seen_locally)"
check "the broker logged the refused connections" grep -q "not from loopback" "$work/default.log"
run local-put "$b" "$bin/asyncq" put -b "$local_address" -q wire from-loopback
check "a put on the broker's loopback is confirmed (exit $code)" test "$code" = 0
check "... and is the only put in the queue" test "$(puts_seen_locally)" = 1
stop_namespace_processes "$b"

echo "== without keys, with --insecure"
start_broker "$b" insecure --bind 'tcp://*:5557' --insecure
check "the broker says it lets anyone in" grep -q "no keys and --insecure" "$work/insecure.log"
run remote-put-insecure "$c" "$bin/asyncq-producer" -b "$remote" -q wire --stdin --quiet \
  <<< "from-afar"
check "a put from another address is confirmed (exit $code)" test "$code" = 0
run remote-stats-insecure "$c" "$bin/asyncq" stats -b "$remote" -q wire
check "stats from another address are answered (exit $code)" test "$code" = 0
check "... and show its put" grep -q " puts=1 " "$work/remote-stats-insecure.out"
run local-put-insecure "$b" "$bin/asyncq" put -b "$local_address" -q wire from-loopback
check "a put on the broker's loopback is confirmed too (exit $code)" test "$code" = 0
check "... both puts are in the queue" test "$(puts_seen_locally)" = 2
check "the broker refused no connection" bash -c "! grep -q 'not from loopback' '$work/insecure.log'"
stop_namespace_processes "$b"

# A replica (a group of one) without keys: its replicas' port takes
# connections from loopback only, unless --insecure.
for mode in default insecure; do
  echo "== a replica without keys, $mode: a connection to its replicas' port from afar"
  flags=(--peers "$subnet.1:5557" --node-id 1 --data-dir "$work/lone-$mode")
  [ "$mode" = default ] || flags+=(--insecure)
  start_broker "$b" "lone-$mode" --bind 'tcp://*:5557' "${flags[@]}"
  raft_attack "$c" "$subnet.1" 5559 none
  run "lone-$mode-put" "$b" "$bin/asyncq" put -b "$local_address" -q wire after
  check "$mode: a put on the replica's loopback is still confirmed (exit $code)" test "$code" = 0
  if [ "$mode" = default ]; then
    check "default: the connection from $subnet.2 was closed, and the log says why" \
      grep -q "replication connection from $subnet.2:[0-9]* closed: not from loopback" \
      "$work/lone-default.log"
  else
    check "insecure: the connection was let in (nothing refused in the log)" \
      bash -c "! grep -q 'replication connection' '$work/lone-insecure.log'"
  fi
  stop_namespace_processes "$b"
done

# ----------------------------------------------------------------------
# 3. The replicas' own port (PORT+2)

# A group of three replicas on one namespace's loopback (PORT 5557, 5567,
# 5577: their replication ports 5559, 5569, 5579), a producer putting
# items.txt to it; tcpdump records the replication ports.
r=$tag-r
namespaces+=("$r")
ports=(5557 5567 5577)
peers=127.0.0.1:5557,127.0.0.1:5567,127.0.0.1:5577
start_group() { # name, then for each replica its flags, ending in --
  local name=$1 k=0; shift
  ip netns add "$r"
  ip netns exec "$r" ip link set lo up
  ip netns exec "$r" tcpdump -i lo --immediate-mode -B 65536 -U -Z root -s 0 \
    -w "$work/$name.pcap" "tcp port 5559 or tcp port 5569 or tcp port 5579" 2> "$work/$name.tcpdump" &
  if ! wait_for 100 grep -q 'listening on' "$work/$name.tcpdump"; then
    echo "FAILED: tcpdump did not start"; cat "$work/$name.tcpdump"; exit 1
  fi
  for k in 1 2 3; do
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    start_replica "$name" "$k" "${flags[@]}"
  done
}
replica_pids=()
start_replica() { # name, k, its flags: replica k (from 1), its output and log appended to
  local name=$1 k=$2; shift 2
  ip netns exec "$r" "$bin/asyncq-broker" --bind "127.0.0.1:${ports[$((k - 1))]}" \
    --peers "$peers" --node-id "$k" --data-dir "$work/$name-data-$k" \
    --metrics "127.0.0.1:$((9190 + k))" "$@" \
    >> "$work/$name-$k.out" 2>> "$work/$name-$k.log" &
  replica_pids[$k]=$!
}
put_to_group() { # name, output name, env...: puts items.txt; its exit code in $code
  local name=$1 out=$2; shift 2
  code=0
  # Replicas 1 and 2: replica 3 of the second group has another key.
  ip netns exec "$r" env "$@" timeout -k 5 60 "$bin/asyncq-producer" \
    -b 127.0.0.1:5557,127.0.0.1:5567 -q wire \
    --stdin --quiet < "$work/items.txt" > "$work/$out.out" 2>&1 || code=$?
}
stop_group() { # name, complete (a command): tcpdump stopped once it says the capture is whole
  wait_for 100 "$2" || true
  stop_namespace_processes "$r"
  ip netns del "$r"
}
# Every item crossed to both followers, in clear: four markers each, twice.
rplain_complete() { test "$(occurrences "$work/rplain.pcap" "$marker")" -ge $((2 * items * 4)); }
# Items.txt put twice, to replica 2 at least (replica 3 is refused), boxed: more bytes.
rcurve_complete() { file_larger "$work/rcurve.pcap" $((2 * item_bytes)); }

echo "== replicas without keys (the control)"
start_group rplain -- -- --
put_to_group rplain rplain-put ASYNCQ_CURVE_SECRET= ASYNCQ_SERVER_KEY=
check "without keys: the group confirmed every put (exit $code)" test "$code" = 0
stop_group rplain rplain_complete
rplain_markers=$(occurrences "$work/rplain.pcap" "$marker")
echo "   without keys: the marker $rplain_markers times between the replicas"
check "without keys, the items cross between replicas in clear (the control)" \
  test "$rplain_markers" -ge $((items * 4))

echo "== replicas with the broker's key; then replica 3 with another key"
mkdir -p "$keys/other"
"$bin/asyncq" keygen broker --dir "$keys/other" --role admin > /dev/null
good=(--curve-secret "$keys/broker.key_secret" --clients "$keys/clients")
# A new group's first election takes every replica (README, replicas):
# replica 3 is in it, then starts again with another key.
start_group rcurve "${good[@]}" -- "${good[@]}" -- "${good[@]}" --
code=0
ip netns exec "$r" env ASYNCQ_CURVE_SECRET="$keys/producer.key_secret" \
  ASYNCQ_SERVER_KEY="$keys/broker.key" timeout -k 5 60 "$bin/asyncq" put \
  -b "$peers" -q first x > "$work/rcurve-first.out" 2>&1 || code=$?
check "with keys: the group of three confirmed a first put (exit $code)" test "$code" = 0
kill -9 "${replica_pids[3]}"
wait "${replica_pids[3]}" 2> /dev/null || true
start_replica rcurve 3 --curve-secret "$keys/other/broker.key_secret" --clients "$keys/clients"
put_to_group rcurve rcurve-put ASYNCQ_CURVE_SECRET="$keys/producer.key_secret" \
  ASYNCQ_SERVER_KEY="$keys/broker.key"
check "with keys: replicas 1 and 2 confirmed every put without replica 3 (exit $code)" \
  test "$code" = 0
# An attacker on each serving replica's port.
for port in 5559 5569; do raft_attack "$r" 127.0.0.1 "$port" raft forged huge; done
raft_attack "$r" 127.0.0.1 5559 silent
put_to_group rcurve rcurve-after ASYNCQ_CURVE_SECRET="$keys/producer.key_secret" \
  ASYNCQ_SERVER_KEY="$keys/broker.key"
check "after the attacks, a put is still confirmed (exit $code)" test "$code" = 0
# What replica 1's /metrics counted of the connections it took: the clear
# raft message and the huge preamble (protocol), the forged proof (key),
# the silent one (timeout).
refused() { # cause: replica 1's count of connections taken and refused for it
  ip netns exec "$r" /usr/bin/python3 - "$1" <<'PYTHON'
import re, sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:9191/metrics", timeout=5).read().decode()
line = 'asyncq_replica_connections_refused_total{direction="in",cause="%s"} ' % sys.argv[1]
print(sum(int(l[len(line):]) for l in body.splitlines() if l.startswith(line)))
PYTHON
}
for cause in protocol:2 key:1 timeout:1; do
  count=$(refused "${cause%:*}" || echo none)
  check "replica 1's /metrics counts its refused connections: ${cause%:*} $count (at least ${cause#*:})" \
    test "$count" != none -a "${count:-0}" -ge "${cause#*:}"
done
stop_group rcurve rcurve_complete
rcurve_markers=$(occurrences "$work/rcurve.pcap" "$marker")
echo "   with keys: the marker $rcurve_markers times between the replicas" \
  "($(stat -c %s "$work/rcurve.pcap") bytes captured)"
check "with keys, the capture holds the replicated items ($(stat -c %s "$work/rcurve.pcap") bytes)" \
  rcurve_complete
check "with keys, the items' marker is not in the capture" test "$rcurve_markers" = 0
grep -h "replication connection" "$work"/rcurve-?.log | sed 's/^/   /' | sort | uniq -c | awk 'NR <= 12' || true
check "replica 3, with another key, was refused: its proof was wrong" \
  grep -q "replication connection to 127.0.0.1:55[67]9 closed: its proof of the group's key is wrong" \
  "$work/rcurve-3.log"
check "... and replicas 1 and 2 found replica 3's proof wrong too" \
  grep -q "replication connection to 127.0.0.1:5579 closed: its proof of the group's key is wrong" \
  "$work/rcurve-1.log" "$work/rcurve-2.log"
check "the attacker's clear raft message was refused" \
  grep -q "closed: not an asyncq replica's handshake" "$work/rcurve-1.log" "$work/rcurve-2.log"
check "the attacker's preamble claiming a 1 TiB address was refused" \
  grep -q "connection from 127.0.0.1:[0-9]* closed: not a replica's preamble" \
  "$work/rcurve-1.log" "$work/rcurve-2.log"
check "the attacker's connection that said nothing was closed after 5 s" \
  grep -q "connection from 127.0.0.1:[0-9]* closed: no handshake within 5 s" "$work/rcurve-1.log"
check "the attacker's made-up handshake was refused" \
  grep -q "connection from 127.0.0.1:[0-9]* closed: its proof of the group's key is wrong" \
  "$work/rcurve-1.log" "$work/rcurve-2.log"

if [ "$fail" != 0 ]; then
  for log in "$work"/*.log; do echo "--- $log"; cat "$log"; done
fi
exit $fail
