#!/usr/bin/env bash
# benches/strategies.sh - which balance strategy to default to: fanout (built with
# benches/routes/load.yaml) in front of two counting sinks, one answering at once and one
# after 20 ms, loaded by wrk (16 connections, 10 s each, every strategy in turn, 3 rounds);
# prints requests/s and p50/p99 per strategy. Everything on 127.0.0.1, bounded in time.
#
#   benches/strategies.sh [--fanout BIN] [--rig DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RIG=$ROOT/../shared/bench FANOUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --fanout) FANOUT=$2; shift 2 ;;
    --rig) RIG=$2; shift 2 ;;
    *) echo "strategies: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD=${CARGO_TARGET_DIR:-$ROOT/target}/load
(cd "$RIG/baseline" && CARGO_TARGET_DIR=$BUILD/rig cargo build --release -q)
if [[ -z $FANOUT ]]; then
  (cd "$ROOT" && FANOUT_ROUTES=$ROOT/benches/routes/load.yaml CARGO_TARGET_DIR=$BUILD/fanout \
    cargo build --release -q --bin fanout)
  FANOUT=$BUILD/fanout/release/fanout
fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
"$BUILD/rig/release/sink" --ports 8111 --workers 1 >/dev/null 2>&1 & PIDS+=($!)
"$BUILD/rig/release/sink" --ports 8112 --workers 1 --delay-ms 20 >/dev/null 2>&1 & PIDS+=($!)
"$FANOUT" --workers 1 --data-dir "$(mktemp -d)" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/healthz && break; sleep 0.1; done
for round in 1 2 3; do
  for strategy in least_inflight round_robin random; do
    out=$(timeout 30 wrk -t1 -c16 -d10s --latency -s "$RIG/post.lua" "http://127.0.0.1:8080/strategy/$strategy" 2>&1)
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    echo "STRATEGY round=$round strategy=$strategy rps=$rps p50=$p50 p99=$p99"
  done
done
