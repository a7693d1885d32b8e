#!/usr/bin/env bash
# Real containers: starts a Docker daemon of its own, builds a Debian base
# image with debootstrap (no image can be pulled), builds asyncq's image on it,
# runs docker-compose with 3 producers, 5 consumers and the join, and checks
# that every item was acked and the join completed; then the same with three
# shards (docker-compose.shards.yml), and with one shard as a group of three
# replicas (docker-compose.replicas.yml) whose leader's container is killed
# mid-run.
#
#   tests/deploy/containers.sh        (as root; exit 77 = skipped)
#   ASYNCQ_CONTAINERS_PHASES="single shards replicas" tests/deploy/containers.sh
#                                     (the phases to run; all by default)
#
# Everything it makes goes when it ends: containers, images, networks, the
# daemon (stopped by its PID), its data, docker0, the firewall rules the daemon
# added and net.ipv4.ip_forward as it was. Where the daemon cannot start, it
# says so and exits 77, which CI reports as skipped, not passed.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
mirror=${ASYNCQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
producers=3 consumers=5 per_producer=200
phases=" ${ASYNCQ_CONTAINERS_PHASES:-single shards replicas} "
skip() { echo "SKIPPED: $*"; exit 77; }
phase() { [[ "$phases" == *" $1 "* ]]; }
for name in $phases; do
  case $name in single|shards|replicas) ;; *) echo "unknown phase '$name'" >&2; exit 2 ;; esac
done

[ "$(id -u)" = 0 ] || skip "starting dockerd needs root"
for tool in dockerd /usr/bin/docker docker-compose debootstrap iptables-save; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install docker.io docker-compose debootstrap)"
done
# Debian's client, which builds without BuildKit; another docker may be first on PATH.
docker() { /usr/bin/docker "$@"; }
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

work=$(mktemp -d /var/tmp/asyncq-containers.XXXXXX)
project=asyncqtest$$
export DOCKER_HOST=unix://$work/docker.sock
ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
had_docker0=0; ip link show docker0 >/dev/null 2>&1 && had_docker0=1
if command -v nft >/dev/null && iptables --version | grep -q nf_tables; then
  firewall=nft; nft list ruleset > "$work/firewall.before"
else
  firewall=legacy; iptables-save > "$work/firewall.before"
fi
dockerd_pid=

cleanup() {
  set +e
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    docker-compose -p "$project" -f "$top/docker-compose.yml" down --volumes --remove-orphans >/dev/null 2>&1
    docker-compose -p "${project}s" -f "$top/docker-compose.yml" -f "$top/docker-compose.shards.yml" \
      down --volumes --remove-orphans >/dev/null 2>&1
    docker-compose -p "${project}r" -f "$top/docker-compose.yml" -f "$top/docker-compose.replicas.yml" \
      down --volumes --remove-orphans >/dev/null 2>&1
    docker rm -f $(docker ps -aq) >/dev/null 2>&1
    docker system prune -af >/dev/null 2>&1 # images and networks
    kill "$dockerd_pid"
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$dockerd_pid" 2>/dev/null
  fi
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ "$had_docker0" = 1 ] || ip link del docker0 2>/dev/null
  if [ "$firewall" = nft ]; then
    nft flush ruleset && nft -f "$work/firewall.before"
  else
    for table in $(iptables-save | sed -n 's/^\*//p'); do
      iptables -t "$table" -F; iptables -t "$table" -X
    done
    iptables -P FORWARD ACCEPT
    iptables-restore < "$work/firewall.before"
  fi
  echo "$ip_forward" > /proc/sys/net/ipv4/ip_forward
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting dockerd (data in $work)"
# --bridge=none: no docker0 (compose makes a network of its own), so nothing
# clashes with a daemon the machine may already run.
dockerd --data-root "$work/root" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" --bridge=none \
  --host "$DOCKER_HOST" > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 150); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || break
  sleep 0.2
