#!/usr/bin/env bash
# benches/load.sh - the load benchmark: fanout against the physical limit, on this machine, in
# one bounded run, everything on 127.0.0.1. Prints a markdown table of ratios to the baseline
# measured in the same run (absolute numbers are noise on a shared machine).
#
#   benches/load.sh [--duration 10] [--rounds 3] [--only LIST] [--out DIR] [--rig DIR] [--fanout BIN]
#
# --rounds N runs the throughput scenarios N times, interleaved, and the table shows each
# one's median (a shared machine is noisy: one run says little). --only takes a
# --fanout BIN measures that binary (built with benches/routes/load.yaml, e.g. from an older
# commit) instead of building one. --only takes a
# comma-separated subset of: baseline,down,auth-hmac,auth-bearer,ddown-always,ddown-10ms,
# ddown-never,reject2,sign2,disk2,disk2-always,reject4,batch2,sign-batch2,h2x2,balance2,
# nginx-balance2,haproxy-balance2,balance2-c1,nginx-balance2-c1,haproxy-balance2-c1,direct-c1,
# nats1,nats-balance,memory,backlog,startup,rebuild,static.
#
# Needs the load rig (../shared/bench beside this repository, or --rig DIR) and wrk
# (installed with apt-get when missing and running as root; nginx and haproxy too, for the
# balance scenarios). Builds, in target/load/ (in
# $CARGO_TARGET_DIR/load/ when that is set):
# the rig's baseline and sink, and fanout with benches/routes/load.yaml compiled in
# (`--release`, the build users ship). Scenarios, each a rig run (wrk -t1 -c64, SUT pinned to CPU 0, load
# and sinks to CPU 1):
#   baseline  bare hyper server answering 202: the physical limit of the ingest path
#   down      fanout, every target refusing connections, drop_oldest lanes
#   auth-hmac   `down` with `auth: hmac` (HMAC-SHA256 of the raw body verified before the 202;
#               wrk sends the body's precomputed X-Signature); auth-bearer: with `auth: bearer`
#   reject2/4 fanout, reject lanes to 2 / 4 counting sinks: the sustained no-loss rate
#   sign2     `reject2` with `sign:` on both targets (Standard Webhooks headers on every
#             delivery: one HMAC per event per target)
#   batch2    reject lanes to 2 sinks, NDJSON batches; sign-batch2: the same, signed (one HMAC
#             per batch)
#   h2x2      reject lanes to 2 sinks, HTTP/2
#   ddown-*   a durable route (storage: disk) with fsync always / 10ms / never, targets down:
#             durable ingest, to compare with `down`
#   disk2     a durable route (fsync 10ms; disk2-always: fsync always) delivering to 2 sinks:
#             to compare with `reject2`
#   balance2  a balance route relaying each request to one of 2 sinks; nginx-balance2 and
#             haproxy-balance2: nginx (proxy_pass) and HAProxy doing the same
#             (benches/proxies.sh: one worker, keep-alive upstreams, least connections);
#             the -c1 variants send one request at a time, and direct-c1 posts to a sink
#             itself, so each proxy's added latency is its p50/p99 minus direct-c1's
#   nats1     fanout, one NATS target with a JetStream stream (nats-server -js on CPU 1, 256
#             publishes awaiting their PubAck), `reject`: the no-loss rate; a NATS line gives
#             the stream's count against the 202s
#   nats-balance  a balance route over NATS request/reply to examples/nats_bench.rs's echo
#             worker (on CPU 1), beside balance2 over HTTP
# then memory (1,000,000 events of 200 bytes held in 4 lanes whose targets are down), backlog
# (a durable route holding BACKLOG events, default 10,000,000, for a dead target: RSS and bytes
# on disk per event),
# start-up (exec to first 202), rebuild (a routes file edit to a rebuilt binary: a user's inner
# loop) and the size of the static, stripped binary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RIG=$ROOT/../shared/bench DURATION=10 ROUNDS=3 OUT="" FANOUT=""
ONLY=baseline,down,auth-hmac,auth-bearer,ddown-always,ddown-10ms,ddown-never,reject2,sign2,disk2,disk2-always,reject4,batch2,sign-batch2,h2x2,balance2,nginx-balance2,haproxy-balance2,balance2-c1,nginx-balance2-c1,haproxy-balance2-c1,direct-c1,nats1,nats-balance,memory,backlog,startup,rebuild,static
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rig) RIG=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --fanout) FANOUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "load: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $RIG/rig.sh ]] || { echo "load: no load rig at $RIG (use --rig DIR)" >&2; exit 2; }
for tool in nginx haproxy; do
  if ! command -v $tool >/dev/null && [[ ! -x /usr/sbin/$tool ]] && [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq $tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }
  fi
