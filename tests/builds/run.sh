#!/usr/bin/env bash
# Build and run the storm (tests/builds/storm) the ways users ship programs.
# Each run self-checks and has its own watchdog; any failure fails CI.
set -euo pipefail
cd "$(dirname "$0")/storm"
secs="${KVANT_STRESS_SECS:-2}"
# Rust's defaults: no frame pointers (the safe-point walk uses .eh_frame).
unset RUSTFLAGS
run() { # profile features expected-mode
    local profile=$1 features=$2 expect=$3
    echo "== storm: profile $profile, features [${features}], expecting $expect"
    cargo build -q --profile "$profile" ${features:+--features "$features"}
    ./target/"$profile"/kvant-storm "$expect" "$secs" > /dev/null 2> storm.err || { tail -20 storm.err; exit 1; }
    grep "kvant-storm:" storm.err || true
}
run release "" cooperative
run lines "" preemptive
run lto "" preemptive
run lto mimalloc preemptive
KVANT_STORM_CPU_CLOCK=1 run lto "" preemptive
run lto-bare "" cooperative
run stripped "" cooperative
echo "== storm: all builds passed"

# Programs as users write them (tracing spans, rand, rayon and tokio inside
# tasks, panics and aborts whose destructors sleep and lock, println of a
# slow Debug, parking_lot and once_cell, a shared regex, dashmap), each on
# 1 and 2 workers at 50 µs, against sequential runs.
cd ../scenarios
scenario() { # profile expected-mode [filter]
    local profile=$1 expect=$2 filter=${3:-}
    echo "== scenarios: profile $profile, expecting $expect ${filter:+(filter $filter)}"
    cargo build -q --profile "$profile"
    ./target/"$profile"/kvant-scenarios "$expect" $filter > /dev/null 2> scenarios.err || { tail -30 scenarios.err; exit 1; }
    grep "kvant-scenarios:" scenarios.err || true
}
scenario release cooperative
scenario lines preemptive
# Fat LTO runs all but the contextual-parents tracing scenario (the one with
# explicit parents runs). Spans entered across preemptible code nest across
# tasks (a new span's contextual parent is whatever span is
# current on the thread, another task's), so the parent chain grows with the
# run, and tracing-subscriber closes it recursively: under fat LTO its frames
# overflow a 256 KiB task stack (it passes cooperatively in 32 KiB). That is
# tracing's per-thread current span, documented in docs/safety.md ("Spans,
# thread-locals and locks the thread owns"), not a kvant fault: kvant never
# preempts inside the subscriber.
scenario lto preemptive -contextual
echo "== scenarios: all builds passed"