done
if ! docker info >/dev/null 2>&1; then
  tail -n 5 "$work/dockerd.log"
  skip "the Docker daemon cannot start on this machine (its log is above)"
fi

echo "== base image: debootstrap --variant=minbase bookworm ($mirror)"
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log"; exit 1; }
tar -C "$work/rootfs" -c . | docker import - asyncq-base:containers-test >/dev/null
rm -rf "$work/rootfs"

echo "== docker build"
# The build's RUN steps use the host's network: the daemon's bridge may not
# reach the Debian mirror from here.
docker build --network host -q -t asyncq:containers-test \
  --build-arg BASE_IMAGE=asyncq-base:containers-test \
  --build-arg RUNTIME_IMAGE=asyncq-base:containers-test --build-arg DEBIAN_MIRROR="$mirror" "$top"

export ASYNCQ_IMAGE=asyncq:containers-test ASYNCQ_COUNT=$per_producer \
  ASYNCQ_PRODUCER_MAX_SLEEP=0.05 ASYNCQ_CONSUMER_MAX_SLEEP=0.2 ASYNCQ_JOIN_TIMEOUT=120
keys=/var/lib/asyncq/keys
fail=0
check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
# What `$1 asyncq stats` says the queue `kept` holds, once it answers.
kept_queued() {
  local queued=""
  for _ in $(seq 150); do
    queued=$("$1" asyncq stats --queue kept 2>/dev/null | sed -n 's/.* queued=\([0-9]*\).*/\1/p') || true
    [ -n "$queued" ] && break
    sleep 0.2
  done
  echo "$queued"
}

if phase single; then
echo "== docker-compose up: $producers producers x $per_producer items, $consumers consumers, join"
compose() { docker-compose -p "$project" -f "$top/docker-compose.yml" "$@"; }
# The broker, consumers and producers first; the broker container restarts
# once a third of the puts are in: producers send again what it had not
# confirmed, consumers come back, and nothing is lost (it is durable). The
# join starts once every producer has exited (each exits 0 only when all its
# puts are confirmed), as the compose file's dependency says; it is started
# here without that dependency check, which would race with the restart.
# A command in the broker's container with the admin's key.
admin() { compose exec -T -e ASYNCQ_CURVE_SECRET=$keys/admin.key_secret \
  -e ASYNCQ_SERVER_KEY=$keys/broker.key broker "$@"; }
healthy() {
  for _ in $(seq 300); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q broker)")" = healthy ] && return 0
    sleep 0.2
  done
  return 1
}
timeout 600 docker-compose -p "$project" -f "$top/docker-compose.yml" up -d --no-build \
  --scale producer=$producers --scale consumer=$consumers broker producer consumer
puts=0
for _ in $(seq 300); do
  puts=$(admin asyncq stats --queue default 2>/dev/null | sed -n 's/.* puts=\([0-9]*\).*/\1/p') || true
  [ "${puts:-0}" -ge $((producers * per_producer / 3)) ] && break
  sleep 0.2
done
compose restart broker >/dev/null 2>&1 && healthy && touch "$work/restarted" \
  && echo "== broker restarted mid-run (after ${puts:-0} puts)"
for container in $(compose ps -q producer); do
  timeout 300 docker wait "$container" >/dev/null
done
compose up -d --no-build --no-deps join
join_status=$(timeout 180 docker wait "$(compose ps -q join)")
echo "image: $(docker image inspect -f '{{.Size}}' asyncq:containers-test) bytes"
compose logs --no-color join
compose logs --no-color producer | grep "done:"

stats=$(admin asyncq stats --queue default)
echo "broker: $stats"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $stats"; }
check "join exited 0" test "$join_status" = 0
check "join printed its answer" grep -q "^join.*joined default" <(compose logs --no-color join)
check "every producer confirmed its items" test \
  "$(compose logs --no-color producer | grep -c "done: $per_producer items confirmed")" = $producers