done
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; fi
  command -v wrk >/dev/null || { echo "load: wrk is missing: apt-get install -y wrk" >&2; exit 2; }
fi
OUT=${OUT:-$ROOT/target/load/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
log() { echo "load: $*" >&2; }
wanted() { [[ ,$ONLY, == *,$1,* ]]; }

# ---- builds ----------------------------------------------------------------------------
log "building the rig and fanout (release, LTO): a few minutes the first time"
BUILD=${CARGO_TARGET_DIR:-$ROOT/target}/load
(cd "$RIG/baseline" && CARGO_TARGET_DIR=$BUILD/rig cargo build --release -q)
export SINK_BIN=$BUILD/rig/release/sink
BASELINE=$BUILD/rig/release/baseline
if [[ -z $FANOUT ]]; then
  (cd "$ROOT" && FANOUT_ROUTES=$ROOT/benches/routes/load.yaml CARGO_TARGET_DIR=$BUILD/fanout \
    cargo build --release -q --bin fanout)
  FANOUT=$BUILD/fanout/release/fanout
fi

# ---- NATS: nats-server with JetStream, and the official client's helper ------------------
nats_scenarios() {
  local server=/usr/sbin/nats-server
  [[ -x $server ]] || server=$(command -v nats-server || true)
  if [[ -z $server && $(id -u) == 0 ]]; then
    apt-get install -y -qq nats-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
    server=/usr/sbin/nats-server
  fi
  [[ -x $server ]] || { log "nats-server is missing: skipping the NATS scenarios"; return 0; }
  (cd "$ROOT" && CARGO_TARGET_DIR=$BUILD/fanout cargo build --release -q --example nats_bench)
  local helper=$BUILD/fanout/release/examples/nats_bench pids=()
  rm -rf "$OUT/nats"
  taskset -c 1 "$server" -a 127.0.0.1 -p 4222 -js -sd "$OUT/nats" >"$OUT/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do "$helper" stream BENCH_NATS1 bench.nats1 2>/dev/null && break; sleep 0.1; done
  if wanted nats1; then
    rig nats1 /nats1 "" "$F"
    local line sent refused stored
    line=$(grep '^RESULT label=nats1 ' "$RESULTS" | tail -1)
    sent=$(grep -o ' sent=[0-9]*' <<<"$line" | cut -d= -f2)
    refused=$(grep -o ' bad_status=[0-9]*' <<<"$line" | cut -d= -f2)
    stored=$("$helper" count BENCH_NATS1)
    # Every 202 must be in the stream once: accepted = sent - refused (503s of full lanes).
    echo "NATS label=nats1 round=$round accepted=$(( ${sent:-0} - ${refused:-0} )) stored=$stored" | tee -a "$RESULTS"
  fi
  if wanted nats-balance; then
    taskset -c 1 "$helper" echo bench.echo >"$OUT/nats-echo.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q ready "$OUT/nats-echo.log" && break; sleep 0.1; done
    rig nats-balance /nats-balance "" "$F"
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

# ---- throughput scenarios ----------------------------------------------------------------
rig() { # label path targets sut [conns]
  local label=$1 path=$2 targets=$3 sut=$4 conns=${5:-64} args=()
  wanted "$label" || return 0
  [[ -n $targets ]] && args=(--targets "$targets")
  log "round $round/$ROUNDS: scenario $label"
  "$RIG/rig.sh" --sut "$sut" --port 8080 --path "$path" "${args[@]}" --pin --duration "$DURATION" \
    --conns "$conns" \
    --label "$label" --out "$OUT/$label-$round" 2>"$OUT/$label-$round.log" | tee -a "$RESULTS"
}
# The authenticated scenarios: rig.sh always runs the post.lua beside it, so they run it from
# a directory of links whose post.lua (benches/post-auth.lua) is the rig's plus one header.
# The body is the rig's 200-byte event, written to a file so that its signature is computed
# over exactly the bytes wrk sends; the secrets are load.yaml's defaults.
AUTH_RIG=$OUT/rig-auth BODY=$OUT/event.json
mkdir -p "$AUTH_RIG"
ln -sfn "$RIG/rig.sh" "$AUTH_RIG/rig.sh"; ln -sfn "$RIG/baseline" "$AUTH_RIG/baseline"
ln -sfn "$ROOT/benches/post-auth.lua" "$AUTH_RIG/post.lua"
printf '%s' '{"type":"page_view","user_id":"u-4f9c2a71","session_id":"s-8d1e5b3c0a7f",' \
  '"ts":1718000000123,"props":{"path":"/pricing","referrer":"newsletter",' \
  '"ua":"Mozilla/5.0 (X11; Linux x86_64)","n":42},"v":"1.0"}' >"$BODY"
HMAC_SIG=sha256=$(python3 -c 'import hashlib, hmac, sys
print(hmac.new(sys.argv[1].encode(), open(sys.argv[2], "rb").read(), hashlib.sha256).hexdigest())' \
  "${LOAD_HMAC_SECRET:-load-bench-hmac-secret}" "$BODY")
rig_auth() { # label path header: `rig` with the header, on a route whose targets are down
  wanted "$1" || return 0
  (export LOAD_RIG_POST=$RIG/post.lua LOAD_HEADER=$3 RIG_BODY_FILE=$BODY; RIG=$AUTH_RIG
   rig "$1" "$2" "" "$F")
}
# A drain longer than the rig's 5 s grace would get fanout killed mid-drain.
F="$FANOUT --workers 1 --drain-timeout 2s"
# The durable routes' data directory (load.yaml's server.data_dir), emptied before each of
# their runs.
export FANOUT_DATA=$OUT/data
D=$F
for round in $(seq "$ROUNDS"); do
  rig baseline /demo "" "$BASELINE --port 8080 --workers 1"
  rig down /down "" "$F"
  rig_auth auth-hmac /auth-hmac "X-Signature: $HMAC_SIG"
  rig_auth auth-bearer /auth-bearer "Authorization: Bearer ${LOAD_TOKEN:-load-bench-token}"
  for policy in always 10ms never; do
    rm -rf "$OUT/data"; rig "ddown-$policy" "/ddown-$policy" "" "$D"
  done
  rig reject2 /reject2 8101,8102 "$F"
  rig sign2 /sign2 8101,8102 "$F"
  rm -rf "$OUT/data"; rig disk2 /disk2 8101,8102 "$D"
  rm -rf "$OUT/data"; rig disk2-always /disk2-always 8101,8102 "$D"
  rig reject4 /reject4 8101,8102,8103,8104 "$F"
  rig batch2 /batch2 8101,8102 "$F"
  rig sign-batch2 /sign-batch2 8101,8102 "$F"
  rig h2x2 /h2x2 8101,8102 "$F"
  # Balance: fanout, nginx and HAProxy relaying each request to one of two sinks, saturated
  # (64 connections) and one request at a time (-c1: the latency each adds to a sink's own,
  # which `direct-c1` measures with wrk posting to a sink).
  for c in 64 1; do
    suffix=$([[ $c == 1 ]] && echo -c1 || true)
    rig "balance2$suffix" /balance2 8101,8102 "$F" "$c"
    rig "nginx-balance2$suffix" /balance2 8101,8102 "$ROOT/benches/proxies.sh nginx --port 8080 --dir $OUT/nginx" "$c"
    rig "haproxy-balance2$suffix" /balance2 8101,8102 "$ROOT/benches/proxies.sh haproxy --port 8080 --dir $OUT/haproxy" "$c"
  done
  rig direct-c1 /in "" "$SINK_BIN --ports 8080 --workers 1" 1
  if wanted nats1 || wanted nats-balance; then nats_scenarios; fi
done

# ---- memory: a million events held across 4 lanes ----------------------------------------
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if wanted memory; then
accepted() { curl -s --max-time 1 http://127.0.0.1:8080/metrics | awk '/^fanout_events_accepted_total\{route="memory"\}/ { print $2 }'; }
log "memory: 1,000,000 events of 200 bytes, 4 targets down"
$FANOUT --workers 1 --drain-timeout 0s >"$OUT/memory.log" 2>&1 &
PIDS+=($!); SUT=$!
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/healthz && break; sleep 0.1; done
timeout 120 wrk -t1 -c64 -d120s -s "$RIG/post.lua" http://127.0.0.1:8080/memory >"$OUT/memory-wrk.log" 2>&1 &
WRK=$!; PIDS+=($WRK)
for _ in $(seq 1200); do n=$(accepted); [[ ${n:-0} -ge 1000000 ]] && break; sleep 0.1; done
kill "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true
sleep 0.5
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SUT/status")
HELD=$(curl -s http://127.0.0.1:8080/metrics | awk '/^fanout_lane_depth\{route="memory"/ { s += $2 } END { print s }')
echo "MEMORY accepted=$(accepted) held_in_lanes=$HELD rss_mb=$((RSS_KB / 1024))" | tee -a "$RESULTS"
kill "$SUT"; wait "$SUT" 2>/dev/null || true
fi

# ---- backlog: a durable route holding millions of events for a dead target ------------------
if wanted backlog; then
BACKLOG=${BACKLOG:-10000000}
accepted_d() { curl -s --max-time 1 http://127.0.0.1:8080/metrics | awk '/^fanout_events_accepted_total\{route="ddown-never"\}/ { print $2 }'; }
log "backlog: $BACKLOG events of 200 bytes in a durable route (fsync never), targets down, at most 600 s"
rm -rf "$OUT/backlog-data"
$FANOUT --workers 1 --drain-timeout 0s --data-dir "$OUT/backlog-data" >"$OUT/backlog.log" 2>&1 &
PIDS+=($!); SUT=$!
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/healthz && break; sleep 0.1; done
timeout 600 wrk -t1 -c64 -d600s -s "$RIG/post.lua" http://127.0.0.1:8080/ddown-never >"$OUT/backlog-wrk.log" 2>&1 &
WRK=$!; PIDS+=($WRK)
RSS_AT_1M=""
for _ in $(seq 6000); do
  n=$(accepted_d); n=${n:-0}
  if [[ -z $RSS_AT_1M && $n -ge 1000000 ]]; then RSS_AT_1M=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SUT/status"); fi
  [[ $n -ge $BACKLOG ]] && break; sleep 0.1
done
kill "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true
sleep 0.5
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SUT/status")
N=$(accepted_d); N=${N:-0}; DISK=$(du -sb "$OUT/backlog-data/routes/ddown-never" | cut -f1)
echo "BACKLOG accepted=$N rss_mb_at_1m=$((${RSS_AT_1M:-0} / 1024)) rss_mb=$((RSS_KB / 1024)) disk_bytes_per_event=$((DISK / (N > 0 ? N : 1)))" | tee -a "$RESULTS"
kill "$SUT"; wait "$SUT" 2>/dev/null || true
rm -rf "$OUT/backlog-data"
fi

# ---- start-up: exec to the first 202 --------------------------------------------------------
if wanted startup; then
log "start-up: exec to first 202, 10 runs"
python3 - "$FANOUT" >>"$RESULTS" <<'PY'
import http.client, statistics, subprocess, sys, time
times = []
for _ in range(10):
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.argv[1], "--listen", "127.0.0.1:8080"], stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=1)
            c.request("POST", "/down", body=b"{}", headers={"content-type": "application/json"})
            if c.getresponse().status == 202:
                break
        except OSError:
            pass
    times.append((time.perf_counter() - t0) * 1000)
    proc.terminate(); proc.wait()
print(f"STARTUP first_202_ms_median={statistics.median(times):.1f} min={min(times):.1f} max={max(times):.1f}")
PY
tail -1 "$RESULTS" >&2
fi

# ---- a user's inner loop: routes.yaml edited, binary rebuilt ---------------------------------
if wanted rebuild; then
  log "rebuild: time from a routes file edit to a rebuilt --release binary, 3 edits"
  EDITED=$OUT/routes.yaml
  cp "$ROOT/benches/routes/load.yaml" "$EDITED"
  # The target directory of the measured build: dependencies are built, as on a user's machine.
  build() { (cd "$ROOT" && FANOUT_ROUTES=$EDITED CARGO_TARGET_DIR=$ROOT/target/load/fanout \
    cargo build --release -q --bin fanout); }
  build
  for edit in 1 2 3; do
    sed -i "s/concurrency: [0-9]*/concurrency: $((32 + edit))/" "$EDITED"
    t0=$(date +%s.%N); build; t1=$(date +%s.%N)
    echo "REBUILD edit=$edit seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" | tee -a "$RESULTS"
  done
fi

# ---- binary size ---------------------------------------------------------------------------
if wanted static; then
  log "static binary (+crt-static, release profile) with the default routes"
  HOST=$(rustc -vV | awk '/^host:/ { print $2 }')
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$ROOT/target/load/static \
    cargo build --release -q --bin fanout --target "$HOST")
  BIN=$ROOT/target/load/static/$HOST/release/fanout
  echo "BINARY static_stripped_bytes=$(stat -c %s "$BIN") mb=$(awk -v b="$(stat -c %s "$BIN")" 'BEGIN { printf "%.1f", b / 1048576 }') linkage=$(file -b "$BIN" | grep -o 'static[a-z-]*' | head -1)" | tee -a "$RESULTS"
fi

# ---- summary ---------------------------------------------------------------------------------
"$ROOT/benches/summarize.sh" "$RESULTS"
log "results in $RESULTS"
