#!/usr/bin/env bash
# The soak (nsqlookupd-bench soak, see perf/README.md, "soak") against a
# fresh lookupd: this project's release build, or any other binary.
#
#   perf/soak.sh [OUT_DIR [BENCH_ARGS...]]      (default OUT_DIR: perf/results/soak)
#
# Builds the release binaries (see perf/server.sh), raises the descriptor
# limit to the hard limit (5,000 nodes are 5,000 sockets on each side),
# starts the server pinned to core 0 on ephemeral ports, runs the soak
# pinned to core 1 with the server's PID, and writes soak$TAG.json, .svg
# (RSS and p99 over time), .txt (the report) and .log (the server's log)
# to OUT_DIR. The exit status is the bench's: 0 pass, 1 fail, 2 error.
#
# Environment:
#   NSQLOOKUPD   another lookupd binary (e.g. the original Go nsqlookupd,
#                NSQLOOKUPD=/path/to/nsqlookupd perf/soak.sh): it is started
#                with only --tcp-address= and --http-address= (both Go's
#                syntax and ours), plus SERVER_ARGS; a lookupd without
#                /metrics is sampled without gauges
#   SERVER_BIN   the same (perf/server.sh's name for it)
#   SERVER_ARGS  more options for the server (word-split)
#   BENCH_BIN    a prebuilt bench
#   DURATION     the soak's length (default 10m)
#   TAG          appended to the output file names
#   SERVER_CPU, BENCH_CPU   cores (default 0 and 1)
# Extra BENCH_ARGS after OUT_DIR go to `nsqlookupd-bench soak` as they are
# (e.g. --nodes 500 --sample-every 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/server.sh

out=${1:-perf/results/soak}
shift || true
mkdir -p "$out"

SERVER_BIN=${SERVER_BIN:-${NSQLOOKUPD:-}}
release_binaries
if [ -n "${SERVER_BIN:-}" ]; then
    [ -n "${BENCH_BIN:-}" ] || cargo build --release --bin nsqlookupd-bench
    label="$(basename "$server") ($("$server" --version 2>&1 | head -1 || true))"
else
    commit=$(git rev-parse --short HEAD)
    if ! git diff --quiet HEAD -- src; then commit="$commit+dirty"; fi
    label="nsqlookupd-rs $commit"
fi

# Every connection is a descriptor, in the server and in the bench.
ulimit -n "$(ulimit -Hn)"
echo "== descriptor limit $(ulimit -n)"

# Server and bench on cores of their own, where there are two.
pin() {
    if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
        echo taskset -c "$1"
    fi
}
# shellcheck disable=SC2207
server_pin=($(pin "${SERVER_CPU:-0}"))
# shellcheck disable=SC2207
bench_pin=($(pin "${BENCH_CPU:-1}"))

tag=${TAG:-}
log="$out/soak$tag.log"
# shellcheck disable=SC2086
start_server "$log" "${server_pin[@]}" "$server" ${SERVER_ARGS:-}
if [ -z "${server_tcp:-}" ] || [ -z "${server_http:-}" ]; then
    echo "the server did not start; its log ($log):" >&2
    tail -20 "$log" >&2
    kill "$server_pid" 2>/dev/null || true
    exit 2
fi
pid=$server_pid
echo "== soak: $label, pid $pid, tcp $server_tcp, http $server_http"
stop_server() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT

set +e
"${bench_pin[@]}" "$bench" soak \
    --tcp-address "$server_tcp" --http-address "$server_http" --server-pid "$pid" \
    --duration "${DURATION:-10m}" --label "$label" \
    --json "$out/soak$tag.json" --plot "$out/soak$tag.svg" "$@" | tee "$out/soak$tag.txt"
status=${PIPESTATUS[0]}
set -e
echo "== soak$tag: exit $status"
exit "$status"