# The counters started again with the broker: every item confirmed was
# acked (the join) and nothing is left.
check "the broker was restarted mid-run" test -f "$work/restarted"
check "nothing outstanding" test "$(field outstanding)" = 0
check "nothing queued or dead" test "$(field queued)$(field dead)" = 00
check "$consumers consumers connected" test "$(field consumers)" = $consumers
check "broker healthy (HEALTHCHECK)" test \
  "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q broker)")" = healthy
check "runs as a non-root user" test "$(compose exec -T broker id -u)" != 0

# CURVE is on: a client outside without a key gets nowhere; one added as the
# README shows (a pair made in the keys volume, SIGHUP, the files copied out)
# gets its stats through the published port.
outside=$work/outside
mkdir -p "$outside"
check "a client without a key is refused" \
  test "$("$top/build/bin/asyncq" stats -b 127.0.0.1:5557 >/dev/null 2>&1; echo $?)" != 0
compose run --rm -T keys asyncq keygen me=admin --dir $keys --clients $keys/clients >/dev/null
compose kill -s SIGHUP broker >/dev/null
compose run --rm -T keys cat $keys/me.key_secret > "$outside/me.key_secret"
compose run --rm -T keys cat $keys/broker.key > "$outside/broker.key"
chmod 600 "$outside/me.key_secret"
check "a client added from outside gets its stats" "$top/build/bin/asyncq" stats -b 127.0.0.1:5557 \
  --curve-secret "$outside/me.key_secret" --server-key "$outside/broker.key" --queue default

# docker compose down && up keeps what is queued (the data volume).
compose stop consumer >/dev/null 2>&1
compose run --rm -T -e ASYNCQ_COUNT=25 -e ASYNCQ_QUEUE=kept producer >/dev/null 2>&1
compose down >/dev/null 2>&1
compose up -d --no-build broker >/dev/null 2>&1
kept=$(kept_queued admin)
echo "after down and up: queue kept: ${kept:-no answer} queued"
check "docker compose down && up keeps the 25 queued items" test "${kept:-0}" = 25
compose down --volumes >/dev/null 2>&1
fi # single

if phase shards; then
# Three durable shards (docker-compose.shards.yml over the file): producers
# and consumers given the first broker use all three, the join covers them,
# and down && up keeps what each holds.
echo "== docker-compose with three broker shards: 2 producers x $per_producer items, 3 consumers"
shards() { docker-compose -p "${project}s" -f "$top/docker-compose.yml" \
  -f "$top/docker-compose.shards.yml" "$@"; }
shard_admin() { shards exec -T -e ASYNCQ_CURVE_SECRET=$keys/admin.key_secret \
  -e ASYNCQ_SERVER_KEY=$keys/broker.key broker "$@"; }
timeout 600 docker-compose -p "${project}s" -f "$top/docker-compose.yml" \
  -f "$top/docker-compose.shards.yml" up -d --no-build --scale producer=2 --scale consumer=3 \
  broker broker-1 broker-2 dashboard producer consumer >/dev/null 2>&1
for container in $(shards ps -q producer); do
  timeout 300 docker wait "$container" >/dev/null
done
shards up -d --no-build --no-deps join >/dev/null 2>&1
join_status=$(timeout 180 docker wait "$(shards ps -q join)")
shards logs --no-color join
per_broker=$(shard_admin asyncq stats --queue default --brokers)
echo "$per_broker"
check "shards: join exited 0" test "$join_status" = 0
check "shards: every producer confirmed its items" test \
  "$(shards logs --no-color producer | grep -c "done: $per_producer items confirmed")" = 2
check "shards: every shard took puts" test \
  "$(grep -c ' puts=[1-9]' <<<"$per_broker")" = 3
check "shards: all $((2 * per_producer)) acked, nothing outstanding" test \
  "$(shard_admin asyncq stats --queue default | sed -n 's/.* acked=\([0-9]*\) .*outstanding=\([0-9]*\).*/\1 \2/p')" \
  = "$((2 * per_producer)) 0"
