# What hosts.sh and shards.sh share, sourced by both: "hosts" that are Linux
# network namespaces, each with its own address, joined by veth pairs on a
# bridge that lives in a namespace of its own; nothing is added to the
# machine's own network.
#
# Before sourcing it, a test sets `tag` and `subnet` (its own, so that the
# tests can run at once) and `hosts`, the names of its hosts. It then has:
#   - skipped (exit 77) unless run as root with ip (iproute2);
#   - `work`, a folder, and `pids`, where it adds the processes it starts:
#     at exit every process of the namespaces is killed and waited for,
#     the namespaces and the folder removed (cleanup);
#   - `ns HOST` (the namespace's name), `on HOST COMMAND...` (run there),
#     `check DESCRIPTION COMMAND...` (ok or FAILED; `fail` is then 1);
#   - `netns_up ETC_HOSTS`: makes the namespaces, host I of `hosts` at
#     $subnet.I (from 1) on its eth0, with the /etc/hosts that the
#     function ETC_HOSTS prints;
#   - `netns_keys` (with `bin` set): CURVE keys in $keys for the broker, and
#     for producer, consumer and ctl (admin) clients it lets in; `as ROLE
#     HOST COMMAND...` runs a command there with that client's keys.

skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"

work=$(mktemp -d)
pids=()
fail=0
had_etc_netns=0; [ -d /etc/netns ] && had_etc_netns=1

ns() { echo "$tag-$1"; }
on() { local host=$1; shift; ip netns exec "$(ns "$host")" "$@"; }

check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}

cleanup() {
  set +e
  for host in "${hosts[@]}" sw; do
    ip netns pids "$(ns "$host")" 2>/dev/null | xargs -r kill -9
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for host in "${hosts[@]}" sw; do
    ip netns del "$(ns "$host")" 2>/dev/null
    rm -rf "/etc/netns/$(ns "$host")"
  done
  [ "$had_etc_netns" = 1 ] || rmdir /etc/netns 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

netns_up() { # function that prints a host's /etc/hosts
  local etc_hosts=$1 host i=1
  echo "== hosts: ${hosts[*]} on $subnet.0/24"
  ip netns add "$(ns sw)"
  on sw ip link add br0 type bridge
  on sw ip link set br0 up
  on sw ip link set lo up
  for host in "${hosts[@]}"; do
    ip netns add "$(ns "$host")"
    ip link add "$tag$i" type veth peer name "${tag}p$i"
    ip link set "$tag$i" netns "$(ns "$host")"
    ip link set "${tag}p$i" netns "$(ns sw)"
    on sw ip link set "${tag}p$i" master br0 up
    on "$host" ip link set "$tag$i" name eth0
    on "$host" ip addr add "$subnet.$i/24" dev eth0
    on "$host" ip link set eth0 up
    on "$host" ip link set lo up
    mkdir -p "/etc/netns/$(ns "$host")"
    "$etc_hosts" > "/etc/netns/$(ns "$host")/hosts"
    i=$((i + 1))
  done
}

netns_keys() {
  keys=$work/keys
  mkdir -p "$keys/clients"
  "$bin/asyncq" keygen broker --dir "$keys" > /dev/null
  "$bin/asyncq" keygen producer --dir "$keys" --role produce > /dev/null
  "$bin/asyncq" keygen consumer --dir "$keys" --role consume > /dev/null
  "$bin/asyncq" keygen ctl --dir "$keys" --role admin > /dev/null
  cp "$keys"/producer.key "$keys"/consumer.key "$keys"/ctl.key "$keys/clients/"
}
as() { # role (producer, consumer, ctl), host, command...
  local role=$1 host=$2; shift 2
  on "$host" env ASYNCQ_CURVE_SECRET="$keys/$role.key_secret" ASYNCQ_SERVER_KEY="$keys/broker.key" "$@"
}
