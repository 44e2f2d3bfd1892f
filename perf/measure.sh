#!/usr/bin/env bash
# Measures this project's nsqlookupd at the three presets, each followed by
# the ceiling server on the same core, as in the README's results table.
#
#   perf/measure.sh [OUT_DIR] [PRESET...]        (default: perf/results small medium large)
#
# Server (and ceiling server) pinned to core 0, load generator to core 1.
# A fresh server is started for every preset. Extra bench options can be
# passed in BENCH_ARGS (e.g. BENCH_ARGS="--duration 20s"). SERVER_BIN picks
# a prebuilt server (e.g. one built from a clean `git archive HEAD`, so that
# uncommitted work does not end up in the figures); SERVER_COMMIT labels it;
# BENCH_BIN picks a prebuilt bench. NICE (e.g. -10, needs root) runs server
# and bench at that priority, so that other work on a shared machine
# disturbs the figures less (the report still shows how busy the machine was);
# RT (e.g. 10, needs root) runs them SCHED_FIFO at that priority instead, which
# keeps other processes off their cores entirely while they have work.
# SERVER_RT (e.g. 10) runs only the server SCHED_FIFO (not the bench, whose
# open-loop pacer keeps its core busy and would be throttled, nor the
# ceiling server, which the bench starts): no normal-priority thread of
# the machine (kdamond, builds) can then preempt the server.
# TAG is appended to the output file names (PRESET$TAG.json), and CEILING=0
# leaves out the ceiling run (perf/targets.sh uses both).
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh

out=${1:-perf/results}
shift || true
presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(small medium large)
mkdir -p "$out"

bench=${BENCH_BIN:-target/release/nsqlookupd-bench}
if [ -n "${SERVER_BIN:-}" ]; then
    [ -n "${BENCH_BIN:-}" ] || cargo build --release --bin nsqlookupd-bench
    server=$SERVER_BIN
    commit=${SERVER_COMMIT:-unknown}
else
    cargo build --release --bin nsqlookupd --bin nsqlookupd-bench
    server=target/release/nsqlookupd
    commit=$(git rev-parse --short HEAD)
    if ! git diff --quiet HEAD -- src; then commit="$commit+dirty"; fi
fi

prio=()
[ -n "${NICE:-}" ] && prio=(nice -n "$NICE")
[ -n "${RT:-}" ] && prio=(chrt -f "$RT")
sprio=("${prio[@]}")
[ -n "${SERVER_RT:-}" ] && sprio=(chrt -f "$SERVER_RT")

tag=${TAG:-}
ceiling=(--ceiling --ceiling-cpus 0)
[ "${CEILING:-1}" = 0 ] && ceiling=()

for preset in "${presets[@]}"; do
    log=$(mktemp)
    start_server "$log" "${sprio[@]}" taskset -c 0 "$server"
    pid=$server_pid tcp=$server_tcp http=$server_http
    echo "== $preset$tag: server pid $pid tcp $tcp http $http (commit $commit)"
    set +e
    # shellcheck disable=SC2086
    "${prio[@]}" taskset -c 1 "$bench" run --preset "$preset" \
        --tcp-address "$tcp" --http-address "$http" --server-pid "$pid" \
        --duration 15s "${ceiling[@]}" --label "nsqlookupd-rs $commit" \
        --json "$out/$preset$tag.json" --plot "$out/$preset$tag.svg" ${BENCH_ARGS:-} | tee "$out/$preset$tag.txt"
    status=${PIPESTATUS[0]}
    set -e
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    echo "== $preset$tag: exit $status"
done