# The dashboard service: the three brokers' numbers added up, from the host.
service_http() { # method, path: the answer's body, with the token the keys service wrote
  /usr/bin/python3 - "$1" "http://127.0.0.1:9560$2" "$(shards exec -T dashboard cat \
    /var/lib/asyncq/keys/metrics.token)" <<'PYTHON'
import sys, urllib.request
method, url, token = sys.argv[1], sys.argv[2], sys.argv[3].strip()
request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers={"Authorization": "Bearer " + token})
print(urllib.request.urlopen(request, timeout=10).read().decode())
PYTHON
}
service_stats=$(service_http GET /stats.json 2>&1 | /usr/bin/python3 -c '
import json, sys
stats = json.load(sys.stdin)
queue = next(q for q in stats["queues"] if q["name"] == "default")
print(queue["acks_total"], len([s for s in stats["shards"] if "error" not in s]))' 2>&1)
echo "dashboard: default acked, shards answering: $service_stats"
check "shards: the dashboard service adds the 3 shards up" \
  test "$service_stats" = "$((2 * per_producer)) 3"
check "shards: its /metrics has every shard up" \
  test "$(service_http GET /metrics | grep -c '^asyncq_service_shard_up{shard="[012]"} 1$')" = 3
check "shards: an action with the token is done by every shard" \
  grep -q '"queue":"default","purged_dead":0' <<<"$(service_http POST '/api/purge-dead?queue=default')"
shards stop consumer >/dev/null 2>&1
shards run --rm -T -e ASYNCQ_COUNT=30 -e ASYNCQ_QUEUE=kept -e ASYNCQ_MAX_SLEEP=0 producer \
  >/dev/null 2>&1
shards down >/dev/null 2>&1
shards up -d --no-build broker broker-1 broker-2 >/dev/null 2>&1
kept=$(kept_queued shard_admin)
echo "shards after down and up: queue kept: ${kept:-no answer} queued"
check "shards: down && up keeps the 30 queued items" test "${kept:-0}" = 30
shards down --volumes >/dev/null 2>&1
fi # shards

if phase replicas; then
# One shard as a group of three durable replicas (docker-compose.replicas.yml
# over the file): producers, consumers and the join, given all three, find
# the leader. The leader's container is killed while 2 more producers put:
# the other two elect another, every put is confirmed, a join covers them and
# nothing is lost; the killed one, started again, follows the new leader.
# Then its volume is lost, and it comes back as the compose file's header
# says (removed, added under a new id, started with ASYNCQ_JOIN).
echo "== docker-compose with a group of three replicas: 2 producers x $per_producer items, 3 consumers, join; the leader killed under 2 more"
replicas_files=(-p "${project}r" -f "$top/docker-compose.yml" -f "$top/docker-compose.replicas.yml")
replicas() { docker-compose "${replicas_files[@]}" "$@"; }
group=broker:5557,broker-1:5557,broker-2:5557
replicas_failed=$fail
replica_container() { replicas ps -q "$1"; }
# A command with the admin's key in replica $1's container, given the whole
# group: the request goes to the leader.
replica_admin() {
  local service=$1; shift
  docker exec -e ASYNCQ_CURVE_SECRET=$keys/admin.key_secret -e ASYNCQ_SERVER_KEY=$keys/broker.key \
    -e ASYNCQ_BROKER=$group "$(replica_container "$service")" "$@"
}
# The service that leads, as `asyncq replica list` through replica $1 says,
# once one does that is not $2 (within $3 seconds); empty if none.
leader_via() {
  local deadline=$((SECONDS + $3)) address
  while [ $SECONDS -lt $deadline ]; do
    address=$(replica_admin "$1" asyncq replica list 2>/dev/null \
      | sed -n 's/.* address=\([^ :]*\):[0-9]* .*role=leader.*/\1/p') || true
    [ -n "$address" ] && [ "$address" != "$2" ] && { echo "$address"; return 0; }
    sleep 0.2
  done
  return 0
}
# The line of `asyncq replica list` through replica $1 that matches $2, once
# one does (within 60 s); empty if none.
replica_line() {
  local line
  for _ in $(seq 300); do
    line=$(replica_admin "$1" asyncq replica list 2>/dev/null | grep -- "$2") && { echo "$line"; return 0; }
    sleep 0.2
  done
  return 0
}
# What `asyncq stats` through replica $1 says of field $2 of the queue default.
replica_field() {
  replica_admin "$1" asyncq stats --queue default 2>/dev/null \
    | sed -n "s/.* $2=\([0-9]*\).*/\1/p" || true
}
health() { docker inspect -f '{{.State.Health.Status}}' "$(replica_container "$1")" 2>/dev/null || true; }
# Every producer container given exits 0 (within 300 s).
producers_done() {
  local container status ok=0
  for container in "$@"; do
    status=$(timeout 300 docker wait "$container" 2>/dev/null) || status=timeout
    [ "$status" = 0 ] || { echo "producer $container: exit $status"; ok=1; }
  done
  return "$ok"
}
# The join, once, without its dependencies: 0 if it completed.
replicas_join() {
  local status
  status=$(timeout 180 docker-compose "${replicas_files[@]}" run --rm -T --no-deps join 2>&1 \
    | tee "$work/replicas-join" >/dev/null; echo "${PIPESTATUS[0]}")
  grep "joined" "$work/replicas-join" || true
  [ "$status" = 0 ] && grep -q "^joined default" "$work/replicas-join"
}
replicas_started=$SECONDS
# The producers and consumers wait for every replica healthy (a follower is
# once its group has a leader), as the file's dependencies say.
if ! timeout 600 docker-compose "${replicas_files[@]}" up -d --no-build --scale producer=2 \
  --scale consumer=3 broker broker-1 broker-2 producer consumer >"$work/replicas-up" 2>&1; then
  tail -n 5 "$work/replicas-up"
  replicas logs --no-color --tail 20 broker broker-1 broker-2
  echo "FAILED: replicas: the group did not come up"
  exit 1
fi
echo "group up, healthy with its first leader, in $((SECONDS - replicas_started)) s"
check "replicas: every replica healthy (a follower through its leader)" \
  test "$(health broker) $(health broker-1) $(health broker-2)" = "healthy healthy healthy"
# shellcheck disable=SC2046 # one container id a word
check "replicas: every producer confirmed its items" producers_done $(replicas ps -q producer)
check "replicas: the join completed" replicas_join
leader=$(leader_via broker 0 60)
echo "leader: ${leader:-none found}"
check "replicas: a leader" test -n "$leader"
leader=${leader:-broker}
survivor=broker; [ "$leader" != broker ] || survivor=broker-1
# Two producers more; the leader's container is killed once they have put
# half as many as one puts, its volume left as it was.
before=$(replica_field "$survivor" puts)
more=()
for name in late-1 late-2; do
  container=$(replicas run -d --no-deps -e ASYNCQ_NAME=$name producer 2>/dev/null) || true
  more+=("$container")
done
for _ in $(seq 150); do
  [ "$(replica_field "$survivor" puts)" -ge $((${before:-0} + per_producer / 2)) ] 2>/dev/null && break
  sleep 0.2
done
running=$(docker inspect -f '{{.State.Running}}' "${more[@]}" 2>/dev/null | grep -c true) || true
echo "killing $leader after $(replica_field "$survivor" puts) puts, under $running running producers, at $(date -u +%T)"
docker kill "$(replica_container "$leader")" >/dev/null || true
killed_at=$SECONDS
check "replicas: the leader was killed while producers were putting" test "${running:-0}" -gt 0
new_leader=$(leader_via "$survivor" "$leader" 60)
echo "new leader: ${new_leader:-none found} (found through $survivor $((SECONDS - killed_at)) s after the kill)"
[ -z "$new_leader" ] || replicas logs --no-color "$new_leader" | grep "leads its group" | tail -n 1
check "replicas: the other two elected another leader" test -n "$new_leader"
check "replicas: the producers put through the kill had every item confirmed" producers_done "${more[@]}"
for container in "${more[@]}"; do docker logs "$container" 2>&1 | grep "done:" || true; done
check "replicas: a join after the kill completed" replicas_join
stats=$(replica_admin "$survivor" asyncq stats --queue default 2>&1) || true
echo "after the kill: $stats"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $stats"; }
check "replicas: nothing lost: all $((4 * per_producer)) put and acked, nothing outstanding" \
  test "$(field puts) $(field acked) $(field outstanding) $(field queued) $(field dead)" \
  = "$((4 * per_producer)) $((4 * per_producer)) 0 0 0"
# shellcheck disable=SC2046 # one container id a word
consumers=$(docker inspect -f '{{.State.Running}}/{{.RestartCount}}' $(replicas ps -q consumer) \
  | sort | uniq -c | xargs) || true
check "replicas: the 3 consumers carried on with the new leader (running/restarts: $consumers)" \
  test "$consumers $(field consumers)" = "3 true/0 3"
# The killed one, started again on its volume, follows the new leader and
# has caught up.
docker start "$(replica_container "$leader")" >/dev/null || true
restarted_at=$SECONDS
caught_up=$(replica_line "$survivor" " address=$leader:5557 kind=voter role=follower .*lag=0")
echo "restarted $leader: ${caught_up:-not caught up} ($((SECONDS - restarted_at)) s)"
check "replicas: the killed replica, started again, follows and has caught up" test -n "$caught_up"
check "replicas: the new leader leads still" test "$(leader_via "$survivor" 0 30)" = "$new_leader"
for _ in $(seq 100); do [ "$(health "$leader")" = healthy ] && break; sleep 0.2; done
check "replicas: the restarted replica is healthy" test "$(health "$leader")" = healthy
# Its volume lost: as the compose file's header says, removed from the group,
# added again (a new id), and started with ASYNCQ_JOIN and that id, and an
# empty ASYNCQ_PEERS, on an empty volume, it becomes a voter and catches up.
old_id=$(sed -n 's/^id=\([0-9]*\) .*/\1/p' <<<"$caught_up")
replicas rm -sf "$leader" >/dev/null 2>&1 || true
volume=data; [ "$leader" = broker ] || volume=data-${leader#broker-}
docker volume rm "${project}r_$volume" >/dev/null || true
removed=$(replica_admin "$survivor" asyncq replica remove "${old_id:-0}" 2>&1) || true
echo "$removed"
added=$(replica_admin "$survivor" asyncq replica add "$leader:5557" 2>/dev/null) || true
echo "$added"
new_id=$(sed -n 's/^id=\([0-9]*\) .*kind=standby.*/\1/p' <<<"$added")
check "replicas: replica ${old_id:-?} removed, and added again as ${new_id:-?}" \
  test "$removed" = "removed id=$old_id address=$leader:5557" -a -n "$new_id"
cat > "$work/replicas-joined.yml" <<JOINED
services:
  $leader:
    environment:
      ASYNCQ_JOIN: $leader:5557
      ASYNCQ_NODE_ID: ${new_id:-0}
JOINED
docker-compose "${replicas_files[@]}" -f "$work/replicas-joined.yml" up -d --no-build --no-deps \
  "$leader" >/dev/null 2>&1 || true
joined=$(replica_line "$survivor" "^id=$new_id address=$leader:5557 kind=voter role=follower .*lag=0")
echo "${joined:-replica $new_id: not a voter that has caught up}"
check "replicas: on an empty volume, it joined as ${new_id:-?} and is a voter that has caught up" \
  test -n "$joined"
if [ "$fail" != "$replicas_failed" ]; then
  replicas logs --no-color --tail 20 broker broker-1 broker-2
fi
echo "replicas phase: $((SECONDS - replicas_started)) s"
replicas down --volumes --remove-orphans >/dev/null 2>&1
fi # replicas
exit $fail
