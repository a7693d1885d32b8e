#!/usr/bin/env bash
# The HTTP port as Prometheus and integrators see it:
#
#   tests/metrics/prometheus.sh BIN_DIR        (exit 77 = skipped)
#
# A broker with --metrics gets 30 puts on queue "known", 10 of them acked.
# Then: a live scrape passes `promtool check metrics`; /stats.json
# validates against docs/stats.schema.json and holds those numbers; and a
# real Prometheus server on loopback scrapes the broker and answers PromQL
# queries about the queue with exactly those numbers.
#
# The same for a service of two shards (--shards 2 --metrics PORT): the
# service's scrape on PORT (the shards' families merged, each sample with
# its shard) passes promtool, its /stats.json the schema, and Prometheus
# adds the shards up with sum without(shard), scraping the service's port or
# each shard's own.
set -euo pipefail

bin=$(cd "${1:?usage: prometheus.sh BIN_DIR}" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)
skip() { echo "SKIPPED: $*"; exit 77; }
command -v promtool >/dev/null || skip "promtool (Debian's prometheus package) is not installed"
command -v prometheus >/dev/null || skip "prometheus is not installed"
python=/usr/bin/python3
$python -c 'import jsonschema' 2>/dev/null || skip "python3-jsonschema is not installed"

work=$(mktemp -d)
pids=()
service=
cleanup() {
  set +e
  # The service first, and waited for: it stops its shards.
  if [ -n "$service" ]; then
    kill "$service" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$service" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

fail=0
check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
# Polls a condition (a command run anew each time) up to `tenths` tenths of a second.
wait_for() { # tenths, command...
  local tenths=$1; shift
  for _ in $(seq "$tenths"); do "$@" && return 0; sleep 0.1; done
  "$@"
}
has_line() { grep -q "$2" "$1" 2>/dev/null; }

"$bin/asyncq-broker" --bind tcp://127.0.0.1:0 --metrics 127.0.0.1:0 \
  > "$work/broker.out" 2> "$work/broker.log" &
pids+=($!)
wait_for 100 has_line "$work/broker.out" '^METRICS ' || { cat "$work/broker.log"; exit 1; }
address=$(sed -n 's/^READY //p' "$work/broker.out")
url=$(sed -n 's/^METRICS //p' "$work/broker.out")
echo "broker at $address, HTTP at $url"

seq 30 | "$bin/asyncq-producer" -b "$address" -q known --stdin --quiet
"$bin/asyncq-consumer" -b "$address" -q known --count 10 --credit 1 --max-sleep 0 --quiet

scrape() { $python - "$1" <<'PY'
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
PY
}

scrape "$url/metrics" > "$work/metrics.txt"
check "promtool check metrics passes on a live scrape ($(grep -c '^# HELP' "$work/metrics.txt") families)" \
  promtool check metrics < "$work/metrics.txt"
check "every family has # HELP and # TYPE" test \
  "$(grep -c '^# HELP' "$work/metrics.txt")" = "$(grep -c '^# TYPE' "$work/metrics.txt")"
check "the scrape counts the queue's puts" grep -q '^asyncq_puts_total{queue="known"} 30$' "$work/metrics.txt"

scrape "$url/stats.json" > "$work/stats.json"
check "/stats.json validates against docs/stats.schema.json and holds the queue's numbers" \
  $python - "$here/docs/stats.schema.json" "$work/stats.json" <<'PY'
import json, sys, jsonschema
schema, stats = (json.load(open(path)) for path in sys.argv[1:3])
jsonschema.validate(stats, schema)
queue = {q["name"]: q for q in stats["queues"]}["known"]
assert (queue["puts_total"], queue["acks_total"], queue["queued"]) == (30, 10, 20), queue
PY

# A service of two shards: its port and the next two, free (below the
# kernel's range for port 0).
sport=$($python - <<'PY'
import random, socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    base = random.randrange(10000, 32000)
    if all(free(base + i) for i in range(3)):
        print(base)
        break
PY
)
"$bin/asyncq-broker" --shards 2 --bind "ipc://$work/service" --metrics "127.0.0.1:$sport" \
  > "$work/service.out" 2> "$work/service.log" &
service=$!
pids+=($!)
ready_twice() { test "$(grep -c '^READY ' "$work/service.out")" = 2; }
wait_for 100 ready_twice || { cat "$work/service.log"; exit 1; }
for _ in 1 2 3; do # short-lived producers start at either shard
  seq 10 | "$bin/asyncq-producer" -b "ipc://$work/service" -q spread --stdin --quiet
done
scrape "http://127.0.0.1:$sport/metrics" > "$work/service.txt"
check "promtool check metrics passes on the service's scrape" \
  promtool check metrics < "$work/service.txt"
check "the service's scrape announces each family once" test \
  "$(grep '^# TYPE' "$work/service.txt" | sort | uniq -d | wc -l)" = 0
check "the service's scrape has both shards up, their samples labelled" \
  grep -q '^asyncq_service_shard_up{shard="1"} 1$' "$work/service.txt"
check "... and its puts add up to 30" test "$(awk '/^asyncq_puts_total\{queue="spread",shard="[01]"\} / \
  { n += $2 } END { print n }' "$work/service.txt")" = 30
scrape "http://127.0.0.1:$sport/stats.json" > "$work/service.json"
check "the service's /stats.json validates against the schema and adds the shards up" \
  $python - "$here/docs/stats.schema.json" "$work/service.json" <<'PY'
import json, sys, jsonschema
schema, stats = (json.load(open(path)) for path in sys.argv[1:3])
jsonschema.validate(stats, schema)
queue = {q["name"]: q for q in stats["queues"]}["spread"]
parts = [sum(q["puts_total"] for q in s["queues"] if q["name"] == "spread") for s in stats["shards"]]
assert queue["puts_total"] == 30 == sum(parts) and len(parts) == 2, (queue, parts)
PY

# A Prometheus server on a free loopback port, scraping the broker every second.
port=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: asyncq
    static_configs:
      - targets: ['${url#http://}']
  - job_name: service
    static_configs:
      - targets: ['127.0.0.1:$sport']
  - job_name: shards
    static_configs:
      - targets: ['127.0.0.1:$((sport + 1))', '127.0.0.1:$((sport + 2))']
YML
promtool check config "$work/prometheus.yml" > /dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port" > "$work/prometheus.log" 2>&1 &
pids+=($!)

# The value of a PromQL query's first result, or nothing.
query() { $python - "http://127.0.0.1:$port" "$1" <<'PY' 2>/dev/null
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
print(result[0]["value"][1] if result else "")
PY
}
answers() { test "$(query "$1")" = "$2"; }
check "Prometheus scraped the broker: asyncq_puts_total{queue=\"known\"} = 30" \
  wait_for 300 answers 'asyncq_puts_total{queue="known"}' 30
check "... queued items = 20" answers 'asyncq_queue_items{queue="known",state="queued"}' 20
check "... acks = 10" answers 'asyncq_acks_total{queue="known"}' 10
check "... put-to-ack histogram counted 10" answers 'asyncq_put_to_ack_seconds_count{queue="known"}' 10
check "... the scrape target is up" answers 'up{job="asyncq"}' 1

check "the service's port, summed without(shard): 30 puts" \
  wait_for 300 answers 'sum without(shard) (asyncq_puts_total{job="service",queue="spread"})' 30
check "each shard's port, summed without(instance, shard): 30 puts" \
  wait_for 300 answers 'sum without(instance, shard) (asyncq_puts_total{job="shards",queue="spread"})' 30

# Still serving: a put and its ack move the numbers Prometheus sees.
echo one-more | "$bin/asyncq-producer" -b "$address" -q known --stdin --quiet
check "a new put reaches Prometheus (31)" wait_for 100 answers 'asyncq_puts_total{queue="known"}' 31

if [ "$fail" != 0 ]; then
  echo "--- broker log"; cat "$work/broker.log"; echo "--- service log"; cat "$work/service.log"
  echo "--- prometheus log"; tail -20 "$work/prometheus.log"
fi
exit $fail
