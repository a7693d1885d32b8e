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
cleanup() {
  set +e
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

# A Prometheus server on a free loopback port, scraping the broker every second.
port=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: asyncq
    static_configs:
      - targets: ['${url#http://}']
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

# Still serving: a put and its ack move the numbers Prometheus sees.
echo one-more | "$bin/asyncq-producer" -b "$address" -q known --stdin --quiet
check "a new put reaches Prometheus (31)" wait_for 100 answers 'asyncq_puts_total{queue="known"}' 31

if [ "$fail" != 0 ]; then
  echo "--- broker log"; cat "$work/broker.log"; echo "--- prometheus log"; tail -20 "$work/prometheus.log"
fi
exit $fail
