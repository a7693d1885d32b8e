#!/usr/bin/env bash
# What the HTTP port costs the per-item path: asyncq-bench in memory with
# and without --metrics, the latter with a scraper fetching /metrics every
# 100 ms, interleaved in one run; prints each run and the medians.
#
#   bench/metrics.sh BIN_DIR [ITEMS] [ROUNDS] [PxC]     (a Release build)
set -euo pipefail

bin=$(cd "${1:?usage: metrics.sh BIN_DIR [ITEMS] [ROUNDS] [PxC]}" && pwd)
items=${2:-200000} rounds=${3:-3} shape=${4:-2x2}
producers=${shape%x*} consumers=${shape#*x}
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scraper=
trap '[ -n "$scraper" ] && kill "$scraper" 2>/dev/null; true' EXIT

# Fetches /metrics every 100 ms (a broker not up yet, or between runs, is skipped).
scrape() {
  local scrapes=0
  while :; do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/metrics" && scrapes=$((scrapes + 1))
    sleep 0.1
  done
}

run() { # label, extra args...: prints items/s
  local label=$1; shift
  "$bin/asyncq-bench" -p "$producers" -c "$consumers" -n "$items" "$@" 2>/dev/null \
    | sed -n 's/.* \([0-9.]*\) items\/s.*/\1/p' | tail -1
}

plain=() metrics=()
for round in $(seq "$rounds"); do
  a=$(run plain)
  scrape & scraper=$!
  b=$(run metrics --broker-arg --metrics --broker-arg "127.0.0.1:$port")
  kill "$scraper"; wait "$scraper" 2>/dev/null || true; scraper=
  echo "round $round: without --metrics $a items/s; with --metrics and a scrape every 100 ms $b items/s"
  plain+=("$a") metrics+=("$b")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "medians ($shape, $items items): without $(median "${plain[@]}"), with $(median "${metrics[@]}") items/s"
