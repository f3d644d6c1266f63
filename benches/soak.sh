#!/usr/bin/env bash
# benches/soak.sh - the crash loop of tests/durable_crash_loop.rs, longer: fanout SIGKILLed
# KILLS times (default 200) at random moments while 8 keep-alive clients post to a durable
# route, one target steady and one flapping, segments rolling. Prints the kills, the events
# answered 202, what each target received again against the promised bound, and the time;
# fails if an acknowledged event is missing or a body differs. Everything on 127.0.0.1; it
# stops by itself (about 1 s per kill, plus the final delivery).
#
#   benches/soak.sh [KILLS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FANOUT_SOAK_KILLS=${1:-200} cargo test --test durable_crash_loop \
  crash_loop_delivers_every_acknowledged_event_and_repeats_little -- --nocapture
